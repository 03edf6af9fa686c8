"""The bank's do-not-call list of numbers (COMPLIANCE.md CR-02): numbers that must not be
called whoever they are on file for, loaded by an admin (the bank's own list, a regulator's,
an industry's: one entry a number and source, so that no list weakens another's); the
claim's gate reads it with the customers' suppressions.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 22:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dnc_numbers",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("phone_key", sa.String(32), nullable=False),
        sa.Column("phone", sa.String(64), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("reason", sa.String(200), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lifted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("added_by", sa.Integer, nullable=True),
        sa.Column("lifted_by", sa.Integer, nullable=True),
        sa.UniqueConstraint("phone_key", "source", name="uq_dnc_numbers_number_source"),
    )


def downgrade() -> None:
    op.drop_table("dnc_numbers")
