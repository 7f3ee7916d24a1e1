"""experiments: variants × seeds of a base recipe

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
        "experiments",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=False, index=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.add_column(sa.Column("experiment_id", sa.String(32), nullable=True))
        batch_op.add_column(sa.Column("variant", sa.String(200), nullable=True))
        batch_op.create_index("ix_jobs_experiment_id", ["experiment_id"])


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_index("ix_jobs_experiment_id")
        batch_op.drop_column("variant")
        batch_op.drop_column("experiment_id")
    op.drop_table("experiments")
