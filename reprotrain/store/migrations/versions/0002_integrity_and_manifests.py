"""integrity errors, signed run manifests, worker keys

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 05:45:00
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("integrity_error", JSON, nullable=True))
        batch_op.add_column(sa.Column("manifest", JSON, nullable=True))
    op.create_table(
        "worker_keys",
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("public_key", sa.String(length=64), nullable=False),
        sa.Column("owner", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key_id"),
    )


def downgrade() -> None:
    op.drop_table("worker_keys")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("manifest")
        batch_op.drop_column("integrity_error")
