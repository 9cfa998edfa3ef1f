"""gradient diagnostics

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_diagnostics",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("layers", sa.JSON(), nullable=False),
        sa.Column("flags", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_job_diagnostics_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_job_diagnostics")),
        sa.UniqueConstraint("job_id", "epoch", name=op.f("uq_job_diagnostics_job_id")),
    )
    with op.batch_alter_table("job_diagnostics", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_job_diagnostics_job_id"), ["job_id"], unique=False)

    with op.batch_alter_table("jobs", schema=None) as batch_op:
        # existing jobs get an empty list
        batch_op.add_column(sa.Column("warnings", sa.JSON(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("warnings")

    with op.batch_alter_table("job_diagnostics", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_job_diagnostics_job_id"))

    op.drop_table("job_diagnostics")
