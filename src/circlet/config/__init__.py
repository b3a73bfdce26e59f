"""The config layer: ``.circleci/config.yml`` (2, 2.0, 2.1) → :class:`circlet.plan.Pipeline`.

Public API (everything else in this package is internal)::

    compile_file(path, *, values=None, params=None, orb_dirs=()) -> Pipeline
    compile_text(text, *, filename="config.yml", values=None, params=None, orb_dirs=()) -> Pipeline
    compile_with_problems(text, ...) -> (Pipeline | None, [Problem])
    compile_file_with_problems(path, ...) -> (Pipeline | None, [Problem])
    pipeline_values(branch=…, tag=…, …) -> {"pipeline.git.branch": …}
    render_processed_yaml(pipeline) -> str
"""

from circlet.config.compile import (
    compile_file,
    compile_file_with_problems,
    compile_text,
    compile_with_problems,
)
from circlet.config.errors import ORB_NOT_AVAILABLE, ConfigError, Problem
from circlet.config.render import render_processed_yaml
from circlet.config.values import pipeline_values

__all__ = [
    "ORB_NOT_AVAILABLE",
    "ConfigError",
    "Problem",
    "compile_file",
    "compile_file_with_problems",
    "compile_text",
    "compile_with_problems",
    "pipeline_values",
    "render_processed_yaml",
]
