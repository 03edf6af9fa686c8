"""web workspace sessions ended by logging out, refused by every server process

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 18:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "web_session_revocations",
        sa.Column("nonce", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("nonce"),
    )
    op.create_index(
        "ix_web_session_revocations_expires_at", "web_session_revocations", ["expires_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_web_session_revocations_expires_at", table_name="web_session_revocations")
    op.drop_table("web_session_revocations")
