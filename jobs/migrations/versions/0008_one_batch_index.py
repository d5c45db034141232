"""one index for a batch's jobs by state: ``ix_jobs_batch_pending`` (batch, state, provider, id)
answers every lookup ``ix_jobs_batch_state`` (batch, state) did, and a job's every move wrote both

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 04:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_batch_state")


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index("ix_jobs_batch_state", ["batch_id", "state"], unique=False)
