"""The public archive: the issues a newsletter has sent, each as a reader of every
category got it, and an Atom feed of them.

An issue is in the archive once its delivery ledger holds at least one message sent.
Its page is made the way the send makes a message: :func:`~digest.issue.prepare.prepare_issue`
(so whatever the send would use, editorial changes included, is there too), cut and
rendered by :class:`~digest.message.personalize.Personalizer` for a reader with every category and
region. The archive copy of the templates (``render_variant(archive=True)``) prints no
personal line or link, every personal field is filled in empty, and the HTML is
sanitised with nh3 before it becomes part of a web page.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

import nh3
from feedgen.feed import FeedGenerator

from digest.config import NewsletterSettings, Settings
from digest.core.i18n import format_week, format_window, language
from digest.core.models import Issue, Recipient, Rule, Subscriber
from digest.issue.prepare import prepare_issue
from digest.message.personalize import Personalizer
from digest.message.render import PERSONAL_FIELDS, personalize
from digest.store import IssueRecord, Store

__all__ = [
    "ArchivedIssue",
    "ArchivePage",
    "EVERY_CATEGORY",
    "archive_feed",
    "archive_page",
    "archived_issues",
    "archived_newsletter",
    "archived_newsletters",
    "feed_url",
    "issue_url",
    "newsletter_url",
]

#: The reader an archive page shows the issue for: every category, every region, no one.
EVERY_CATEGORY = Recipient(Subscriber(email="", name=""), (), (Rule(),))

#: Entries in the Atom feed, newest first.
FEED_ENTRIES = 50

# What of the rendered email may enter a page: MJML's layout and the template's markup.
_TAGS = {
    "a", "b", "br", "div", "em", "h1", "h2", "h3", "h4", "hr", "i", "img", "li", "ol", "p",
    "span", "strong", "table", "tbody", "td", "th", "thead", "tr", "u", "ul",
}  # fmt: skip
_ATTRIBUTES = {
    "*": {"style", "lang", "dir", "align"},
    "a": {"href"},
    "img": {"src", "alt", "width", "height"},
    "table": {"role", "width", "border", "cellpadding", "cellspacing"},
    "td": {"width", "valign"},
}
# Layout, type and colour; nothing that positions or loads anything.
_STYLE_PROPERTIES = {
    "background-color", "border", "border-bottom", "border-collapse", "border-radius",
    "border-spacing", "border-top", "color", "direction", "display", "font-family",
    "font-size", "font-style", "font-weight", "height", "letter-spacing", "line-height",
    "margin", "margin-bottom", "margin-left", "margin-right", "margin-top", "max-width",
    "outline", "padding", "padding-bottom", "padding-left", "padding-right", "padding-top",
    "table-layout", "text-align", "text-decoration", "text-transform", "vertical-align",
    "width", "word-break",
}  # fmt: skip
_BODY = re.compile(r"<body\b[^>]*>(.*)</body>", re.DOTALL | re.IGNORECASE)


@dataclass(frozen=True)
class ArchivedIssue:
    """One sent issue in a newsletter's archive."""

    key: str
    subject: str
    week_label: str
    date_label: str
    sent_at: datetime
    url: str


@dataclass(frozen=True)
class ArchivePage:
    """What the page of one archived issue shows: the email's body, sanitised."""

    archived: ArchivedIssue
    issue: Issue
    subject: str
    html: str


def newsletter_url(settings: Settings, newsletter: NewsletterSettings) -> str:
    return f"{settings.public_url.rstrip('/')}/archive/{newsletter.id}/"


def issue_url(settings: Settings, newsletter: NewsletterSettings, key: str) -> str:
    """The archive page of an issue; every digest links to it (``archive_url``)."""
    return f"{settings.public_url.rstrip('/')}/archive/{newsletter.id}/{key}"


def feed_url(settings: Settings, newsletter: NewsletterSettings) -> str:
    return f"{newsletter_url(settings, newsletter)}feed.atom"


def archived_newsletters(settings: Settings) -> list[NewsletterSettings]:
    """The newsletters whose archive is public, in configuration order."""
    return [n for n in settings.newsletters if n.archive]


