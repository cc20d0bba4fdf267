"""Shared fixtures: the store on a real SQLite file, and on PostgreSQL when configured."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from digest.config import Settings, load_settings
from digest.store import Store

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
POSTGRES_URL = os.environ.get("DIGEST_TEST_POSTGRES_URL")

pytest_plugins = ["tests.fixtures_smtp"] if (ROOT / "tests" / "fixtures_smtp.py").exists() else []


def _backends() -> list[str]:
    return ["sqlite", "postgresql"] if POSTGRES_URL else ["sqlite"]


@pytest.fixture(params=_backends())
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database URL: a new SQLite file, or a new schema in the test PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'digest.db'}"
        return
    with postgres_schema_url() as url:
        yield url


@contextmanager
def postgres_schema_url() -> Iterator[str]:
    """The URL of a new schema in the test PostgreSQL, dropped afterwards."""
    with named_postgres_schema() as (_name, url):
        yield url


@contextmanager
def named_postgres_schema() -> Iterator[tuple[str, str]]:
    """A new schema in the test PostgreSQL, dropped afterwards: its name, and a URL whose
    search_path is it."""
    assert POSTGRES_URL
    schema = f"digest_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield schema, f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


#: Keys the suppression list's hashes in tests (the configuration's secret_key in use).
TEST_SECRET_KEY = "test-secret-key-0123456789"


def newsletter_table(newsletter_id: str = "wochenueberblick", **overrides: Any) -> dict[str, Any]:
    """A small ``[[newsletters]]`` table (as parsed TOML): one category, no sources, no
    segments; ``overrides`` added or replaced."""
    return {
        "id": newsletter_id,
        "name": "Kommune Digital",
        "sender": "Kommune Digital <news@example.org>",
        "impressum": {
            "publisher": "Verlag",
            "address": "Straße 1, 10115 Berlin",
            "contact": "redaktion@example.org",
            "responsible": "E. Mustermann",
        },
        "categories": [{"key": "politik", "title": "Politik"}],
        "sources": [],
        "segments": [],
        **overrides,
    }


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    opened = Store.open(store_url, secret_key=TEST_SECRET_KEY)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def demo_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The shipped config.toml, with its store and outbox moved into tmp_path."""
    for var in list(os.environ):
        if var.startswith("DIGEST_") and not var.startswith("DIGEST_TEST_"):
            monkeypatch.delenv(var)
    settings = load_settings(
        ROOT / "config.toml",
        environ={
            "DIGEST_STORE_URL": f"sqlite:///{tmp_path / 'digest.db'}",
        },
    )
    from dataclasses import replace

    return replace(settings, outbox=tmp_path / "outbox")


@pytest.fixture(autouse=True)
def _log_record_factory_restored() -> Iterator[None]:
    """A test that runs the CLI in-process installs its log redaction (a record factory
    for the whole process); later tests must see plain records again."""
    factory = logging.getLogRecordFactory()
    yield
    logging.setLogRecordFactory(factory)
