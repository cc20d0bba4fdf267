"""A benchmark's store on PostgreSQL lives in a schema of its own, created for the run and
dropped after it, so that runs never meet each other's rows or the tests'."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, text


def new_schema(base: str) -> tuple[str, Callable[[], None]]:
    """The URL of a new schema in the PostgreSQL database at ``base``, and what drops it."""
    schema = f"digest_bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in base else "?"

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()

    return f"{base}{separator}options=-csearch_path%3D{schema}", drop


@contextmanager
def own_schema(url: str) -> Iterator[str]:
    """``url`` itself unless it is PostgreSQL's; for PostgreSQL, the URL of a new schema,
    dropped after."""
    if not url.startswith("postgresql"):
        yield url
        return
    schema_url, drop = new_schema(url)
    try:
        yield schema_url
    finally:
        drop()
