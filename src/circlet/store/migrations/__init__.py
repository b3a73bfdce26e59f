"""Alembic migrations of the records database (run by ``RecordStore`` at open)."""
