"""A claim reads each kind of candidate as one index range: ``ix_calls_claim`` gains the id

A claim's scan of ready calls went through the campaign's ready calls in id order and tested
each one's ``not_before`` (a call put back by the gate until a later time, such as the next
calling window). With most calls put back, which is every call of a campaign outside its
calling window, each claim read all of them: 24 ms a claim at 20,000 such calls on SQLite,
with the write lock held. The same held for leased calls: every lease still out was read on
every claim, to find those expired. A call's ``not_before`` is now when it may be handed out
(again), a leased call's being its lease end (set here for the calls leased now), and the
claim reads each kind of candidate as one range of ``(campaign_id, status, not_before, id)``:
ready calls never put back (``not_before`` null, by id), those put back until a time now past,
and leases ended (by that time, then id). A call put back or leased until later is outside
them. PostgreSQL: the id in byte order ("C"), as in ``ix_calls_pick`` (0008).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 10:40:00
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("UPDATE calls SET not_before = lease_until WHERE status = 'leased'")
    op.drop_index("ix_calls_claim", table_name="calls")
    op.create_index("ix_calls_claim", "calls", ["campaign_id", "status", "not_before", "id"],
                    postgresql_ops={"id": 'COLLATE "C"'})  # fmt: skip


def downgrade() -> None:
    op.execute("UPDATE calls SET not_before = NULL WHERE status = 'leased'")
    op.drop_index("ix_calls_claim", table_name="calls")
    op.create_index("ix_calls_claim", "calls", ["campaign_id", "status", "not_before"])