def archived_newsletter(settings: Settings, newsletter_id: str) -> NewsletterSettings | None:
    """The newsletter of that id if its archive is public, else None."""
    for newsletter in archived_newsletters(settings):
        if newsletter.id == newsletter_id:
            return newsletter
    return None


def _archived(
    settings: Settings, newsletter: NewsletterSettings, record: IssueRecord, sent_at: datetime
) -> ArchivedIssue:
    zone, locale = newsletter.zone, newsletter.locale
    year, week, _ = record.window_start.astimezone(zone).isocalendar()
    return ArchivedIssue(
        key=record.key,
        subject=record.subject,
        week_label=format_week(year, week, locale),
        date_label=format_window(record.window_start, record.window_end, locale, zone),
        sent_at=sent_at,
        url=issue_url(settings, newsletter, record.key),
    )


def archived_issues(
    settings: Settings, store: Store, newsletter: NewsletterSettings
) -> list[ArchivedIssue]:
    """The newsletter's sent issues, newest first (empty while its archive is off)."""
    if not newsletter.archive:
        return []
    return [
        _archived(settings, newsletter, record, sent_at)
        for record, sent_at in store.sent_issues(newsletter.id)
    ]


def sanitised_body(html: str) -> str:
    """The body of a rendered email as an HTML fragment safe to put into a page."""
    found = _BODY.search(html)
    return nh3.clean(
        found[1] if found else html,
        tags=_TAGS,
        clean_content_tags={"script", "style", "title", "head"},
        attributes=_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        filter_style_properties=_STYLE_PROPERTIES,
        strip_comments=True,
    ).strip()


def archive_page(
    settings: Settings, store: Store, newsletter: NewsletterSettings, key: str, now: datetime
) -> ArchivePage | None:
    """The page of a sent issue, or None if the archive is off or the issue was not sent."""
    if not newsletter.archive:
        return None
    sent = {record.key: (record, at) for record, at in store.sent_issues(newsletter.id)}
    if key not in sent:
        return None
    prepared = prepare_issue(store, newsletter, key, now, save=False)
    if prepared is None:
        return None
    personalizer = Personalizer(
        settings, newsletter, prepared.issue, now, archive=True, count_clicks=True
    )
    variant = personalizer.variant_for(EVERY_CATEGORY)
    if variant is None:
        return None
    # Every personal field empty: the archive copy prints none of them but the greeting,
    # which is then the one for a reader without a name.
    fields = {field: "" for field in PERSONAL_FIELDS if field != "greeting"}
    html, _text = personalize(variant, fields, locale=newsletter.locale)
    record, sent_at = sent[key]
    return ArchivePage(
        archived=_archived(settings, newsletter, record, sent_at),
        issue=prepared.issue,
        # The issue's subject as stored when it went out, as the list and feed show it.
        subject=record.subject,
        html=sanitised_body(html),
    )


def archive_feed(
    settings: Settings,
    newsletter: NewsletterSettings,
    issues: list[ArchivedIssue],
    now: datetime,
) -> bytes:
    """The Atom feed (RFC 4287) of the archive: its newest issues, newest first."""
    feed = FeedGenerator()
    feed.id(newsletter_url(settings, newsletter))
    feed.title(newsletter.name)
    feed.author({"name": newsletter.impressum.publisher})
    feed.link(href=newsletter_url(settings, newsletter), rel="alternate", type="text/html")
    feed.link(href=feed_url(settings, newsletter), rel="self", type="application/atom+xml")
    feed.language(language(newsletter.locale))
    feed.updated(issues[0].sent_at if issues else now)
    for issue in issues[:FEED_ENTRIES]:
        entry = feed.add_entry(order="append")
        entry.id(issue.url)
        entry.title(issue.subject)
        entry.link(href=issue.url, rel="alternate", type="text/html")
        entry.published(issue.sent_at)
        entry.updated(issue.sent_at)
        entry.summary(f"{issue.week_label} · {issue.date_label}")
    atom: bytes = feed.atom_str(pretty=True)
    return atom
