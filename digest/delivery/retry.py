"""When a deferred delivery is tried again, and when it is given up.

A recipient whose server answers 4xx, or whose connection drops, is deferred: its
ledger row goes back to pending with a time before which no run claims it. The waits
grow exponentially from ``retry.first_minutes`` up to ``retry.max_minutes``, each with
up to a quarter added at random, so that rows deferred together are not all retried in
the same second. After ``retry.max_attempts`` attempts, or ``retry.max_age_hours``
after the first one, the row is failed with the server's last reply.

Pure functions of their inputs (``now`` and the random source are passed in).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from digest.config import RetrySettings

__all__ = ["JITTER", "Retry", "GiveUp", "next_step", "backoff"]

#: At most this fraction of a wait is added at random.
JITTER = 0.25


@dataclass(frozen=True)
class Retry:
    """Try again at ``at``."""

    at: datetime


@dataclass(frozen=True)
class GiveUp:
    """Fail the row for good; ``reason`` says why, for the row's reply."""

    reason: str


def backoff(policy: RetrySettings, attempts: int, rng: random.Random | None = None) -> timedelta:
    """The wait after the ``attempts``-th attempt failed: first_minutes × 2^(n−1), capped."""
    minutes = min(policy.first_minutes * 2 ** max(0, attempts - 1), policy.max_minutes)
    jitter = (rng or random).uniform(0, JITTER)
    return timedelta(minutes=minutes * (1 + jitter))


def next_step(
    policy: RetrySettings,
    *,
    attempts: int,
    first_attempt_at: datetime | None,
    now: datetime,
    rng: random.Random | None = None,
) -> Retry | GiveUp:
    """What to do with a row deferred after its ``attempts``-th attempt.

    The last retry is never later than the row's maximum age: a row deferred shortly
    before it gets one more attempt at that moment, then gives up.
    """
    if attempts >= policy.max_attempts:
        return GiveUp(f"gave up after {attempts} attempts")
    first = first_attempt_at or now
    deadline = first + timedelta(hours=policy.max_age_hours)
    if now >= deadline:
        return GiveUp(f"gave up after {attempts} attempts over {_duration(now - first)}")
    return Retry(min(now + backoff(policy, attempts, rng), deadline))


def _duration(span: timedelta) -> str:
    hours = span.total_seconds() / 3600
    if hours >= 48:
        return f"{hours / 24:.1f} days"
    if hours >= 1:
        return f"{hours:.1f} hours"
    return f"{span.total_seconds() / 60:.0f} minutes"
