"""[cluster]: several machines sharing the work through a queue in PostgreSQL."""

from __future__ import annotations

from dataclasses import dataclass

from digest.config.declare import Setting, quoted

__all__ = ["CLUSTER", "ClusterSettings", "QUEUES"]

#: The queue engines digest can run on ("" is none: one machine, `digest run`).
QUEUES = ("", "procrastinate")


def _queue_problem(value: str) -> str | None:
    if value in QUEUES:
        return None
    return f'must be "procrastinate" or "" (no queue), not {quoted(value)}'


S = Setting
CLUSTER = [
    S(
        "queue",
        str,
        "",
        'The job queue several `digest worker` processes share: "procrastinate" (a '
        "PostgreSQL store and `pip install 'digest[cluster]'`), or \"\" to run on one "
        "machine with `digest run`.",
        _queue_problem,
    ),
    S(
        "send_slots",
        int,
        4,
        "How many send jobs run at once across the cluster, whatever the number of issues "
        "sending: the relays' connections and rates ([smtp] `pool_size`, `max_per_second`, "
        "`per_domain_limit`, each relay's `pool_size`; `max_per_hour` too, but per slice only: "
        "see docs/operations.md) are divided among "
        "them, so the limits hold for the cluster as a whole. Bounded by the connections; "
        "set it to the number of worker processes that send.",
        bounds=(1, 256),
    ),
    S(
        "slice_seconds",
        (int, float),
        30,
        "How long one send job sends before it hands on to its successor, so other "
        "issues, the tick and shutdowns get their turn.",
        bounds=(1, 3600),
    ),
    S(
        "stalled_seconds",
        (int, float),
        60,
        "A job whose worker has sent no heartbeat for this long (killed, or its machine "
        "gone) is retried; the ledger sends none of its messages twice.",
        bounds=(10, 86_400),
    ),
]


@dataclass(frozen=True)
class ClusterSettings:
    queue: str = ""
    send_slots: int = 4
    slice_seconds: float = 30
    stalled_seconds: float = 60

    @property
    def enabled(self) -> bool:
        return bool(self.queue)
