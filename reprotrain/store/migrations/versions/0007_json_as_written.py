"""PostgreSQL: the JSON columns are json, not jsonb, so what is stored reads back as it was written

jsonb normalises a document: a float without a fraction beyond 1e16 reads back as an int, -0.0 as
0.0, and an object's keys come back shortest first. A job's params and the order of a step's
tensors must come back as they were sent. Rows stored before this keep what jsonb made of them.
SQLite stores JSON as text already: nothing changes there.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 21:30:00
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

COLUMNS = {
    "jobs": ("spec", "error", "metrics", "result", "verdict", "integrity_error", "manifest", "checkpoint"),
    "workers": ("queues", "facts"),
}


def _retype(to: sa.types.TypeEngine, cast: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, columns in COLUMNS.items():
        for column in columns:
            op.alter_column(table, column, type_=to, postgresql_using=f"{column}::{cast}")


def upgrade() -> None:
    _retype(sa.JSON(), "json")


def downgrade() -> None:
    _retype(postgresql.JSONB(astext_type=sa.Text()), "jsonb")
