"""batch predictions

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "batch_predictions",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant", sa.String(length=100), nullable=False),
        sa.Column("model_id", sa.String(length=32), nullable=False),
        sa.Column("dataset_id", sa.String(length=32), nullable=False),
        sa.Column("mc_samples", sa.Integer(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=True),
        sa.Column("interval", sa.Float(), nullable=True),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("rows_done", sa.Integer(), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=True),
        sa.Column("results_key", sa.String(length=300), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["id"], ["jobs.id"], name=op.f("fk_batch_predictions_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_batch_predictions")),
        sa.UniqueConstraint("id", name=op.f("uq_batch_predictions_id")),
    )
    with op.batch_alter_table("batch_predictions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_batch_predictions_tenant"), ["tenant"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("batch_predictions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_batch_predictions_tenant"))

    op.drop_table("batch_predictions")
