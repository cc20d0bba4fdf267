"""Read ``config.toml`` and ``DIGEST_*`` environment overrides into typed settings.

Every key is declared once below as a :class:`Setting` with its type, default and help
text; the README documents each one (a test checks it). Any problem is a
:class:`~digest.core.errors.ConfigError` that names the key.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from email.utils import parseaddr
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale, UnknownLocaleError
from email_validator import EmailNotValidError, validate_email
from limits import RateLimitItem, parse

from digest.config.cron import cron_problem
from digest.core.errors import ConfigError
from digest.core.limits import MAX_SUMMARY
from digest.core.redact import MASK, redact_url, url_password

__all__ = [
    "Setting",
    "SECTIONS",
    "ENV_OVERRIDES",
    "Settings",
    "StoreSettings",
    "SmtpSettings",
    "NewsletterSettings",
    "Impressum",
    "CategorySettings",
    "SourceSettings",
    "SelectorSettings",
    "SegmentSettings",
    "UnsubscribeMailboxSettings",
    "DkimSettings",
    "MailboxSettings",
    "BounceSettings",
    "WebSettings",
    "AdminSettings",
    "load_settings",
    "rate_limit_item",
    "parse_settings",
    "all_setting_names",
    "parse_locale",
    "secret_values",
    "secret_environment",
]

_REQUIRED = object()

#: The User-Agent of source requests unless `user_agent` is set.
DEFAULT_USER_AGENT = "digest/0.1 (+newsletter digest)"


@dataclass(frozen=True)
class Setting:
    """One configuration key: its name, expected type, default and what it is for."""

    name: str
    type: type | tuple[type, ...]
    default: Any
    help: str
    check: Callable[[Any], str | None] | None = None
    #: Its value never appears in a message, a log line or a repr().
    secret: bool = False
    #: The lowest and highest value of a number, both allowed; every number has them.
    bounds: tuple[float, float] | None = None

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED


# An IANA name: "UTC", "Europe/Berlin", "America/Argentina/Buenos_Aires", "Etc/GMT+5".
_ZONE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_+-]*(?:/[A-Za-z0-9_+-]+)*")
# Files in the zoneinfo folder that are not IANA zones (or depend on the machine).
_NOT_ZONES = {"localtime", "posixrules", "Factory"}


def _timezone_problem(value: str) -> str | None:
    known = (
        _ZONE_NAME.fullmatch(value)
        and value not in _NOT_ZONES
        and not value.startswith(("posix/", "right/"))
    )
    try:
        if known:
            ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        known = False
    if not known:
        return f"unknown time zone {_shown(value)} (use an IANA name such as 'Europe/Berlin')"
    return None


# A plain locale identifier: language, optional script, optional territory ("de",
# "de_DE", "zh_Hant_TW", "es_419"); no encoding, modifier or anything after it.
_LOCALE_ID = re.compile(r"[a-z]{2,3}(?:_[A-Z][a-z]{3})?(?:_(?:[A-Z]{2}|[0-9]{3}))?")


def parse_locale(value: str) -> Locale:
    """The Babel locale named by a plain identifier such as ``de_DE``; ValueError if none.

    Babel's own parser is lenient (``'de_DE;rm -rf'`` reads as ``de``): the identifier
    must be exactly the name Babel gives the locale it finds.
    """
    problem = f"unknown locale {_shown(value)} (use an identifier such as 'de_DE' or 'en_GB')"
    if not _LOCALE_ID.fullmatch(value):
        raise ValueError(problem)
    try:
        locale = Locale.parse(value)
    except (UnknownLocaleError, ValueError):
        raise ValueError(problem) from None
    if str(locale) != value:
        raise ValueError(f"{problem[:-1]}; Babel knows it as {str(locale)!r})")
    return locale


def _locale_problem(value: str) -> str | None:
    try:
        parse_locale(value)
    except ValueError as exc:
        return str(exc)
    return None


def _shown(value: str, limit: int = 80) -> str:
    """``value`` quoted for a message, shortened if long."""
    return repr(value) if len(value) <= limit else f"{value[:limit]!r}… ({len(value)} characters)"


def _one_of(*choices: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if value not in choices:
            return f"must be one of {', '.join(map(repr, choices))}, not {value!r}"
        return None

    return check


def _bounds_text(bounds: tuple[float, float]) -> str:
    return f"{bounds[0]!r} to {bounds[1]!r}"


def _out_of_bounds(value: float, bounds: tuple[float, float]) -> str | None:
    """Why a number is outside ``bounds`` (NaN and infinity always are); None if inside."""
    low, high = bounds
    if math.isfinite(value) and low <= value <= high:
        return None
    return f"must be from {_bounds_text(bounds)}, not {value!r}"


#: The secret_key shipped in the demo config.toml: fine on a loopback address only.
DEMO_SECRET_KEY = "demo-secret-change-me"
MIN_SECRET_KEY_LENGTH = 16


def _is_loopback_url(url: str) -> bool:
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
    if parts.scheme != "https" and not _is_loopback_url(url):
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


def _store_url_problem(value: str) -> str | None:
    # Parsed here as Store.open will, so a bad URL is a config error before anything
    # starts; messages show it with the password masked, or not at all when it does
    # not parse (then nothing tells which part is the password).
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    example = "e.g. 'sqlite:///digest.db' or 'postgresql+psycopg://user:password@host:5432/db'"
    try:
        url = make_url(value)
    except ArgumentError:
        return f"is not a database URL ({example})"
    except ValueError:  # int() of the port
        return f"has a port that is not a number: {redact_url(value)!r}"
    try:
        url.get_dialect()
    except ArgumentError:
        return (
            f"names no database driver SQLAlchemy knows: {url.drivername!r} "
            f"in {url.render_as_string(hide_password=True)!r} ({example})"
        )
    return None


def _subject_problem(value: str) -> str | None:
    from jinja2 import TemplateSyntaxError
    from jinja2.sandbox import SandboxedEnvironment

    try:
        SandboxedEnvironment().parse(value)
    except TemplateSyntaxError as exc:
        return f"is not a Jinja2 template: {exc.message}"
    return None


MAX_NAME_LENGTH = 100


def _display_name_problem(value: str) -> str | None:
    # It is the display name of List-Id and part of every subject.
    if not value.strip():
        return "is empty"
    if any(c < " " or c == "\x7f" for c in value):
        return "must be one line without control characters"
    if len(value) > MAX_NAME_LENGTH:
        return f"is {len(value)} characters long; at most {MAX_NAME_LENGTH}"
    return None


_NEWSLETTER_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
# RFC 5322 dot-atom-text, as mail.py checks a List-Id and a Message-ID.
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_NAME_AND_ADDRESS = re.compile(
    r"\s*(?:(?P<name>[^<>]*?)\s*<(?P<angled>[^<>]*)>|(?P<bare>[^<>\s]+))\s*"
)


def _newsletter_id_problem(value: str) -> str | None:
    # It goes into Message-IDs, the default List-Id, job ids and URLs.
    if not _NEWSLETTER_ID.fullmatch(value):
        return (
            "must be a short slug: lowercase letters, digits and '-', starting with a "
            f"letter or digit, at most 63 characters (e.g. 'wochenueberblick'), not {value!r}"
        )
    return None


def _list_id_problem(value: str) -> str | None:
    if not value:
        return None
    if not _DOT_ATOM.fullmatch(value) or "." not in value:
        return f"must be a dotted name like 'wochenueberblick.example.org', not {value!r}"
    if len(value) > 255:
        return f"must be at most 255 characters (RFC 2919), not {len(value)}"
    return None


def _mailbox_problem(value: str) -> str | None:
    """Problem of a 'Name <addr>' or 'addr' value, as mail.py will read it."""
    match = _NAME_AND_ADDRESS.fullmatch(value)
    if not match:
        return f"must be 'Name <address>' or 'address', not {value!r}"
    addr = match["angled"] if match["angled"] is not None else match["bare"]
    if parseaddr(value)[1] != addr:
        return (
            f"cannot be read as one address: {value!r} (put a name with a comma or other "
            'special characters in double quotes: "Name, Org" <address>)'
        )
    try:
        checked = validate_email(addr, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        reason = " ".join(str(exc).split())
        return f"{addr!r} is not a valid email address: {reason}"
    # mail.py puts the domain in ASCII with Python's IDNA codec (IDNA 2003); where that
    # differs from IDNA 2008 (e.g. 'ß'), the message would name another domain.
    domain = addr.rpartition("@")[2]
    try:
        ascii_domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        ascii_domain = ""
    if ascii_domain.lower() != checked.ascii_domain.lower():
        return f"write the domain of {addr!r} in its ASCII form: {checked.ascii_domain!r}"
    return None


def _optional_mailbox_problem(value: str) -> str | None:
    return _mailbox_problem(value) if value else None


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
            f"is not a rate limit: {_shown(value)} (write e.g. '10/hour', '60/minute' "
            "or '5 per 10 seconds'; at least one request)"
        )
    return None


def _user_agent_problem(value: str) -> str | None:
    if not value.strip() or any(ord(c) < 32 or ord(c) > 126 for c in value):
        return "must be printable ASCII text"
    return None


def _css_problem(value: str) -> str | None:
    if not value:
        return None
    from selectolax.lexbor import LexborHTMLParser, SelectolaxError

    try:
        LexborHTMLParser("<p></p>").css(value)
    except SelectolaxError:
        return f"is not a CSS selector: {_shown(value)}"
    return None


def _date_format_problem(value: str) -> str | None:
    if value and "%" not in value:
        return "must be a strptime format with % codes, such as '[%d.%m.%Y]'"
    return None


def _string_list(value: Any) -> str | None:
    if not all(isinstance(v, str) for v in value):
        return "must be a list of strings"
    return None


def _string_table(value: Any) -> str | None:
    if not all(isinstance(v, str) for v in value.values()):
        return "must be a table of strings"
    return None


#: A source as a whole may take this many times its `timeout`.
SOURCE_TIME_FACTOR = 3

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
        _REQUIRED,
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
        _timezone_problem,
    ),
    S(
        "locale",
        str,
        "de_DE",
        "Default locale for dates and labels: a Babel locale identifier such as 'de_DE', "
        "'de_AT' or 'en_GB'.",
        _locale_problem,
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
STORE = [
    S(
        "url",
        str,
        "sqlite:///digest.db",
        "SQLAlchemy URL of the database: a SQLite file "
        "(relative paths are relative to the config file) or postgresql+psycopg://…",
        _store_url_problem,
    ),
]
SMTP = [
    S("host", str, "127.0.0.1", "SMTP relay host."),
    S(
        "port",
        int,
        8025,
        "SMTP relay port (25, 587 for STARTTLS, 465 for implicit TLS).",
        bounds=(1, 65535),
    ),
    S(
        "security",
        str,
        "none",
        "'none', 'starttls' or 'tls' (implicit TLS).",
        _one_of("none", "starttls", "tls"),
    ),
    S("username", str, "", "Login for SMTP AUTH; empty for none."),
    S("password", str, "", "Password for SMTP AUTH; prefer DIGEST_SMTP_PASSWORD.", secret=True),
    S("timeout", (int, float), 30, "Seconds to wait for any SMTP reply.", bounds=(1, 900)),
    S(
        "pool_size",
        int,
        2,
        "Number of SMTP connections used at once and reused between messages.",
        bounds=(1, 100),
    ),
    S(
        "messages_per_connection",
        int,
        100,
        "Reconnect after this many messages on one connection.",
        bounds=(1, 100_000),
    ),
    S("validate_certs", bool, True, "Verify the server's TLS certificate."),
    S(
        "smtputf8",
        bool,
        False,
        "The relay supports SMTPUTF8 (RFC 6531), so subscribers may have addresses with "
        "non-ASCII characters before the @. While false, the import refuses such addresses "
        "(a non-ASCII domain is fine either way).",
    ),
    S(
        "max_per_second",
        (int, float),
        0,
        "Send at most this many messages a second, over all connections; 0 for no limit.",
        bounds=(0, 10_000),
    ),
    S(
        "max_per_hour",
        (int, float),
        0,
        "Send at most this many messages an hour (the relay's quota); 0 for no limit. "
        "The hour's allowance may go out at the pace of `max_per_second`.",
        bounds=(0, 10_000_000),
    ),
    S(
        "per_domain_limit",
        int,
        0,
        "At most this many messages in flight at once to one recipient domain (large "
        "mail providers refuse senders with many connections at once); 0 for no limit.",
        bounds=(0, 1_000),
    ),
    S(
        "processes",
        int,
        0,
        "Sender processes for a large issue (2,000 messages or more): 0 for one per CPU "
        "core, 1 to send from one process. They share the connections and limits above "
        "and take rows from the ledger, so each message still goes out once.",
        bounds=(0, 64),
    ),
]
NEWSLETTER = [
    S(
        "id",
        str,
        _REQUIRED,
        "Short name used on the command line, in List-Id and Message-IDs: lowercase "
        "letters, digits and '-', e.g. 'wochenueberblick'.",
        _newsletter_id_problem,
    ),
    S("name", str, _REQUIRED, "Display name of the newsletter.", _display_name_problem),
    S(
        "sender",
        str,
        _REQUIRED,
        "From address, e.g. 'Kommune Digital <news@example.org>' (ASCII before the @).",
        _mailbox_problem,
    ),
    S(
        "reply_to",
        str,
        "",
        "Reply-To address, in the same form as `sender`; empty for none.",
        _optional_mailbox_problem,
    ),
    S(
        "subject",
        str,
        "{{ name }} – {{ week_label }}",
        "Jinja2 template of the subject. Names: name, week_label (KW 5/2025), week, year, "
        "date_label, top_title.",
        _subject_problem,
    ),
    S(
        "schedule",
        str,
        "0 7 * * mon",
        "Cron expression (minute hour day month weekday; "
        "0 and 7 are Sunday) of the weekly run, in `timezone`. Day of month and weekday "
        "cannot both be restricted (crontab would run when either matches).",
        cron_problem,
    ),
    S(
        "timezone",
        str,
        None,
        "IANA time zone of the schedule and the issue window; default: the top-level `timezone`.",
        _timezone_problem,
    ),
    S(
        "locale",
        str,
        None,
        "Locale of dates and labels; default: the top-level `locale`.",
        _locale_problem,
    ),
    S(
        "misfire_grace_time",
        int,
        6 * 3600,
        "Seconds after a missed due time within which "
        "the run still happens once when the scheduler comes back.",
        bounds=(1, 7 * 24 * 3600),
    ),
    S(
        "max_per_category",
        int,
        6,
        "At most this many articles per category, newest first.",
        bounds=(1, 100),
    ),
    S(
        "teaser_length",
        int,
        300,
        "Longest teaser in characters; longer ones are cut at a word boundary and end in '…'.",
        bounds=(20, MAX_SUMMARY),
    ),
    S(
        "preheader",
        str,
        "",
        "Preview text shown by mail clients after the subject; "
        "default: the titles of the first articles.",
    ),
    S(
        "templates",
        str,
        "",
        "Folder with templates that override the bundled ones "
        "(same file names); relative to the config file.",
    ),
    S(
        "list_id",
        str,
        "",
        "RFC 2919 List-Id, e.g. 'wochenueberblick.example.org'; default: '<id>.<sender domain>'.",
        _list_id_problem,
    ),
    S(
        "utm",
        dict,
        {},
        "UTM parameters added to every 'mehr…' link, e.g. "
        "{ utm_source = 'newsletter', utm_medium = 'email' }; "
        "'{week}' in a value becomes the issue key.",
        _string_table,
    ),
    S(
        "category_map",
        dict,
        {},
        "Maps a feed's category names (case-insensitive) to "
        "category keys, e.g. { 'E-Government' = 'verwaltung' }.",
        _string_table,
    ),
    S(
        "regions",
        list,
        [],
        "Known region names; a headline 'Region: …' or a feed category "
        "with one of these names sets the article's region. Empty: the 16 German Länder.",
        _string_list,
    ),
    S(
        "archive",
        bool,
        False,
        "Publish the issues sent so far at /archive/<id>/ (list, each issue without "
        "personal data, Atom feed) and put a 'View in browser' link at the top of every "
        "digest. Off by default: the issues become public, and the link only works where "
        "`digest serve` answers at `public_url`.",
    ),
    S(
        "signup",
        bool,
        True,
        "Offer the sign-up page /subscribe/<id> (double opt-in) for this newsletter.",
    ),
    S(
        "signup_list",
        str,
        "",
        "List a confirmed sign-up joins; default: the first list of the first segment.",
    ),
    S(
        "confirm_days",
        int,
        7,
        "Days a confirmation link stays valid; unconfirmed sign-ups are deleted after that.",
        bounds=(1, 365),
    ),
    S(
        "confirm_interval_minutes",
        int,
        10,
        "At most one confirmation mail per address and newsletter in this many minutes; "
        "the page answers the same either way.",
        bounds=(1, 24 * 60),
    ),
    S(
        "consent_text",
        str,
        "",
        "The consent statement shown on the sign-up page and kept as proof; default: a "
        "German text that names the newsletter and says consent can be withdrawn any time.",
    ),
    S(
        "consent_version",
        str,
        "1",
        "Version of `consent_text`, kept with every consent; change it with the text.",
    ),
    S(
        "review",
        str,
        "auto",
        "'auto': the scheduled run sends each issue on its own. 'required': the run "
        "composes the issue, mails the editors a link to it and sends it only once an "
        "editor approved it (in /admin or with `digest approve`).",
        _one_of("auto", "required"),
    ),
    S(
        "approved_send",
        str,
        "immediately",
        "With review = 'required', when an approved issue goes out: 'immediately' (the "
        "approval starts the send) or 'next_run' (at the next scheduled run).",
        _one_of("immediately", "next_run"),
    ),
]
IMPRESSUM = [
    S("publisher", str, _REQUIRED, "Name of the publisher (§5 DDG)."),
    S("address", str, _REQUIRED, "Postal address of the publisher."),
    S("contact", str, _REQUIRED, "Email address or phone number for contact."),
    S("responsible", str, _REQUIRED, "Person responsible for the content."),
    S("url", str, "", "Link to the full Impressum page."),
]
CATEGORY = [
    S(
        "key",
        str,
        _REQUIRED,
        "Short key of the category, used in segments and subscriber interests.",
    ),
    S("title", str, _REQUIRED, "Heading shown in the email."),
]
SOURCE = [
    S("name", str, _REQUIRED, "Name of the source, used in warnings."),
    S(
        "url",
        str,
        _REQUIRED,
        "http(s) URL or local path (relative to the config file) of an "
        "RSS 2.0, Atom or JSON Feed document.",
    ),
    S(
        "default_category",
        str,
        _REQUIRED,
        "Category of items whose own categories map to none of the newsletter's.",
    ),
    S(
        "timeout",
        (int, float),
        20,
        "Seconds before a fetch is given up. The source as a whole (robots.txt, its listing "
        f"pages, the article pages of `fetch_articles`) ends {SOURCE_TIME_FACTOR} times this "
        "after it began: article pages not read by then leave their teasers empty, and a "
        "warning says how many.",
        bounds=(1, 300),
    ),
    S(
        "max_bytes",
        int,
        5_000_000,
        "Largest response accepted, in bytes.",
        bounds=(1_000, 100_000_000),
    ),
    S(
        "allow_private",
        bool,
        False,
        "Fetch from loopback, private and link-local addresses too (an intranet feed); "
        "by default digest refuses them after DNS resolution and on every redirect. "
        "Cloud metadata addresses are always refused; local paths need no permission.",
    ),
    S(
        "kind",
        str,
        "feed",
        "'feed' (RSS, Atom or JSON Feed) or 'html': a listing page read with the CSS "
        "selectors in `[newsletters.sources.selectors]`.",
        _one_of("feed", "html"),
    ),
    S(
        "date_format",
        str,
        "",
        "How an html source's dates are written, as a strptime format such as "
        "'[%d.%m.%Y]' or '%d. %B %Y' (German or English month names); empty: found in the "
        "date text, as '28.01.2025', '30. Januar 2025' or ISO 8601. Dates without a zone are "
        "in the newsletter's `timezone`.",
        _date_format_problem,
    ),
    S(
        "max_pages",
        int,
        3,
        "Most listing pages of an html source read per run, following its `next` link.",
        bounds=(1, 20),
    ),
    S(
        "max_age_days",
        int,
        14,
        "An html source follows its `next` link only while the page's items are newer "
        "than this many days.",
        bounds=(1, 365),
    ),
    S(
        "fetch_articles",
        bool,
        False,
        "For items without a teaser, fetch the article page and take the teaser from its "
        "description (meta, Open Graph, JSON-LD) or its main text.",
    ),
]
SELECTORS = [
    S("item", str, _REQUIRED, "CSS selector of each item on the listing page.", _css_problem),
    S("title", str, _REQUIRED, "Selector of the headline, within the item.", _css_problem),
    S(
        "link",
        str,
        "",
        "Selector of the element whose `href` is the article's link, within the item; "
        "empty: the headline if it is a link, else the first link in the item.",
        _css_problem,
    ),
    S(
        "date",
        str,
        "",
        "Selector of the date, within the item (its `datetime` attribute, else its text); "
        "empty: the item's text.",
        _css_problem,
    ),
    S("teaser", str, "", "Selector of the teaser text, within the item.", _css_problem),
    S(
        "image",
        str,
        "",
        "Selector of the picture, within the item: its `src` (or `data-src`) and `alt`.",
        _css_problem,
    ),
    S("label", str, "", "Selector of the label ('Interview'), within the item.", _css_problem),
    S(
        "category",
        str,
        "",
        "Selector of the item's category name, mapped like a feed's categories.",
        _css_problem,
    ),
    S(
        "exclude",
        str,
        "",
        "Selector of parts of the item left out of the teaser (a date, a 'mehr...' link).",
        _css_problem,
    ),
    S(
        "next",
        str,
        "",
        "Selector of the link to the next (older) page, on the whole page; empty: one page.",
        _css_problem,
    ),
]
SEGMENT = [
    S("name", str, _REQUIRED, "Name of the segment, used by `preview --segment`."),
    S(
        "lists",
        list,
        _REQUIRED,
        "Subscribers on any of these lists belong to the segment.",
        _string_list,
    ),
    S("categories", list, [], "Categories this segment receives; empty: all.", _string_list),
    S(
        "regions",
        list,
        [],
        "Regions this segment receives (articles without a region always go), each one of "
        "the newsletter's `regions`; empty: all.",
        _string_list,
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


def _mailbox_settings(receives: str, password_variable: str) -> list[Setting]:
    """The keys of a mailbox digest reads: a local Maildir or an IMAP folder."""
    return [
        S(
            "maildir",
            str,
            "",
            f"Local Maildir that receives {receives} (relative to the config file); set "
            "this or `imap_host`, not both. Empty: none.",
        ),
        S(
            "imap_host",
            str,
            "",
            "IMAP server (implicit TLS, certificate verified) of the mailbox that receives "
            f"{receives}; empty: none.",
        ),
        S("imap_port", int, 993, "IMAP port (implicit TLS).", bounds=(1, 65535)),
        S("imap_username", str, "", "IMAP login; required with `imap_host`."),
        S(
            "imap_password",
            str,
            "",
            f"IMAP password; prefer {password_variable}.",
            secret=True,
        ),
        S("imap_folder", str, "INBOX", "IMAP folder to read."),
        S(
            "processed",
            str,
            "move",
            "What happens to a processed message: 'move' (mark seen and move "
            "to `processed_folder`), 'seen' (mark seen, leave in place) or 'delete' (expunges "
            "the folder). In a Maildir, 'move' and 'seen' both file it in cur/ with the S "
            "(seen) flag. Other messages stay unread where they are.",
            _one_of("move", "seen", "delete"),
        ),
        S(
            "processed_folder",
            str,
            "digest-processed",
            "IMAP folder for processed messages with `processed = 'move'`; created if missing.",
        ),
        S(
            "interval_minutes",
            int,
            15,
            "`digest run` processes the mailbox this often (and once at start).",
            bounds=(1, 24 * 60),
        ),
    ]


UNSUBSCRIBE_MAILBOX = _mailbox_settings(
    "the mail to the List-Unsubscribe mailto address", "DIGEST_UNSUBSCRIBE_MAILBOX_IMAP_PASSWORD"
)

# A host name of two or more labels, in ASCII (an internationalised one in its xn-- form).
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_TOP_LABEL = r"[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN = re.compile(rf"(?=.{{4,200}}$)(?:{_LABEL}\.)+{_TOP_LABEL}")
# Lower case only: some MTAs lower-case the local part a bounce comes back to.
_PREFIX = re.compile(r"[a-z0-9_]+(?:\.[a-z0-9_]+)*")


def _bounce_domain_problem(value: str) -> str | None:
    if value and not _DOMAIN.fullmatch(value):
        return (
            f"{_shown(value)} is not a domain name in lower-case ASCII "
            "(such as 'bounces.example.org'; an umlaut domain in its xn-- form)"
        )
    return None


def _bounce_prefix_problem(value: str) -> str | None:
    if len(value) > 20 or not _PREFIX.fullmatch(value):
        return (
            f"{_shown(value)} must be 1 to 20 lower-case letters, digits, '_' or inner dots "
            "(a '-' follows it in the address)"
        )
    return None


BOUNCES = [
    S(
        "domain",
        str,
        "",
        "Domain of the VERP return path: each message goes out with the envelope sender "
        "`<prefix>-<delivery>-<signature>@<domain>`, so every bounce names the delivery it "
        "concerns and a forged one is recognised. Its MX must deliver to the mailbox below. "
        "Empty: the envelope sender stays the newsletter's sender address.",
        _bounce_domain_problem,
    ),
    S(
        "prefix",
        str,
        "bounce",
        "Start of the return path's local part, before the delivery number.",
        _bounce_prefix_problem,
    ),
    S(
        "soft_limit",
        int,
        3,
        "Soft bounces (4.x.x: mailbox full, server busy) of one address, each on another "
        "delivery, within `soft_days` that put it on the suppression list.",
        bounds=(1, 100),
    ),
    S(
        "soft_days",
        int,
        30,
        "The window, in days, in which `soft_limit` soft bounces are counted.",
        bounds=(1, 365),
    ),
] + _mailbox_settings(
    "the bounces (DSNs) and complaint reports (ARF) sent to the return path",
    "DIGEST_BOUNCES_IMAP_PASSWORD",
)

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

RELAY = [
    S("host", str, _REQUIRED, "Host of this relay."),
    S("port", int, 25, "Port of this relay.", bounds=(1, 65535)),
    S(
        "weight",
        int,
        1,
        "Share of the messages this relay gets, relative to the other relays' weights.",
        bounds=(1, 1_000),
    ),
    S(
        "pool_size",
        int,
        0,
        "Connections to this relay at once; 0 for `smtp.pool_size`.",
        bounds=(0, 100),
    ),
]
RETRY = [
    S(
        "first_minutes",
        (int, float),
        5,
        "Minutes before the first retry of a recipient whose server deferred the message "
        "(4xx) or whose connection dropped; each further retry waits twice as long, with "
        "up to a quarter added at random so retries spread out.",
        bounds=(0.1, 24 * 60),
    ),
    S(
        "max_minutes",
        (int, float),
        240,
        "Longest wait between two retries of one recipient, in minutes.",
        bounds=(1, 7 * 24 * 60),
    ),
    S(
        "max_attempts",
        int,
        12,
        "Attempts per recipient (the first one included) before the delivery is failed "
        "with the server's last reply.",
        bounds=(1, 100),
    ),
    S(
        "max_age_hours",
        (int, float),
        72,
        "Hours after its first attempt that a deferred delivery is given up and failed "
        "with the server's last reply (RFC 5321 suggests 4–5 days).",
        bounds=(1, 30 * 24),
    ),
    S(
        "check_minutes",
        (int, float),
        1,
        "`digest run` looks this often for deferred deliveries of any unfinished issue that "
        "are due, and sends them.",
        bounds=(0.1, 24 * 60),
    ),
]
DKIM = [
    S(
        "key_file",
        str,
        "",
        "PEM file of the private key (RSA 2048 bits or Ed25519; relative to the config "
        "file) that signs every newsletter message (DKIM, relaxed/relaxed); empty: no "
        "signature. `digest dkim keygen` makes one.",
    ),
    S(
        "selector",
        str,
        "digest",
        "DKIM selector: the key is published at `<selector>._domainkey.<domain>`.",
    ),
    S("domain", str, "", "DKIM signing domain (d=); empty: the domain of the sender address."),
]

#: Every table of the file: its dotted path, its settings, and whether it is an array.
SECTIONS: dict[str, tuple[list[Setting], bool]] = {
    "": (TOP, False),
    "store": (STORE, False),
    "smtp": (SMTP, False),
    "smtp.relays": (RELAY, True),
    "newsletters": (NEWSLETTER, True),
    "newsletters.impressum": (IMPRESSUM, False),
    "newsletters.categories": (CATEGORY, True),
    "newsletters.sources": (SOURCE, True),
    "newsletters.sources.selectors": (SELECTORS, False),
    "newsletters.segments": (SEGMENT, True),
    "unsubscribe_mailbox": (UNSUBSCRIBE_MAILBOX, False),
    "dkim": (DKIM, False),
    "bounces": (BOUNCES, False),
    "web": (WEB, False),
    "admin": (ADMIN, False),
    "retry": (RETRY, False),
}

#: Environment variables that override one key each.
ENV_OVERRIDES: dict[str, tuple[str, str, type]] = {
    "DIGEST_STORE_URL": ("store", "url", str),
    "DIGEST_SMTP_HOST": ("smtp", "host", str),
    "DIGEST_SMTP_PORT": ("smtp", "port", int),
    "DIGEST_SMTP_USERNAME": ("smtp", "username", str),
    "DIGEST_SMTP_PASSWORD": ("smtp", "password", str),
    "DIGEST_SMTP_SECURITY": ("smtp", "security", str),
    "DIGEST_SECRET_KEY": ("", "secret_key", str),
    "DIGEST_PUBLIC_URL": ("", "public_url", str),
    "DIGEST_UNSUBSCRIBE_MAILBOX_IMAP_PASSWORD": ("unsubscribe_mailbox", "imap_password", str),
    "DIGEST_BOUNCES_IMAP_PASSWORD": ("bounces", "imap_password", str),
}

GERMAN_LAENDER = (
    "Baden-Württemberg",
    "Bayern",
    "Berlin",
    "Brandenburg",
    "Bremen",
    "Hamburg",
    "Hessen",
    "Mecklenburg-Vorpommern",
    "Niedersachsen",
    "Nordrhein-Westfalen",
    "Rheinland-Pfalz",
    "Saarland",
    "Sachsen",
    "Sachsen-Anhalt",
    "Schleswig-Holstein",
    "Thüringen",
)


def _setting(section: str, name: str) -> Setting:
    return next(s for s in SECTIONS[section][0] if s.name == name)


def secret_environment(environ: Mapping[str, str]) -> set[str]:
    """The secrets among the ``DIGEST_*`` overrides in ``environ``, before any is checked."""
    found = set()
    for var, (section, key, _) in ENV_OVERRIDES.items():
        value = environ.get(var)
        if not value:
            continue
        if _setting(section, key).secret:
            found.add(value)
        elif password := url_password(value):
            found.add(password)
    return found


def secret_values(settings: Settings) -> set[str]:
    """Every secret in ``settings``: secret settings and the password of any URL."""
    found: set[str] = set()

    def collect(section: str, values: object) -> None:
        for setting in SECTIONS[section][0]:
            value = getattr(values, setting.name, None)
            if not isinstance(value, str) or not value:
                continue
            if setting.secret:
                found.add(value)
            elif password := url_password(value):
                found.add(password)

    collect("", settings)
    collect("store", settings.store)
    collect("smtp", settings.smtp)
    collect("unsubscribe_mailbox", settings.unsubscribe_mailbox)
    collect("bounces", settings.bounces)
    for newsletter in settings.newsletters:
        collect("newsletters", newsletter)
        for source in newsletter.sources:
            collect("newsletters.sources", source)
    return found


def all_setting_names() -> list[str]:
    """Every documented key as a dotted name, e.g. ``newsletters.sources.url``."""
    names = []
    for section, (settings, _) in SECTIONS.items():
        names += [f"{section}.{s.name}" if section else s.name for s in settings]
    return names


def _repr_without_passwords(self: Any) -> str:
    """A dataclass's repr() with the password of any URL in it masked."""
    shown = []
    for f in fields(self):
        if f.repr:
            value = getattr(self, f.name)
            shown.append(f"{f.name}={redact_url(value) if isinstance(value, str) else value!r}")
    return f"{type(self).__name__}({', '.join(shown)})"


