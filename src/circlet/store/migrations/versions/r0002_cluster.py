"""The runner fleet's tables: runner tokens, dispatched job copies, their events.

Servers before this revision made them with ``create_all`` on first use: an
existing table is kept as it is.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the fleet's tables (and their indexes) that do not exist yet."""
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "cluster_runner_tokens" not in existing:
        op.create_table(
            "cluster_runner_tokens",
            sa.Column("id", sa.String(36), primary_key=True),
            sa.Column("name", sa.String(200), nullable=False, unique=True),
            sa.Column("token_hash", sa.String(64), nullable=False),
            sa.Column("resource_classes", sa.JSON, nullable=False),
            sa.Column("created_at", sa.Float, nullable=False),
            sa.Column("revoked_at", sa.Float, nullable=True),
            sa.Column("last_seen_at", sa.Float, nullable=True),
            sa.Column("last_host", sa.String(200), nullable=True),
        )
        op.create_index(
            "ix_cluster_runner_tokens_token_hash",
            "cluster_runner_tokens",
            ["token_hash"],
            unique=True,
        )
    if "cluster_jobs" not in existing:
        op.create_table(
            "cluster_jobs",
            sa.Column("job_id", sa.String(64), primary_key=True),
            sa.Column("resource_class", sa.String(200), nullable=False),
            sa.Column("queue", sa.String(260), nullable=False),
            sa.Column("name", sa.String(300), nullable=False),
            sa.Column("project", sa.String(300), nullable=False),
            sa.Column("workflow_id", sa.String(64), nullable=False),
            sa.Column("workspace_id", sa.String(64), nullable=True),
            sa.Column("request", sa.Text, nullable=False),
            sa.Column("secrets", sa.Text, nullable=True),
            sa.Column("state", sa.String(16), nullable=False),
            sa.Column("attempt", sa.Integer, nullable=False),
            sa.Column("max_attempts", sa.Integer, nullable=False),
            sa.Column("task_id", sa.String(100), nullable=False),
            sa.Column("runner_id", sa.String(36), nullable=True),
            sa.Column("runner_name", sa.String(200), nullable=True),
            sa.Column("runner_host", sa.String(200), nullable=True),
            sa.Column("lease_until", sa.Float, nullable=True),
            sa.Column("cancel", sa.Boolean, nullable=False),
            sa.Column("owner", sa.String(64), nullable=True),
            sa.Column("owner_seen", sa.Float, nullable=True),
            sa.Column("batches", sa.Integer, nullable=False),
            sa.Column("next_seq", sa.Integer, nullable=False),
            sa.Column("forwarded", sa.Integer, nullable=False),
            sa.Column("status", sa.String(32), nullable=True),
            sa.Column("reason", sa.Text, nullable=True),
            sa.Column("result", sa.Text, nullable=True),
            sa.Column("created_at", sa.Float, nullable=False),
            sa.Column("claimed_at", sa.Float, nullable=True),
            sa.Column("finished_at", sa.Float, nullable=True),
        )
        op.create_index("ix_cluster_jobs_resource_class", "cluster_jobs", ["resource_class"])
        op.create_index("ix_cluster_jobs_state", "cluster_jobs", ["state"])
    if "cluster_events" not in existing:
        op.create_table(
            "cluster_events",
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("job_id", sa.String(64), nullable=False),
            sa.Column("seq", sa.Integer, nullable=False),
            sa.Column("kind", sa.String(32), nullable=False),
            sa.Column("payload", sa.Text, nullable=False),
            sa.UniqueConstraint("job_id", "seq", name="uq_cluster_events_job_seq"),
        )
        op.create_index("ix_cluster_events_job_id", "cluster_events", ["job_id"])


def downgrade() -> None:
    """Drop the fleet's tables (queue state, not history)."""
    for table in ("cluster_events", "cluster_jobs", "cluster_runner_tokens"):
        op.drop_table(table)
