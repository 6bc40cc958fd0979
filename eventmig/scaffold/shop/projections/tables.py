"""The read-model tables of the shop, as SQLAlchemy tables."""

import sqlalchemy as sa

metadata = sa.MetaData()

order_summary_table = sa.Table(
    "order_summary",
    metadata,
    sa.Column("order_id", sa.Text, primary_key=True),
    sa.Column("customer_id", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("item_count", sa.BigInteger, nullable=False),  # units over all line items
    sa.Column("total_cents", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.Text, nullable=False),
)

customer_totals_table = sa.Table(
    "customer_totals",
    metadata,
    sa.Column("customer_id", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("email", sa.Text, nullable=False),
    sa.Column("orders", sa.BigInteger, nullable=False),
    sa.Column("shipped", sa.BigInteger, nullable=False),
    sa.Column("cancelled", sa.BigInteger, nullable=False),
    sa.Column("ordered_cents", sa.BigInteger, nullable=False),
    sa.Column("paid_cents", sa.BigInteger, nullable=False),
    sa.Column("last_order_at", sa.Text, nullable=False),
    sa.Index("customer_totals_by_paid", "paid_cents"),
)
