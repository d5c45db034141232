"""control: batches paused, canceled and capped in credits; what each job spent; accounts paused by hand

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08 09:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("budget", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("paused_reason", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.add_column(sa.Column("canceled", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("credits", sa.Integer(), nullable=True))
    op.create_table(
        "account_pauses",
        sa.Column("account", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("until", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("paused_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("account"),
    )


def downgrade() -> None:
    op.drop_table("account_pauses")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("credits")
    with op.batch_alter_table("batches", schema=None) as batch_op:
        for column in ("canceled", "paused_reason", "budget"):
            batch_op.drop_column(column)
