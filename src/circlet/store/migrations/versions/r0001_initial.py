"""Initial records schema: projects, pipelines, workflows, jobs, steps, output,
test cases, artifacts.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels = None
depends_on = None

AutoId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create every table and index."""
    op.create_table(
        "projects",
        sa.Column("slug", sa.String(255), primary_key=True),
        sa.Column("pipeline_counter", sa.Integer, nullable=False),
        sa.Column("build_counter", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "pipelines",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("project", sa.String(255), nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("branch", sa.String(255), nullable=True),
        sa.Column("revision", sa.String(64), nullable=True),
        sa.Column("trigger", sa.String(32), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float, nullable=True),
        sa.Column("stopped_at", sa.Float, nullable=True),
        sa.Column("config_source", sa.Text, nullable=True),
    )
    op.create_index("ix_pipelines_project_number", "pipelines", ["project", "number"])
    op.create_index("ix_pipelines_created_at", "pipelines", ["created_at"])
    op.create_table(
        "workflows",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("pipeline_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float, nullable=True),
        sa.Column("stopped_at", sa.Float, nullable=True),
        sa.Column("jobs", sa.JSON, nullable=False),
    )
    op.create_index("ix_workflows_pipeline_id", "workflows", ["pipeline_id"])
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("workflow_id", sa.String(64), nullable=False),
        sa.Column("project", sa.String(255), nullable=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("build_num", sa.Integer, nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("node_index", sa.Integer, nullable=False),
        sa.Column("node_total", sa.Integer, nullable=False),
        sa.Column("executor", sa.String(255), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float, nullable=True),
        sa.Column("stopped_at", sa.Float, nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
    )
    op.create_index("ix_jobs_workflow_id", "jobs", ["workflow_id"])
    op.create_index("ix_jobs_project_build_num", "jobs", ["project", "build_num"])
    op.create_index("ix_jobs_project_name", "jobs", ["project", "name"])
    op.create_table(
        "steps",
        sa.Column("job_id", sa.String(64), primary_key=True),
        sa.Column("step_index", sa.Integer, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("step_type", sa.String(32), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("exit_code", sa.Integer, nullable=True),
        sa.Column("started_at", sa.Float, nullable=True),
        sa.Column("stopped_at", sa.Float, nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
    )
    op.create_table(
        "step_output",
        sa.Column("id", AutoId, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(64), nullable=False),
        sa.Column("step_index", sa.Integer, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("at", sa.Float, nullable=False),
    )
    op.create_index("ix_step_output_job_step", "step_output", ["job_id", "step_index", "id"])
    op.create_table(
        "test_cases",
        sa.Column("id", AutoId, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(64), nullable=False),
        sa.Column("classname", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("file", sa.Text, nullable=False),
        sa.Column("result", sa.String(16), nullable=False),
        sa.Column("time", sa.Float, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
    )
    op.create_index("ix_test_cases_job_id", "test_cases", ["job_id"])
    op.create_table(
        "artifacts",
        sa.Column("id", AutoId, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(64), nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("digest", sa.String(128), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("node_index", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_artifacts_job_id", "artifacts", ["job_id"])


def downgrade() -> None:
    """Drop everything this revision created."""
    for table in (
        "artifacts",
        "test_cases",
        "step_output",
        "steps",
        "jobs",
        "workflows",
        "pipelines",
        "projects",
    ):
        op.drop_table(table)
