"""circlet: CircleCI pipelines, run anywhere."""

__version__ = "0.1.0"
