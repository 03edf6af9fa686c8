"""call documents apart from call state, claim payloads made at build time, an ordered
index for claims, outcome-signing secrets

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 15:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "call_documents",
        sa.Column("call_id", sa.String(length=40), nullable=False),
        sa.Column("script", sa.JSON(), nullable=False),
        sa.Column("record", sa.JSON(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["call_id"], ["calls.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("call_id"),
    )
    op.execute(
        "INSERT INTO call_documents (call_id, script, record, payload) "
        "SELECT id, script, record, NULL FROM calls"
    )
    with op.batch_alter_table("calls", schema=None) as batch_op:
        batch_op.drop_column("script")
        batch_op.drop_column("record")
        batch_op.create_index("ix_calls_pick", ["campaign_id", "status", "id"], unique=False)
    op.create_table(
        "signing_secrets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("api_key_id", sa.Integer(), nullable=False),
        sa.Column("salt", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["api_key_id"], ["api_keys.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("signing_secrets", schema=None) as batch_op:
        batch_op.create_index("ix_signing_secrets_key", ["api_key_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("signing_secrets", schema=None) as batch_op:
        batch_op.drop_index("ix_signing_secrets_key")
    op.drop_table("signing_secrets")
    with op.batch_alter_table("calls", schema=None) as batch_op:
        batch_op.drop_index("ix_calls_pick")
        batch_op.add_column(sa.Column("script", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("record", sa.JSON(), nullable=True))
    op.execute(
        "UPDATE calls SET script = (SELECT script FROM call_documents d WHERE d.call_id = calls.id),"
        " record = (SELECT record FROM call_documents d WHERE d.call_id = calls.id)"
    )
    op.drop_table("call_documents")
