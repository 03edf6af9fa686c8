"""PostgreSQL: the calls table analysed and vacuumed after 2 % of its rows change, not 10-20 %

A claim scans a campaign's ready calls in id order. With statistics taken when most calls were
ready (a campaign just built), the planner expects a ready call at every step and may walk the
calls already made, in primary key order, before it finds one: a claim's cost then grows with
the calls done until the next ANALYZE. Calls change state all the time (ready, leased, done),
so their statistics go stale fast; autovacuum's defaults wait for 10 % of the table (analyze)
and 20 % (vacuum, which also drops the done calls' old index entries). SQLite: nothing to do.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 17:40:00
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

SETTINGS = ("autovacuum_analyze_scale_factor = 0.02, autovacuum_analyze_threshold = 200, "
            "autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 200")  # fmt: skip


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE calls SET ({SETTINGS})")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "ALTER TABLE calls RESET (autovacuum_analyze_scale_factor, "
            "autovacuum_analyze_threshold, autovacuum_vacuum_scale_factor, "
            "autovacuum_vacuum_threshold)"
        )
