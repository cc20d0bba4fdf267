"""[[newsletters]] with their impressum, categories and segments (the sources are in sources.py)."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parseaddr
from zoneinfo import ZoneInfo

from email_validator import EmailNotValidError, validate_email

from digest.config.cron import cron_problem
from digest.config.declare import (
    REQUIRED,
    Setting,
    locale_problem,
    one_of,
    string_list,
    string_table,
    timezone_problem,
)
from digest.config.sources import SourceSettings
from digest.core.errors import ConfigError
from digest.core.i18n import translations
from digest.core.limits import MAX_SUMMARY

__all__ = [
    "NEWSLETTER",
    "IMPRESSUM",
    "CATEGORY",
    "SEGMENT",
    "GERMAN_LAENDER",
    "NewsletterSettings",
    "Impressum",
    "CategorySettings",
    "SegmentSettings",
]


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


S = Setting
NEWSLETTER = [
    S(
        "id",
        str,
        REQUIRED,
        "Short name used on the command line, in List-Id and Message-IDs: lowercase "
        "letters, digits and '-', e.g. 'wochenueberblick'.",
        _newsletter_id_problem,
    ),
    S("name", str, REQUIRED, "Display name of the newsletter.", _display_name_problem),
    S(
        "sender",
        str,
        REQUIRED,
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
        "0 and 7 are Sunday) of the weekly run, in `timezone`, or a nickname of crontab "
        "(`@hourly`, `@daily` or `@midnight`, `@weekly`: Sunday 00:00, `@monthly`, "
        "`@yearly` or `@annually`). Day of month and weekday "
        "cannot both be restricted (crontab would run when either matches).",
        cron_problem,
    ),
    S(
        "timezone",
        str,
        None,
        "IANA time zone of the schedule and the issue window; default: the top-level `timezone`.",
        timezone_problem,
    ),
    S(
        "locale",
        str,
        None,
        "Locale of dates and labels; default: the top-level `locale`. A subscriber's own "
        "`locale` (imported, or the sign-up page's) takes its place for them.",
        locale_problem,
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
        "collect_every_minutes",
        int,
        60,
        "`digest run` collects the sources this often (and once at start, and again right "
        "before composing), so items a feed drops within the week are stored first; "
        "0: only right before composing.",
        bounds=(0, 7 * 24 * 60),
    ),
    S(
        "max_per_category",
        int,
        6,
        "At most this many articles per category for each reader, of those their "
        "interests let through: pinned and placed ones first, then the newest.",
        bounds=(1, 100),
    ),
    S(
        "teaser_length",
        int,
        300,
        "Longest teaser in characters; a longer one ends with the last sentence that fits, "
        "else it is cut at a word boundary and ends in '…'.",
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
        string_table,
    ),
    S(
        "category_map",
        dict,
        {},
        "Maps a feed's category names (case-insensitive) to "
        "category keys, e.g. { 'E-Government' = 'verwaltung' }.",
        string_table,
    ),
    S(
        "regions",
        list,
        [],
        "Known region names; a headline 'Region: …' or a feed category "
        "with one of these names sets the article's region. Empty: the 16 German Länder. "
        "The sign-up and preference pages ask for regions only when this list is set or "
        "a segment receives only some regions.",
        string_list,
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
        "click_counts",
        bool,
        False,
        "Count how often each article of an issue is opened: its links in the digest (and "
        "on the archive page) go through public_url/r/<token>, a token that names the "
        "issue and the article, never the reader, and redirect to the article. Only "
        "counts per issue, article and day are kept; editors see them in /admin. Off by "
        "default; needs `digest serve` answering at `public_url`.",
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
        "text in the page's language that names the newsletter and says consent can be "
        "withdrawn any time.",
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
        one_of("auto", "required"),
    ),
    S(
        "approved_send",
        str,
        "immediately",
        "With review = 'required', when an approved issue goes out: 'immediately' (the "
        "approval starts the send) or 'next_run' (at the next scheduled run).",
        one_of("immediately", "next_run"),
    ),
]


IMPRESSUM = [
    S("publisher", str, REQUIRED, "Name of the publisher (§5 DDG)."),
    S("address", str, REQUIRED, "Postal address of the publisher."),
    S("contact", str, REQUIRED, "Email address or phone number for contact."),
    S("responsible", str, REQUIRED, "Person responsible for the content."),
    S("url", str, "", "Link to the full Impressum page."),
]


CATEGORY = [
    S(
        "key",
        str,
        REQUIRED,
        "Short key of the category, used in segments and subscriber interests.",
    ),
    S("title", str, REQUIRED, "Heading shown in the email."),
]


SEGMENT = [
    S("name", str, REQUIRED, "Name of the segment, used by `preview --segment`."),
    S(
        "lists",
        list,
        REQUIRED,
        "Subscribers on any of these lists belong to the segment.",
        string_list,
    ),
    S("categories", list, [], "Categories this segment receives; empty: all.", string_list),
    S(
        "regions",
        list,
        [],
        "Regions this segment receives (articles without a region always go), each one of "
        "the newsletter's `regions`; empty: all.",
        string_list,
    ),
]


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
    collect_every_minutes: int = 60
    max_per_category: int = 6
    teaser_length: int = 300
    preheader: str = ""
    templates: str = ""
    list_id: str = ""
    utm: Mapping[str, str] = field(default_factory=dict)
    category_map: Mapping[str, str] = field(default_factory=dict)
    regions: tuple[str, ...] = GERMAN_LAENDER
    #: True when the config names the newsletter's own ``regions`` (not the default).
    regions_listed: bool = False
    archive: bool = False
    click_counts: bool = False
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
        """The consent text a reader agrees to on the sign-up page, in the newsletter's
        locale (see :meth:`consent_statement_in`)."""
        return self.consent_statement_in(self.locale)

    def consent_statement_in(self, locale: str) -> str:
        """The consent text as a page in ``locale`` shows it: ``consent_text`` as the
        operator wrote it, else the default text from the catalogue of ``locale``."""
        if self.consent_text:
            return self.consent_text
        # TRANSLATORS: the default consent statement of the sign-up page; name is the
        # newsletter's. It is kept word for word as proof of the reader's consent.
        text = translations(locale).gettext(
            "Yes, I would like to receive the newsletter “%(name)s” by email. I can "
            "withdraw my consent at any time, through the unsubscribe link in every issue "
            "or on the preferences page."
        )
        return text % {"name": self.name}

    @property
    def asks_regions(self) -> bool:
        """Whether readers choose regions: the newsletter has regional content, i.e. its
        config names its own ``regions`` or a segment receives only some regions."""
        return self.regions_listed or any(segment.regions for segment in self.segments)

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
