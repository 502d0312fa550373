"""Persistence: SQLAlchemy models, the async engine, repositories and migrations."""
