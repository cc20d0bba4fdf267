"""[store]: the database."""

from __future__ import annotations

from dataclasses import dataclass

from digest.config.declare import Setting, repr_without_passwords
from digest.core.redact import redact_url

__all__ = ["STORE", "StoreSettings"]


def _store_url_problem(value: str) -> str | None:
    # Parsed here as Store.open will, so a bad URL is a config error before anything
    # starts; messages show it with the password masked, or not at all when it does
    # not parse (then nothing tells which part is the password).
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    example = "e.g. 'sqlite:///digest.db' or 'postgresql+psycopg://user:password@host:5432/db'"
    try:
        url = make_url(value)
    except ArgumentError:
        return f"is not a database URL ({example})"
    except ValueError:  # int() of the port
        return f"has a port that is not a number: {redact_url(value)!r}"
    try:
        url.get_dialect()
    except ArgumentError:
        return (
            f"names no database driver SQLAlchemy knows: {url.drivername!r} "
            f"in {url.render_as_string(hide_password=True)!r} ({example})"
        )
    return None


S = Setting
STORE = [
    S(
        "url",
        str,
        "sqlite:///digest.db",
        "SQLAlchemy URL of the database: a SQLite file "
        "(relative paths are relative to the config file) or postgresql+psycopg://…",
        _store_url_problem,
    ),
]


@dataclass(frozen=True)
class StoreSettings:
    url: str

    __repr__ = repr_without_passwords
