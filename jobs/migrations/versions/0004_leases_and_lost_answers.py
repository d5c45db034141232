"""leases and lost answers: who holds a job and until when, what became of a lost submit

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 21:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("on_uncertain", sqlmodel.sql.sqltypes.AutoString(), nullable=False, server_default="fail")
        )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("holder", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.add_column(sa.Column("lease_until", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("sent_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("lost_answers", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("adopted", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.add_column(sa.Column("resubmits", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("rotations", sa.Integer(), nullable=False, server_default="0"))
        # One provider submission is one job's: two lost answers cannot adopt the same one.
        batch_op.create_index("uq_jobs_account_adopted", ["account", "adopted"], unique=True)
    with op.batch_alter_table("provider_tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("poll_errors", sa.Integer(), nullable=False, server_default="0"))
    op.create_table(
        "job_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("event", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("detail", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("job_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_job_events_job_id"), ["job_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("job_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_job_events_job_id"))
    op.drop_table("job_events")
    with op.batch_alter_table("provider_tasks", schema=None) as batch_op:
        batch_op.drop_column("poll_errors")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("uq_jobs_account_adopted")
        for column in ("rotations", "resubmits", "adopted", "lost_answers", "sent_at", "lease_until", "holder"):
            batch_op.drop_column(column)
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.drop_column("on_uncertain")
