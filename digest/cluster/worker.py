"""``digest worker``: run the queue's jobs until SIGTERM, finishing what is in flight."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import Sequence
from typing import Any

from digest.cluster.app import make_app
from digest.cluster.schema import open_cluster_store
from digest.cluster.tasks import Worker, register
from digest.config import Settings

__all__ = ["run_worker", "worker_name"]

log = logging.getLogger("digest.cluster")


def worker_name() -> str:
    """``host:pid``, as the ledger's senders name themselves."""
    return f"{socket.gethostname()}:{os.getpid()}"


async def run_worker(
    settings: Settings, *, queues: Sequence[str] | None = None, concurrency: int = 1
) -> None:
    """Run jobs of ``queues`` (default: all) until SIGTERM or SIGINT.

    On the signal no new job starts; a send slice stops starting messages, records those
    in flight and ends; then the worker ends. A second signal does not hurry it: the
    ledger's rows must be recorded (a supervisor's SIGKILL is safe too, only slower: the
    rows are taken over once the heartbeat is stale and the job is retried).
    """
    # A store digest migrate has not made ready is refused before the queue is touched.
    open_cluster_store(settings).close()
    app = make_app(settings)
    register(app, settings)
    worker = Worker(settings)
    loop = asyncio.get_running_loop()
    options: dict[str, Any] = {"queues": list(queues)} if queues else {}  # default: all
    async with app.open_async():
        task = asyncio.create_task(
            app.run_worker_async(
                **options,
                concurrency=concurrency,
                name=worker_name(),
                install_signal_handlers=False,
                additional_context={"digest": worker},
                update_heartbeat_interval=min(10.0, settings.cluster.stalled_seconds / 3),
                stalled_worker_timeout=settings.cluster.stalled_seconds,
            )
        )

        def stop() -> None:
            if not worker.stopping.is_set():
                log.info("stopping: no new job starts, those running finish")
                worker.stopping.set()
                task.cancel()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop)
        try:
            await task
        except asyncio.CancelledError:
            if not worker.stopping.is_set():
                raise
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            worker.close()
