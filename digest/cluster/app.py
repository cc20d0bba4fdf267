"""The Procrastinate app on the store's database, and the names of digest's jobs.

Deferring needs no task function: a job is named by its task name (``TASKS``), so the
CLI and the web app defer without importing what the worker runs. Inside a SQLAlchemy
transaction (``engine.begin()``), :func:`defer` inserts the job on that transaction's
own connection: it is queued if and only if the transaction commits.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from digest.cluster.names import (  # re-exported
    COLLECT_HOST,
    MAIL_QUEUE,
    MAILBOX,
    PLAN_ISSUE,
    QUEUES,
    RETRY_PASS,
    RETRY_STALLED,
    RUN_NEWSLETTER,
    SEND_SLICE,
    TICK,
)
from digest.core.errors import ConfigError

if TYPE_CHECKING:
    import procrastinate
    from sqlalchemy import Connection

    from digest.config import Settings

__all__ = [
    "TICK",
    "RUN_NEWSLETTER",
    "COLLECT_HOST",
    "PLAN_ISSUE",
    "SEND_SLICE",
    "RETRY_PASS",
    "MAILBOX",
    "MAIL_QUEUE",
    "RETRY_STALLED",
    "QUEUES",
    "require_procrastinate",
    "conninfo",
    "make_app",
    "defer",
]

log = logging.getLogger("digest.cluster")


def require_procrastinate() -> Any:
    """The procrastinate module; a ConfigError saying how to install it when it is missing."""
    try:
        import procrastinate
    except ImportError:
        raise ConfigError(
            "cluster.queue",
            'is "procrastinate", which is not installed; install digest with its cluster '
            "extra: pip install 'digest[cluster]'",
        ) from None
    return procrastinate


def conninfo(store_url: str) -> str:
    """The libpq connection string of a ``postgresql+psycopg://`` SQLAlchemy URL."""
    from sqlalchemy.engine import make_url

    url = make_url(store_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def make_app(settings: Settings) -> procrastinate.App:
    """The Procrastinate app on ``settings``' store, not yet opened, with no task: a
    worker registers what the jobs do (``digest.cluster.tasks.register``), which
    deferring does not need (and which imports this module for deferring)."""
    procrastinate = require_procrastinate()
    from digest.store import resolve_store_url

    url = resolve_store_url(settings.store.url, settings.base_dir)
    app = procrastinate.App(
        connector=procrastinate.PsycopgConnector(conninfo=conninfo(url), min_size=1, max_size=4)
    )
    return app


_deferring: dict[str, procrastinate.App] = {}


def _deferring_app(settings: Settings) -> procrastinate.App:
    """An app that only defers, on connections it is handed: never opened, so it never
    holds connections of its own (one per store URL, kept for the process)."""
    key = settings.store.url
    if key not in _deferring:
        _deferring[key] = make_app(settings)
    return _deferring[key]


def defer(
    settings: Settings,
    connection: Connection,
    task: str,
    *,
    lock: str | None = None,
    queueing_lock: str | None = None,
    queue: str = "default",
    priority: int = 0,
    schedule_in: dict[str, float] | None = None,
    **kwargs: Any,
) -> int | None:
    """Queue one ``task`` job with ``kwargs`` inside ``connection``'s transaction (a
    SQLAlchemy connection of ``engine.begin()``): the job exists only if the transaction
    commits. Its id, or None when a job with ``queueing_lock`` already waits.
    """
    procrastinate = require_procrastinate()
    options: dict[str, Any] = {
        "lock": lock,
        "queueing_lock": queueing_lock,
        "queue": queue,
        "priority": priority,
        "task_kwargs": kwargs,
        "connection": connection.connection.driver_connection,
    }
    if schedule_in:
        options["schedule_in"] = schedule_in
    deferrer = _deferring_app(settings).configure_task(task, **options)
    try:
        # In a savepoint: a job refused for its queueing lock leaves the transaction usable.
        with connection.begin_nested():
            job_id: int = deferrer.defer()
    except procrastinate.exceptions.AlreadyEnqueued:
        return None
    return job_id
