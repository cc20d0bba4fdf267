"""The store: the only code that speaks SQL.

SQLAlchemy 2 Core over a SQLite file by default or PostgreSQL by URL. The schema is
created and upgraded by Alembic migrations when a :class:`Store` is opened.
"""

from digest.store.store import DeliveryRow, IssueRecord, Store, resolve_store_url

__all__ = ["Store", "IssueRecord", "DeliveryRow", "resolve_store_url"]