@dataclass(frozen=True)
class StoreSettings:
    url: str

    __repr__ = _repr_without_passwords


@dataclass(frozen=True)
class RelaySettings:
    """One of several relays; security, login and timeouts are those of [smtp]."""

    host: str
    port: int = 25
    weight: int = 1
    pool_size: int = 0


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    security: str
    username: str
    password: str = field(repr=False)
    timeout: float
    pool_size: int
    messages_per_connection: int
    validate_certs: bool
    smtputf8: bool = False
    max_per_second: float = 0
    max_per_hour: float = 0
    per_domain_limit: int = 0
    processes: int = 0
    # With relays, messages go to them by weight instead of to host and port.
    relays: tuple[RelaySettings, ...] = ()


@dataclass(frozen=True)
class DkimSettings:
    """The key that signs outgoing newsletters (DKIM); no key file, no signature."""

    key_file: str = ""
    selector: str = "digest"
    domain: str = ""


@dataclass(frozen=True)
class MailboxSettings:
    """A mailbox digest reads: a Maildir or an IMAP folder."""

    maildir: str = ""
    imap_host: str = ""
    imap_port: int = 993
    imap_username: str = ""
    imap_password: str = field(default="", repr=False)
    imap_folder: str = "INBOX"
    processed: str = "move"
    processed_folder: str = "digest-processed"
    interval_minutes: int = 15

    @property
    def configured(self) -> bool:
        return bool(self.maildir or self.imap_host)


