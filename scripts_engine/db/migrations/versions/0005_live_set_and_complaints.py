"""calls.live_set (what a waiting call was rendered against) and outcomes.complaint

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


def downgrade() -> None:
    with op.batch_alter_table("outcomes") as batch:
        batch.drop_column("complaint")
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("live_set")
