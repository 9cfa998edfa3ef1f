"""training engine per job; workers and their devices

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("engine", sa.String(length=20), nullable=True))
    op.create_table(
        "workers",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("node", sa.String(length=200), nullable=False),
        sa.Column("backend", sa.String(length=20), nullable=False),
        sa.Column("devices", sa.JSON(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_workers")),
        sa.UniqueConstraint("node", name=op.f("uq_workers_node")),
    )


def downgrade() -> None:
    op.drop_table("workers")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("engine")