@dataclass(frozen=True)
class UnsubscribeMailboxSettings(MailboxSettings):
    """The mailbox behind the List-Unsubscribe mailto address."""


@dataclass(frozen=True)
class BounceSettings(MailboxSettings):
    """The VERP return path and the mailbox its bounces and complaint reports reach."""

    domain: str = ""
    prefix: str = "bounce"
    soft_limit: int = 3
    soft_days: int = 30

    @property
    def verp(self) -> bool:
        """Whether each message goes out with its own signed return path."""
        return bool(self.domain)


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


@dataclass(frozen=True)
class RetrySettings:
    """When deferred deliveries are tried again, and when they are given up."""

    first_minutes: float = 5
    max_minutes: float = 240
    max_attempts: int = 12
    max_age_hours: float = 72
    check_minutes: float = 1


@dataclass(frozen=True)
class Impressum:
    publisher: str
    address: str
    contact: str
    responsible: str
    url: str = ""


@dataclass(frozen=True)
class CategorySettings:
    key: str
    title: str


@dataclass(frozen=True)
class SelectorSettings:
    """The CSS selectors that find an html source's items and their parts."""

    item: str
    title: str
    link: str = ""
    date: str = ""
    teaser: str = ""
    image: str = ""
    label: str = ""
    category: str = ""
    exclude: str = ""
    next: str = ""


