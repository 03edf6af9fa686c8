"""Phone numbers: the do-not-call list and the frequency caps count numbers, not only customers

A refusal puts the number on the do-not-call list (COMPLIANCE.md [C7], [C8]) and Hong Kong
caps unsolicited calls to the same number [HK1], but suppressions and attempts were kept by
customer id only: seven customers on file with one household number were all called within
minutes, and an opt-out said on that line stopped the calls to one of them. Customers now keep
their number's E.164 form (``phone_key``, :func:`scripts_engine.phones.phone_key`), and a
suppression or an attempt the number it was for. Existing rows are filled in here: customers
from their stored number; suppressions and attempts from their customer's number (the one on
file now: the number they were for was not recorded).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 21:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from scripts_engine.phones import phone_key

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_BATCH = 5_000


def upgrade() -> None:
    op.add_column("customers", sa.Column("phone_key", sa.String(32), nullable=True))
    op.add_column("blocks", sa.Column("phone_key", sa.String(32), nullable=True))
    op.add_column("attempts", sa.Column("phone_key", sa.String(32), nullable=True))
    bind = op.get_bind()
    customers = sa.table("customers", sa.column("customer_id", sa.String),
                         sa.column("phone", sa.String), sa.column("phone_key", sa.String))  # fmt: skip
    rows = bind.execute(
        sa.select(customers.c.customer_id, customers.c.phone).where(customers.c.phone.is_not(None))
    ).all()
    update = (
        sa.update(customers)
        .where(customers.c.customer_id == sa.bindparam("cid"))
        .values(phone_key=sa.bindparam("key"))
    )
    keyed = [{"cid": cid, "key": key} for cid, phone in rows if (key := phone_key(phone))]
    for start in range(0, len(keyed), _BATCH):
        bind.execute(update, keyed[start : start + _BATCH])
    for name in ("blocks", "attempts"):
        op.execute(
            f"UPDATE {name} SET phone_key = (SELECT c.phone_key FROM customers c "
            f"WHERE c.customer_id = {name}.customer_id)"
        )
    op.create_index("ix_customers_phone_key", "customers", ["phone_key"])
    op.create_index("ix_blocks_phone_key", "blocks", ["phone_key"])
    op.create_index("ix_attempts_phone_day", "attempts", ["phone_key", "local_day"])


def downgrade() -> None:
    op.drop_index("ix_attempts_phone_day", table_name="attempts")
    op.drop_index("ix_blocks_phone_key", table_name="blocks")
    op.drop_index("ix_customers_phone_key", table_name="customers")
    for name in ("attempts", "blocks", "customers"):
        op.drop_column(name, "phone_key")
