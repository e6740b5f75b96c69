"""runs table: tags and verdict kind as columns, and an index for newest-first paging

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 08:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("tags", sa.String(length=1200), nullable=True))
        batch_op.add_column(sa.Column("verdict_kind", sa.String(length=24), nullable=True))
        batch_op.create_index(batch_op.f("ix_jobs_verdict_kind"), ["verdict_kind"], unique=False)
        batch_op.create_index("ix_jobs_created_at_id", ["created_at", "id"], unique=False)
    # jobs stored before: their verdict kind from the stored verdict (tags did not exist)
    jobs = sa.table("jobs", sa.column("id", sa.String), sa.column("verdict", sa.JSON))
    conn = op.get_bind()
    rows = conn.execute(sa.select(jobs.c.id, jobs.c.verdict).where(jobs.c.verdict.is_not(None)))
    for job_id, verdict in rows.all():
        kind = (verdict or {}).get("verdict")
        if kind:
            conn.execute(sa.text("UPDATE jobs SET verdict_kind = :k WHERE id = :i"), {"k": kind, "i": job_id})


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_created_at_id")
        batch_op.drop_index(batch_op.f("ix_jobs_verdict_kind"))
        batch_op.drop_column("verdict_kind")
        batch_op.drop_column("tags")
