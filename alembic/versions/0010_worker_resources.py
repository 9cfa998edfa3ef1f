"""workers record their accelerator, device count and the queues they consume

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("accelerator", sa.String(length=10), nullable=True))
        batch.add_column(sa.Column("device_count", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("queues", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("queues")
        batch.drop_column("device_count")
        batch.drop_column("accelerator")
