"""[web] and [admin]: what `digest serve` limits, and the editors' area."""

from __future__ import annotations

import importlib.util
import ipaddress
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from limits import RateLimitItem, parse

from digest.config.declare import Setting, quoted, repr_without_passwords, string_list
from digest.core.redact import MASK, redact_url, url_password

__all__ = [
    "WEB",
    "ADMIN",
    "LOOPBACK",
    "WebSettings",
    "AdminSettings",
    "address_networks",
    "rate_limit_item",
    "rate_limit_storage_problem",
    "unshared_counts",
]

#: The machine itself, over IPv4 and IPv6.
LOOPBACK = ("127.0.0.1", "::1")


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


#: The Python package each family of shared `limits` storages needs.
_STORAGE_PACKAGES = {"redis": "redis", "valkey": "valkey", "mongodb": "pymongo"}
_STORAGE_EXAMPLE = "write 'memory://' or a storage all replicas reach, e.g. 'redis://host:6379/0'"


def _importable(package: str) -> bool:
    """Whether ``package`` can be imported (one blocked in ``sys.modules`` cannot)."""
    try:
        return importlib.util.find_spec(package) is not None
    except ValueError:  # in sys.modules as None
        return False


def rate_limit_storage_problem(value: str) -> str | None:
    """Why ``value`` is no `limits` storage the web app can count in; None if it is one.

    Messages show the URI with its password masked.
    """
    from limits.errors import ConfigurationError
    from limits.storage import SCHEMES, MovingWindowSupport, Storage, storage_from_string

    shown = quoted(redact_url(value))
    try:
        scheme = urlsplit(value).scheme
    except ValueError:
        scheme = ""
    if scheme not in SCHEMES:
        return f"is not a rate limit storage URI: {shown} ({_STORAGE_EXAMPLE})"
    if scheme.startswith("async+"):
        return f"is an asyncio storage URI: {shown}; write it without 'async+'"
    if not issubclass(SCHEMES[scheme], MovingWindowSupport):
        return (
            f"is {shown}, a storage that keeps no moving window for the rate limits "
            f"({_STORAGE_EXAMPLE})"
        )
    if scheme == "memory":
        return None
    family = next((f for f in _STORAGE_PACKAGES if scheme.startswith(f)), "")
    package = _STORAGE_PACKAGES.get(family)
    if package and not _importable(package):
        extra = "pip install 'digest[cluster]'" if package == "redis" else f"pip install {package}"
        return (
            f"is {shown}, which needs the Python package {package!r}; it is not installed ({extra})"
        )
    try:
        storage = storage_from_string(value)
    except (ConfigurationError, ValueError, TypeError) as exc:
        reason = str(exc)
        if password := url_password(value):
            reason = reason.replace(password, MASK)
        return f"is not a usable rate limit storage: {shown}: {reason}"
    if not isinstance(storage, Storage):
        return f"names a storage the rate limits cannot count in: {shown} ({_STORAGE_EXAMPLE})"
    return None


def unshared_counts(web: WebSettings, cluster: bool) -> str | None:
    """A warning when several replicas of `digest serve` (a cluster) would each count
    on their own: the rate limits and the login throttle kept in process memory."""
    if not cluster or urlsplit(web.rate_limit_storage).scheme != "memory":
        return None
    return (
        "web.rate_limit_storage is 'memory://': each `digest serve` process counts requests "
        "and failed logins on its own, so N replicas behind one proxy allow N times the "
        "limits; set it to a storage every replica reaches, e.g. 'redis://host:6379/0'"
    )


def _network_problem(value: str) -> str | None:
    try:
        ipaddress.ip_network(value.strip())
    except ValueError:
        return (
            f"lists {quoted(value)}, which is not an IP address or network (write e.g. "
            "'10.0.0.5', '10.0.0.0/8' or 'fd00::/8', with no host bits after the '/')"
        )
    return None


def address_networks(
    values: tuple[str, ...] | list[str],
) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Addresses (``"10.0.0.5"``) and networks (``"10.0.0.0/8"``) as networks; ValueError
    naming the first that is neither."""
    networks = []
    for value in values:
        if problem := _network_problem(value):
            raise ValueError(problem)
        networks.append(ipaddress.ip_network(value.strip()))
    return networks


def _address_list_problem(value: Any) -> str | None:
    return string_list(value) or next(filter(None, map(_network_problem, value)), None)


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
    S(
        "rate_limit_storage",
        str,
        "memory://",
        "Where the rate limits and the login throttle of /admin count (a `limits` storage "
        "URI): 'memory://' is each `digest serve` process's own; with several replicas "
        "behind one proxy use a storage they all reach, so a client's budget is one across "
        "them: 'redis://host:6379/0' (with the redis package, part of the cluster extra), "
        "'valkey://…' or 'mongodb://…'. PostgreSQL is none: limits offers no such storage.",
        rate_limit_storage_problem,
    ),
    S(
        "trusted_proxies",
        list,
        list(LOOPBACK),
        "Addresses and networks (CIDR, e.g. '10.0.0.0/8') of the reverse proxies in front "
        "of `digest serve`. From these only, X-Forwarded-For names the client (for the rate "
        "limits, the login throttle and consent proofs): the rightmost address in it that is "
        "not itself a trusted proxy. From anyone else the header is ignored.",
        _address_list_problem,
    ),
    S(
        "metrics",
        bool,
        False,
        "Answer Prometheus scrapes at /metrics: deliveries, subscribers, bounces and "
        "complaints, queued confirmation mail, computed from the store on each scrape.",
    ),
    S(
        "metrics_from",
        list,
        list(LOOPBACK),
        "Addresses and networks (CIDR) that may read /metrics; everyone else gets 404. "
        "Behind a proxy this is the client it names in X-Forwarded-For (see "
        "`trusted_proxies`).",
        _address_list_problem,
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
    """What `digest serve` needs beyond the newsletters: the rate limits per client, whom
    to believe about the client's address, and the metrics."""

    rate_limit: str = "60/minute"
    signup_rate_limit: str = "10/hour"
    rate_limit_storage: str = "memory://"
    trusted_proxies: tuple[str, ...] = LOOPBACK
    metrics: bool = False
    metrics_from: tuple[str, ...] = LOOPBACK

    __repr__ = repr_without_passwords

    def __post_init__(self) -> None:
        # The file gives lists; the settings stay immutable (and hashable) as tuples.
        for name in ("trusted_proxies", "metrics_from"):
            object.__setattr__(self, name, tuple(getattr(self, name)))


@dataclass(frozen=True)
class AdminSettings:
    """The editors' area under /admin."""

    session_minutes: int = 480
    login_attempts: int = 5
