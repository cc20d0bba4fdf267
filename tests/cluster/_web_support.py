"""What the tests of the jobs the web app and the CLI queue share: a PostgreSQL schema of
their own with digest's tables and Procrastinate's queue, the settings of a cluster on
it, and the jobs in its queue."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from digest.config import Settings
from digest.config.cluster import ClusterSettings
from digest.config.store import StoreSettings
from digest.store import Store

POSTGRES_URL = os.environ.get("DIGEST_TEST_POSTGRES_URL")


@pytest.fixture
def cluster_settings(demo_settings: Settings) -> Iterator[Settings]:
    """The demo settings as a cluster's: ``[cluster] queue = "procrastinate"`` on a new
    schema of the test PostgreSQL that holds digest's tables and the queue's."""
    if not POSTGRES_URL:
        pytest.skip("the cluster's jobs need PostgreSQL: set DIGEST_TEST_POSTGRES_URL")
    pytest.importorskip("procrastinate")
    from digest.cluster.app import make_app

    schema = f"digest_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in POSTGRES_URL else "?"
    url = f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"
    settings = replace(
        demo_settings,
        store=StoreSettings(url=url),
        cluster=ClusterSettings(queue="procrastinate"),
    )
    try:
        Store.open(url, secret_key=settings.secret_key).close()  # digest's migrations
        app = make_app(settings)
        app.open()
        try:
            app.schema_manager.apply_schema()  # the queue's tables, on the same schema
        finally:
            app.close()
        yield settings
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def cluster_store(cluster_settings: Settings) -> Iterator[Store]:
    """The cluster's store, opened as ``digest serve`` opens it."""
    store = Store.open(cluster_settings.store.url, secret_key=cluster_settings.secret_key)
    try:
        yield store
    finally:
        store.close()


def queued_jobs(store: Store) -> list[dict[str, Any]]:
    """Every job in the queue, oldest first: its task, arguments, locks, queue and status."""
    with store.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT task_name, args, lock, queueing_lock, queue_name, status "
                "FROM procrastinate_jobs ORDER BY id"
            )
        ).all()
    return [dict(row._mapping) for row in rows]
