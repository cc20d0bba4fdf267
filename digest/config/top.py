"""The keys at the top level of the file: public URL, secret key, zone, locale, user agent."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from digest.config.declare import (
    REQUIRED,
    Setting,
    locale_problem,
    timezone_problem,
)
from digest.core.redact import redact_url

__all__ = ["TOP", "DEFAULT_USER_AGENT", "DEMO_SECRET_KEY", "is_loopback_url"]


#: The User-Agent of source requests unless `user_agent` is set.
DEFAULT_USER_AGENT = "digest/0.1 (+newsletter digest)"


#: The secret_key shipped in the demo config.toml: fine on a loopback address only.
DEMO_SECRET_KEY = "demo-secret-change-me"
MIN_SECRET_KEY_LENGTH = 16


def is_loopback_url(url: str) -> bool:
    """True when ``url``'s host is localhost or a loopback address (127.0.0.0/8, ::1)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _public_url_problem(url: str) -> str | None:
    # Every link in a message starts with this URL, and List-Unsubscribe must be an
    # HTTPS URL (RFC 8058); mail.py refuses anything but printable ASCII in it. The
    # messages show it with any password masked.
    value = redact_url(url)
    if not url.startswith(("https://", "http://")):
        return f"must start with https:// (http:// on a loopback address), not {value!r}"
    if not all("\x21" <= c <= "\x7e" for c in url) or any(c in url for c in '<>"\\'):
        return (
            f"must be printable ASCII without spaces (an international host name in its "
            f"xn-- form), not {value!r}"
        )
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return f"has a bad port: {value!r}"
    if not parts.hostname:
        return f"has no host name: {value!r}"
    if "@" in parts.netloc:
        return f"must not contain a user name or password: {value!r}"
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        return f"must not have a query or fragment (links are appended to it): {value!r}"
    if parts.scheme != "https" and not is_loopback_url(url):
        return (
            f"must use https:// unless the host is localhost or a loopback address, "
            f"not {value!r}: List-Unsubscribe must be an HTTPS URL (RFC 8058)"
        )
    return None


def _secret_key_problem(value: str) -> str | None:
    # The value itself never appears in a message.
    if not value.strip():
        return "is empty; set a long random string"
    if len(value) < MIN_SECRET_KEY_LENGTH:
        return (
            f"is {len(value)} characters long; use a random string of at least "
            f"{MIN_SECRET_KEY_LENGTH}, e.g. from "
            "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return None


def _user_agent_problem(value: str) -> str | None:
    if not value.strip() or any(ord(c) < 32 or ord(c) > 126 for c in value):
        return "must be printable ASCII text"
    return None


S = Setting
TOP = [
    S(
        "public_url",
        str,
        "http://127.0.0.1:8000",
        "Base URL of every link the web app serves "
        "(unsubscribe, preferences, archive). Must be https:// (RFC 8058) unless the host "
        "is localhost or a loopback address.",
        _public_url_problem,
    ),
    S(
        "secret_key",
        str,
        REQUIRED,
        "Key that signs the tokens in unsubscribe and preference links; a random string of "
        "at least 16 characters. Set DIGEST_SECRET_KEY in production rather than the file; "
        "the demo value is refused unless `public_url` is a loopback address.",
        _secret_key_problem,
        secret=True,
    ),
    S(
        "timezone",
        str,
        "Europe/Berlin",
        "Default IANA time zone of newsletters.",
        timezone_problem,
    ),
    S(
        "locale",
        str,
        "de_DE",
        "Default locale for dates and labels: a Babel locale identifier such as 'de_DE', "
        "'de_AT' or 'en_GB'.",
        locale_problem,
    ),
    S(
        "outbox",
        str,
        "outbox",
        "Folder where `digest demo` and the capture transport write one .eml file per message.",
    ),
    S(
        "user_agent",
        str,
        DEFAULT_USER_AGENT,
        "User-Agent of every request for a source, and the agent robots.txt rules are read for.",
        _user_agent_problem,
    ),
    S(
        "host_delay",
        (int, float),
        1.0,
        "Seconds between two requests to the same host in one collect run; requests to one "
        "host are never made at the same time.",
        bounds=(0, 60),
    ),
]
