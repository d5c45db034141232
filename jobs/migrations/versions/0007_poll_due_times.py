"""poll due times: when each provider task's next poll is due by its schedule, and when one last
found it running, so a finished task's completion time is learned from what its polls prove

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-09 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("provider_tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("poll_due_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("last_polled_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("provider_tasks", schema=None) as batch_op:
        for column in ("last_polled_at", "poll_due_at"):
            batch_op.drop_column(column)
