"""The activity tables: fusions, and each request's model calls.

Revision ID: 0001
Revises:
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Time = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "fusions",
        sa.Column("request_id", sa.String(128), primary_key=True),
        sa.Column("submitted_at", Time, nullable=False),
        sa.Column("completed_at", Time),
        sa.Column("recorded_at", Time, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("key_name", sa.String(128)),
        sa.Column("preset", sa.String(128)),
        sa.Column("strategy", sa.String(32)),
        sa.Column("question", sa.Text, nullable=False),
        sa.Column("request", sa.JSON),
        sa.Column("result", sa.JSON),
        sa.Column("answer", sa.Text),
        sa.Column("error", sa.Text),
        sa.Column("failure_reason", sa.String(64)),
        sa.Column("cost_nanousd", sa.BigInteger, nullable=False),
        sa.Column("input_tokens", sa.Integer, nullable=False),
        sa.Column("output_tokens", sa.Integer, nullable=False),
        sa.Column("total_ms", sa.Float),
        sa.Column("result_topic", sa.String(255)),
    )
    for column in ("submitted_at", "status", "key_name", "preset"):
        op.create_index(f"ix_fusions_{column}", "fusions", [column])
    op.create_table(
        "model_calls",
        sa.Column(
            "request_id",
            sa.String(128),
            sa.ForeignKey("fusions.request_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("position", sa.Integer, primary_key=True),
        sa.Column("role", sa.String(8), nullable=False),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("input_tokens", sa.Integer, nullable=False),
        sa.Column("output_tokens", sa.Integer, nullable=False),
        sa.Column("cost_nanousd", sa.BigInteger, nullable=False),
        sa.Column("latency_ms", sa.Float),
        sa.Column("text", sa.Text),
        sa.Column("error", sa.Text),
        sa.Column("submitted_at", Time, nullable=False),
    )
    op.create_index("ix_model_calls_model", "model_calls", ["model"])
    op.create_index("ix_model_calls_model_time", "model_calls", ["model", "submitted_at"])


def downgrade() -> None:
    op.drop_table("model_calls")
    op.drop_table("fusions")
