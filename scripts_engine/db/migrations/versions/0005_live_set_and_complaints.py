"""calls.live_set (what a waiting call was rendered against), outcomes.complaint, and the
review queue's index in listing order

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 18:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # calls built before this revision have no live set: the refresh judges them by their
    # record's template versions
    op.add_column("calls", sa.Column("live_set", sa.String(length=16), nullable=True))
    op.add_column(
        "outcomes",
        sa.Column("complaint", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    # a page of a campaign's queue (newest first, after a cursor) is an index range scan, not
    # a sort of the whole queue
    op.drop_index("ix_review_items_campaign", table_name="review_items")
    op.create_index("ix_review_items_campaign", "review_items", ["campaign_id", "status", "id"])
    op.create_index("ix_review_items_campaign_id", "review_items", ["campaign_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_review_items_campaign_id", table_name="review_items")
    op.drop_index("ix_review_items_campaign", table_name="review_items")
    op.create_index("ix_review_items_campaign", "review_items", ["campaign_id", "status"])
    with op.batch_alter_table("outcomes") as batch:
        batch.drop_column("complaint")
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("live_set")
