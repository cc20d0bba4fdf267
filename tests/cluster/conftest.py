"""The cluster's fixtures: a PostgreSQL schema of its own per test, the store migrated
and Procrastinate's queue schema applied in it.

Cluster tests need PostgreSQL (DIGEST_TEST_POSTGRES_URL) and the procrastinate package;
without either they are skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from digest.config import Settings
from digest.config.load import parse_settings
from digest.store import Store
from tests.conftest import POSTGRES_URL, TEST_SECRET_KEY, postgres_schema_url
from tests.conftest import newsletter_table as small_newsletter_table


def newsletter_table(newsletter_id: str = "wochenueberblick", **overrides: Any) -> dict[str, Any]:
    """A newsletter's settings table: no sources, no segments, collecting off."""
    return small_newsletter_table(
        newsletter_id, **{"timezone": "Europe/Berlin", "collect_every_minutes": 0, **overrides}
    )


def cluster_table(store_url: str, *newsletters: dict[str, Any], **top: Any) -> dict[str, Any]:
    """A whole configuration (as parsed TOML) of a cluster on ``store_url``."""
    return {
        "secret_key": TEST_SECRET_KEY,
        "store": {"url": store_url},
        "cluster": {"queue": "procrastinate"},
        "newsletters": list(newsletters) or [newsletter_table()],
        **top,
    }


def settings_for(store_url: str, *newsletters: dict[str, Any], **top: Any) -> Settings:
    """Settings of a cluster on ``store_url`` with ``newsletters`` (tables)."""
    return parse_settings(cluster_table(store_url, *newsletters, **top), environ={})


def apply_queue_schema(settings: Settings) -> None:
    """Procrastinate's tables and functions, in the store's schema."""
    from digest.cluster.app import make_app

    app = make_app(settings)
    with app.open():
        app.schema_manager.apply_schema()


@pytest.fixture
def cluster_url() -> Iterator[str]:
    """The URL of a new, empty PostgreSQL schema (dropped after the test)."""
    pytest.importorskip("procrastinate")
    if not POSTGRES_URL:
        pytest.skip("the cluster needs PostgreSQL: DIGEST_TEST_POSTGRES_URL is not set")
    with postgres_schema_url() as url:
        yield url


@pytest.fixture
def cluster_settings(cluster_url: str) -> Settings:
    """Settings with ``[cluster] queue = "procrastinate"`` on the test's own schema."""
    return settings_for(cluster_url)


@pytest.fixture
def cluster_store(cluster_settings: Settings) -> Iterator[Store]:
    """The store of ``cluster_settings``, migrated, with the queue's schema applied."""
    store = Store.open(cluster_settings.store.url, secret_key=TEST_SECRET_KEY)
    try:
        apply_queue_schema(cluster_settings)
        yield store
    finally:
        store.close()
