"""What the tests of the jobs the web app and the CLI queue share: a PostgreSQL schema of
their own with digest's tables and Procrastinate's queue, the settings of a cluster on
it, and the jobs in its queue."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import text

from digest.config import Settings
from digest.config.cluster import ClusterSettings
from digest.config.store import StoreSettings
from digest.store import Store
from tests.cluster._support import postgres_schema


@pytest.fixture
def cluster_settings(demo_settings: Settings) -> Iterator[Settings]:
    """The demo settings as a cluster's: ``[cluster] queue = "procrastinate"`` on a new
    schema of the test PostgreSQL that holds digest's tables and the queue's."""
    with postgres_schema(secret_key=demo_settings.secret_key) as url:
        yield replace(
            demo_settings,
            store=StoreSettings(url=url),
            cluster=ClusterSettings(queue="procrastinate"),
        )


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
