"""SQLite and PostgreSQL through SQLAlchemy: the events tables, eventmig's state tables and read models."""