@dataclass(frozen=True)
class SourceSettings:
    name: str
    url: str
    default_category: str
    timeout: float = 20
    max_bytes: int = 5_000_000
    allow_private: bool = False
    kind: str = "feed"
    date_format: str = ""
    max_pages: int = 3
    max_age_days: int = 14
    fetch_articles: bool = False
    selectors: SelectorSettings | None = None

    __repr__ = _repr_without_passwords

    @property
    def time_limit(self) -> float:
        """Seconds the whole source may take: every page and article page it reads."""
        return self.timeout * SOURCE_TIME_FACTOR


@dataclass(frozen=True)
class SegmentSettings:
    name: str
    lists: tuple[str, ...]
    categories: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()


@dataclass(frozen=True)
class NewsletterSettings:
    id: str
    name: str
    sender: str
    impressum: Impressum
    categories: tuple[CategorySettings, ...]
    sources: tuple[SourceSettings, ...]
    segments: tuple[SegmentSettings, ...]
    reply_to: str = ""
    subject: str = "{{ name }} – {{ week_label }}"
    schedule: str = "0 7 * * mon"
    timezone: str = "Europe/Berlin"
    locale: str = "de_DE"
    misfire_grace_time: int = 6 * 3600
    max_per_category: int = 6
    teaser_length: int = 300
    preheader: str = ""
    templates: str = ""
    list_id: str = ""
    utm: Mapping[str, str] = field(default_factory=dict)
    category_map: Mapping[str, str] = field(default_factory=dict)
    regions: tuple[str, ...] = GERMAN_LAENDER
    archive: bool = False
    signup: bool = True
    signup_list: str = ""
    confirm_days: int = 7
    confirm_interval_minutes: int = 10
    consent_text: str = ""
    consent_version: str = "1"
    review: str = "auto"
    approved_send: str = "immediately"

    @property
    def consent_statement(self) -> str:
        """The consent text a reader agrees to on the sign-up page."""
        if self.consent_text:
            return self.consent_text
        return (
            f"Ja, ich möchte den Newsletter „{self.name}“ per E-Mail erhalten. Meine "
            "Einwilligung kann ich jederzeit widerrufen, über den Abmeldelink in jeder "
            "Ausgabe oder die Einstellungsseite."
        )

    @property
    def join_list(self) -> str:
        """The list a confirmed sign-up joins."""
        if self.signup_list:
            return self.signup_list
        for segment in self.segments:
            if segment.lists:
                return segment.lists[0]
        return self.id

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @functools.cached_property  # read for every message sent
    def sender_domain(self) -> str:
        """The domain of ``sender`` in ASCII, as it appears in the From header."""
        domain = parseaddr(self.sender)[1].rpartition("@")[2]
        try:
            return domain.encode("idna").decode("ascii") or "localhost"
        except UnicodeError:
            return domain or "localhost"

    @property
    def effective_list_id(self) -> str:
        return self.list_id or f"{self.id}.{self.sender_domain}"

    def category_title(self, key: str) -> str:
        for category in self.categories:
            if category.key == key:
                return category.title
        return key

    def segment(self, name: str) -> SegmentSettings:
        for segment in self.segments:
            if segment.name == name:
                return segment
        known = ", ".join(s.name for s in self.segments)
        raise ConfigError(
            f"newsletters.{self.id}.segments", f"no segment {name!r} (known: {known})"
        )


