"""[web] and [admin]: what `digest serve` limits, and the editors' area."""

from __future__ import annotations

from dataclasses import dataclass

from limits import RateLimitItem, parse

from digest.config.declare import Setting, quoted

__all__ = ["WEB", "ADMIN", "WebSettings", "AdminSettings", "rate_limit_item"]


def rate_limit_item(limit: str) -> RateLimitItem:
    """``"30/minute"`` (or ``"5 per 10 seconds"``) as a rate; ValueError if it is not one."""
    try:
        item = parse(limit)
    except ValueError as exc:
        raise ValueError(f"rate limit {limit!r}: {exc}") from None
    if item.amount < 1:
        raise ValueError(f"rate limit {limit!r}: allow at least one request")
    return item


def _rate_limit_problem(value: str) -> str | None:
    try:
        rate_limit_item(value)
    except ValueError:
        return (
            f"is not a rate limit: {quoted(value)} (write e.g. '10/hour', '60/minute' "
            "or '5 per 10 seconds'; at least one request)"
        )
    return None


S = Setting
WEB = [
    S(
        "rate_limit",
        str,
        "60/minute",
        "Requests per client address to all the routes that take a token (confirmation, "
        "preferences, unsubscribe) together; more get 429. One-click POSTs from a large "
        "mail provider arrive from few addresses, so keep it generous. `digest serve "
        "--rate-limit` overrides it.",
        _rate_limit_problem,
    ),
    S(
        "signup_rate_limit",
        str,
        "10/hour",
        "Sign-ups (POSTs to /subscribe/<id>) per client address; more get 429. An IPv6 "
        "client counts by its /64.",
        _rate_limit_problem,
    ),
]


ADMIN = [
    S(
        "session_minutes",
        int,
        480,
        "An editor's login to /admin ends this many minutes after it began.",
        bounds=(1, 7 * 24 * 60),
    ),
    S(
        "login_attempts",
        int,
        5,
        "Failed logins allowed per account in 15 minutes (and four times as many per "
        "client address) before further attempts are refused for a while.",
        bounds=(1, 100),
    ),
]


@dataclass(frozen=True)
class WebSettings:
    """What `digest serve` needs beyond the newsletters: the rate limits per client."""

    rate_limit: str = "60/minute"
    signup_rate_limit: str = "10/hour"


@dataclass(frozen=True)
class AdminSettings:
    """The editors' area under /admin."""

    session_minutes: int = 480
    login_attempts: int = 5
