"""idempotency keys unique per (tenant, key) in the schema, stored without the tenant prefix

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_constraint("uq_jobs_idempotency_key", type_="unique")
    # keys were stored as "tenant:key" (tenant names hold no ":"): keep the key alone
    op.execute(
        "UPDATE jobs SET idempotency_key = substr(idempotency_key, length(tenant) + 2) "
        "WHERE idempotency_key LIKE tenant || ':%'"
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.alter_column(
            "idempotency_key",
            existing_type=sa.String(length=320),
            type_=sa.String(length=200),
            existing_nullable=True,
        )
        batch_op.create_unique_constraint(
            "uq_jobs_tenant_idempotency_key", ["tenant", "idempotency_key"]
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_constraint("uq_jobs_tenant_idempotency_key", type_="unique")
        batch_op.alter_column(
            "idempotency_key",
            existing_type=sa.String(length=200),
            type_=sa.String(length=320),
            existing_nullable=True,
        )
    op.execute(
        "UPDATE jobs SET idempotency_key = tenant || ':' || idempotency_key "
        "WHERE idempotency_key IS NOT NULL"
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_unique_constraint("uq_jobs_idempotency_key", ["idempotency_key"])
