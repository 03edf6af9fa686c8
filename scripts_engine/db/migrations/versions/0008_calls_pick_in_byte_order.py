"""PostgreSQL: the claim's index keeps the call ids in byte order ("C"), out of the primary key's

A claim scans a campaign's ready calls in id order (``ix_calls_pick``: campaign, status, id).
The primary key gives the same order, and with statistics taken when most calls were ready (a
campaign just built) the planner sometimes walked it instead, filtering out every call already
done: a claim's cost then grew with the calls made until the next ANALYZE (0.95 ms and 2,000
buffers a claim at 2,000 done calls, against 0.06 ms and a handful through this index). Fresher
statistics (0007) made it rarer, not impossible. The claim now orders by ``id COLLATE "C"``,
an order only this index gives, so no statistics can make the primary key's walk a candidate.
(Byte order is also Python's string order, in which the claim sorts its candidates.)
SQLite: nothing to do (its index is unchanged).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 19:30:00
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_calls_pick", table_name="calls")
        op.create_index("ix_calls_pick", "calls", ["campaign_id", "status", "id"],
                        postgresql_ops={"id": 'COLLATE "C"'})  # fmt: skip


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_calls_pick", table_name="calls")
        op.create_index("ix_calls_pick", "calls", ["campaign_id", "status", "id"])
