"""The cluster's store: migrated once by ``digest migrate``, never by a worker."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from digest.config import Settings
    from digest.store import Store

__all__ = ["open_cluster_store"]


def open_cluster_store(settings: Settings) -> Store:
    """The store of a cluster process, opened without migrating."""
    from digest.store import Store, resolve_store_url

    url = resolve_store_url(settings.store.url, settings.base_dir)
    return Store.open(url, migrate=False, secret_key=settings.secret_key)