@dataclass(frozen=True)
class Settings:
    public_url: str
    secret_key: str = field(repr=False)
    timezone: str
    locale: str
    outbox: Path
    store: StoreSettings
    smtp: SmtpSettings
    newsletters: tuple[NewsletterSettings, ...]
    base_dir: Path = Path(".")
    path: Path | None = None
    unsubscribe_mailbox: UnsubscribeMailboxSettings = field(
        default_factory=UnsubscribeMailboxSettings
    )
    dkim: DkimSettings = field(default_factory=DkimSettings)
    bounces: BounceSettings = field(default_factory=BounceSettings)
    web: WebSettings = field(default_factory=WebSettings)
    user_agent: str = DEFAULT_USER_AGENT
    host_delay: float = 1.0
    admin: AdminSettings = field(default_factory=AdminSettings)
    retry: RetrySettings = field(default_factory=RetrySettings)

    def newsletter(self, newsletter_id: str) -> NewsletterSettings:
        for newsletter in self.newsletters:
            if newsletter.id == newsletter_id:
                return newsletter
        known = ", ".join(n.id for n in self.newsletters) or "none configured"
        raise ConfigError(
            "newsletters",
            f"no newsletter {newsletter_id!r} (known: {known})",
            path=str(self.path) if self.path else None,
        )

    def resolve(self, value: str) -> Path:
        """A path from the config, relative to the config file's folder."""
        path = Path(value)
        return path if path.is_absolute() else self.base_dir / path


