"""model registry: names, versions, tags, aliases, class names; retention of job artifacts

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(
            sa.Column("artifacts_pruned_at", sa.DateTime(timezone=True), nullable=True)
        )
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("name", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("version", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("tags", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("class_names", sa.JSON(), nullable=True))
    _number_existing_models()
    with op.batch_alter_table("models") as batch:
        batch.alter_column("name", existing_type=sa.String(length=200), nullable=False)
        batch.alter_column("version", existing_type=sa.Integer(), nullable=False)
        batch.alter_column("tags", existing_type=sa.JSON(), nullable=False)
        batch.create_index(batch.f("ix_models_name"), ["name"], unique=False)
        batch.create_unique_constraint(batch.f("uq_models_tenant"), ["tenant", "name", "version"])
    op.create_table(
        "model_aliases",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant", sa.String(length=100), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("alias", sa.String(length=64), nullable=False),
        sa.Column("model_id", sa.String(length=32), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["models.id"],
            name=op.f("fk_model_aliases_model_id_models"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_model_aliases")),
        sa.UniqueConstraint("tenant", "name", "alias", name=op.f("uq_model_aliases_tenant")),
    )
    op.create_index(op.f("ix_model_aliases_model_id"), "model_aliases", ["model_id"], unique=False)


def _number_existing_models() -> None:
    """Models made before the registry take their job's name and versions in creation order."""
    bind = op.get_bind()
    rows = bind.execute(
        sa.text(
            "SELECT m.seq, m.tenant, j.name FROM models m LEFT JOIN jobs j ON j.id = m.job_id "
            "ORDER BY m.seq"
        )
    ).all()
    versions: dict[tuple[str, str], int] = {}
    for seq, tenant, job_name in rows:
        name = job_name or "model"
        versions[(tenant, name)] = versions.get((tenant, name), 0) + 1
        bind.execute(
            sa.text("UPDATE models SET name = :n, version = :v, tags = :t WHERE seq = :s"),
            {"n": name, "v": versions[(tenant, name)], "t": "{}", "s": seq},
        )


def downgrade() -> None:
    op.drop_index(op.f("ix_model_aliases_model_id"), table_name="model_aliases")
    op.drop_table("model_aliases")
    with op.batch_alter_table("models") as batch:
        batch.drop_constraint(batch.f("uq_models_tenant"), type_="unique")
        batch.drop_index(batch.f("ix_models_name"))
        batch.drop_column("class_names")
        batch.drop_column("tags")
        batch.drop_column("version")
        batch.drop_column("name")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("artifacts_pruned_at")