def _type_name(expected: type | tuple[type, ...]) -> str:
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true or false",
        list: "a list",
        dict: "a table",
    }
    if isinstance(expected, tuple):
        return " or ".join(names.get(t, t.__name__) for t in expected)
    return names.get(expected, expected.__name__)


class _Reader:
    def __init__(self, path: str | None, from_environment: Mapping[str, str]) -> None:
        self.path = path
        self.from_environment = from_environment  # dotted key -> variable that set it

    def error(self, key: str, problem: str) -> ConfigError:
        if var := self.from_environment.get(key):
            problem = f"{problem} (set by {var})"
        return ConfigError(key, problem, path=self.path)

    def table(
        self, data: Any, section: str, where: str, inherited: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Check one table against its settings; return the values with defaults filled in."""
        if not isinstance(data, dict):
            raise self.error(where or "(top level)", "must be a table")
        settings, _ = SECTIONS[section]
        by_name = {s.name: s for s in settings}
        children = (
            {
                k.rpartition(".")[2]
                for k in SECTIONS
                if k.startswith(f"{section}.") and k.count(".") == section.count(".") + 1
            }
            if section
            else {k for k in SECTIONS if k and "." not in k}
        )
        values: dict[str, Any] = {}
        for key, value in data.items():
            dotted = f"{where}.{key}" if where else key
            if key in children:
                continue
            setting = by_name.get(key)
            if setting is None:
                close = [s for s in by_name if s.replace("_", "") == key.replace("_", "")]
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise self.error(dotted, f"unknown key{hint}")
            expected = setting.type
            ok = isinstance(value, expected) and not (
                isinstance(value, bool) and expected in (int, (int, float))
            )
            if not ok:
                shown = "" if setting.secret else f" {_shown(repr(value))[1:-1]}"
                raise self.error(
                    dotted, f"must be {_type_name(expected)}, not {type(value).__name__}{shown}"
                )
            if setting.bounds and (problem := _out_of_bounds(value, setting.bounds)):
                raise self.error(dotted, problem)
            if setting.check and (problem := setting.check(value)):
                if setting.secret and value:  # a check that quotes the value is a bug
                    problem = problem.replace(value, MASK)
                raise self.error(dotted, problem)
            values[key] = value
        for setting in settings:
            if setting.name in values:
                continue
            if setting.required:
                raise self.error(
                    f"{where}.{setting.name}" if where else setting.name, "is required"
                )
            default = setting.default
            if default is None and inherited is not None:
                default = inherited.get(setting.name)
            values[setting.name] = default
        return values

    def array(self, data: Any, section: str, where: str) -> list[Any]:
        if not isinstance(data, list):
            raise self.error(where, "must be an array of tables ([[" + section + "]])")
        return data


def parse_settings(
    data: Mapping[str, Any], *, path: Path | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Validate a parsed TOML document plus environment overrides into :class:`Settings`."""
    environ = os.environ if environ is None else environ
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    from_environment: dict[str, str] = {}
    for var, (section, key, kind) in ENV_OVERRIDES.items():
        if var not in environ:
            continue
        raw = environ[var]
        value: Any = raw
        if kind is int:
            try:
                value = int(raw)
            except ValueError:
                raise ConfigError(var, f"must be an integer, not {_shown(raw)}") from None
        target = data.setdefault(section, {}) if section else data
        target[key] = value
        from_environment[f"{section}.{key}" if section else key] = var
    reader = _Reader(str(path) if path else None, from_environment)

    top = reader.table(data, "", "")
    if top["secret_key"] == DEMO_SECRET_KEY and not _is_loopback_url(top["public_url"]):
        raise reader.error(
            "secret_key",
            f"is the demo value from config.toml, which must not sign links served at "
            f"{top['public_url']}; set DIGEST_SECRET_KEY to a long random string",
        )
    store = reader.table(data.get("store", {}), "store", "store")
    smtp = reader.table(data.get("smtp", {}), "smtp", "smtp")
    smtp["relays"] = tuple(
        RelaySettings(**reader.table(raw, "smtp.relays", f"smtp.relays[{n}]"))
        for n, raw in enumerate(
            reader.array(data.get("smtp", {}).get("relays", []), "smtp.relays", "smtp.relays")
        )
    )
    newsletters = []
    seen_ids: set[str] = set()
    for n, raw_nl in enumerate(
        reader.array(data.get("newsletters", []), "newsletters", "newsletters")
    ):
        where = f"newsletters[{n}]"
        values = reader.table(raw_nl, "newsletters", where, inherited=top)
        if values["id"] in seen_ids:
            raise reader.error(f"{where}.id", f"duplicate newsletter id {values['id']!r}")
        seen_ids.add(values["id"])
        if "impressum" not in raw_nl:
            raise reader.error(f"{where}.impressum", "is required (§5 DDG)")
        impressum = Impressum(
            **reader.table(raw_nl["impressum"], "newsletters.impressum", f"{where}.impressum")
        )
        categories = tuple(
            CategorySettings(
                **reader.table(c, "newsletters.categories", f"{where}.categories[{i}]")
            )
            for i, c in enumerate(
                reader.array(
                    raw_nl.get("categories", []), "newsletters.categories", f"{where}.categories"
                )
            )
        )
        if not categories:
            raise reader.error(f"{where}.categories", "needs at least one category")
        keys = [c.key for c in categories]
        if len(set(keys)) != len(keys):
            raise reader.error(f"{where}.categories", "category keys must be unique")
        sources = []
        for i, s in enumerate(
            reader.array(raw_nl.get("sources", []), "newsletters.sources", f"{where}.sources")
        ):
            src_where = f"{where}.sources[{i}]"
            src = SourceSettings(**reader.table(s, "newsletters.sources", src_where))
            raw_selectors = s.get("selectors")
            if src.kind == "html" and raw_selectors is None:
                raise reader.error(f"{src_where}.selectors", "is required with kind = 'html'")
            if src.kind != "html" and raw_selectors is not None:
                raise reader.error(f"{src_where}.selectors", "is only read with kind = 'html'")
            if raw_selectors is not None:
                selectors = reader.table(
                    raw_selectors, "newsletters.sources.selectors", f"{src_where}.selectors"
                )
                src = dataclasses.replace(src, selectors=SelectorSettings(**selectors))
            if src.default_category not in keys:
                raise reader.error(
                    f"{where}.sources[{i}].default_category",
                    f"unknown category {src.default_category!r}",
                )
            sources.append(src)
        known_regions = {r.casefold(): r for r in (tuple(values["regions"]) or GERMAN_LAENDER)}
        segments = []
        for i, s in enumerate(
            reader.array(raw_nl.get("segments", []), "newsletters.segments", f"{where}.segments")
        ):
            seg = reader.table(s, "newsletters.segments", f"{where}.segments[{i}]")
            unknown = [c for c in seg["categories"] if c not in keys]
            if unknown:
                raise reader.error(
                    f"{where}.segments[{i}].categories", f"unknown category {unknown[0]!r}"
                )
            regions = []
            for region in seg["regions"]:
                if region.casefold() not in known_regions:
                    raise reader.error(
                        f"{where}.segments[{i}].regions",
                        f"unknown region {region!r} (known: "
                        f"{', '.join(known_regions.values())}; see {where}.regions)",
                    )
                regions.append(known_regions[region.casefold()])
            segments.append(
                SegmentSettings(
                    seg["name"],
                    tuple(seg["lists"]),
                    tuple(seg["categories"]),
                    tuple(regions),
                )
            )
        segment_list_names = {name for seg in segments for name in seg.lists}
        if values["signup_list"] and values["signup_list"] not in segment_list_names:
            raise reader.error(
                f"{where}.signup_list",
                f"no segment draws from list {values['signup_list']!r}, so a sign-up would "
                "receive nothing",
            )
        category_map = {k.casefold(): v for k, v in values["category_map"].items()}
        for name, key in category_map.items():
            if key not in keys:
                raise reader.error(f"{where}.category_map.{name}", f"unknown category {key!r}")
        newsletters.append(
            NewsletterSettings(
                impressum=impressum,
                categories=categories,
                sources=tuple(sources),
                segments=tuple(segments),
                **{
                    **values,
                    "category_map": category_map,
                    "regions": tuple(values["regions"]) or GERMAN_LAENDER,
                },
            )
        )
    mailbox = reader.table(
        data.get("unsubscribe_mailbox", {}), "unsubscribe_mailbox", "unsubscribe_mailbox"
    )
    _check_mailbox(reader, mailbox, "unsubscribe_mailbox")
    bounces = reader.table(data.get("bounces", {}), "bounces", "bounces")
    _check_mailbox(reader, bounces, "bounces")
    web = reader.table(data.get("web", {}), "web", "web")
    base_dir = path.parent if path else Path(".")
    return Settings(
        public_url=top["public_url"].rstrip("/"),
        secret_key=top["secret_key"],
        timezone=top["timezone"],
        locale=top["locale"],
        outbox=Path(top["outbox"])
        if Path(top["outbox"]).is_absolute()
        else base_dir / top["outbox"],
        store=StoreSettings(**store),
        smtp=SmtpSettings(**smtp),
        newsletters=tuple(newsletters),
        base_dir=base_dir,
        path=path,
        unsubscribe_mailbox=UnsubscribeMailboxSettings(**mailbox),
        dkim=DkimSettings(**reader.table(data.get("dkim", {}), "dkim", "dkim")),
        bounces=BounceSettings(**bounces),
        web=WebSettings(**web),
        user_agent=top["user_agent"],
        host_delay=top["host_delay"],
        admin=AdminSettings(**reader.table(data.get("admin", {}), "admin", "admin")),
        retry=RetrySettings(**reader.table(data.get("retry", {}), "retry", "retry")),
    )


def _check_mailbox(reader: _Reader, values: Mapping[str, Any], section: str) -> None:
    if values["maildir"] and values["imap_host"]:
        raise reader.error(
            section,
            "set either maildir (a local Maildir) or imap_host (an IMAP server), not both",
        )
    if values["imap_host"] and not values["imap_username"]:
        raise reader.error(f"{section}.imap_username", "is required with imap_host")


def load_settings(
    path: str | Path = "config.toml", environ: Mapping[str, str] | None = None
) -> Settings:
    """Read the config file at ``path`` (and the environment) into :class:`Settings`."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError("--config", f"no such file: {path}") from None
    except OSError as exc:  # a directory, no permission, an I/O error
        raise ConfigError("--config", f"cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("(syntax)", str(exc), path=str(path)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            "(syntax)", f"not UTF-8 text (byte {exc.start}): is it a TOML file?", path=str(path)
        ) from None
    return parse_settings(data, path=path, environ=environ)


def reference_markdown() -> str:
    """A Markdown table of every key, for README.md (``python -m digest.config``)."""
    lines = []
    for section, (settings, is_array) in SECTIONS.items():
        title = f"[[{section}]]" if is_array else (f"[{section}]" if section else "top level")
        lines += [
            "",
            f"**{title}**",
            "",
            "| key | type | default | meaning |",
            "| --- | --- | --- | --- |",
        ]
        for s in settings:
            name = f"{section}.{s.name}" if section else s.name
            default = (
                "required"
                if s.required
                else ("inherited" if s.default is None else f"`{s.default!r}`".replace("|", "\\|"))
            )
            if isinstance(s.default, bool):
                default = f"`{str(s.default).lower()}`"
            meaning = s.help.replace("|", "\\|")
            kind = _type_name(s.type)
            if s.bounds:
                kind += f", {_bounds_text(s.bounds)}"
            lines.append(f"| `{name}` | {kind} | {default} | {meaning} |")
    return "\n".join(lines).strip() + "\n"


def update_readme(path: Path) -> bool:
    """Rewrite the generated reference in README.md; True if it changed."""
    text = path.read_text(encoding="utf-8")
    start = text.index(README_START)
    start = text.index("\n", start) + 1
    end = text.index(README_END)
    updated = text[:start] + reference_markdown() + text[end:]
    if updated != text:
        path.write_text(updated, encoding="utf-8")
    return updated != text


README_START = "<!-- settings:start"
README_END = "<!-- settings:end -->"
