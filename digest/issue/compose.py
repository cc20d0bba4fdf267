"""Pick a window's articles, group them by category and build teasers and links.

Every function here is pure: no database, no network, no clock. The caller passes
``now`` and the articles; the result is an :class:`~digest.core.models.Issue`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, date, datetime, time, timedelta
from html.parser import HTMLParser
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
from zoneinfo import ZoneInfo

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from digest.config import NewsletterSettings
from digest.core.errors import ComposeError
from digest.core.i18n import format_week, format_window
from digest.core.models import Article, Issue, IssueEdits, IssueItem, Rule, Section
from digest.core.sentences import cut_at_word, cut_text

__all__ = [
    "iso_week_window",
    "teaser_for",
    "shorten",
    "MAX_SUBJECT_LENGTH",
    "link_with_utm",
    "compose_issue",
    "localize_issue",
    "arrange",
    "window_candidates",
    "render_subject",
    "cut_issue",
    "filter_issue",
    "content_key",
    "format_issue",
]

_WEEK = re.compile(r"(\d{4})-W(\d{2})", re.IGNORECASE)
#: Longest subject, in characters. Mail clients show about 60; the bound keeps a long
#: article title (top_title) from making a header that takes seconds to fold.
MAX_SUBJECT_LENGTH = 200


def _week_start(year: int, week: int, zone: ZoneInfo) -> datetime:
    monday = date.fromisocalendar(year, week, 1)
    local = datetime.combine(monday, time(0), tzinfo=zone)
    # Round-trip through UTC so a midnight that a DST jump skips becomes a real time.
    return local.astimezone(UTC).astimezone(zone)


def _parse_week(week: str) -> tuple[int, int]:
    match = _WEEK.fullmatch(week.strip())
    if match:
        year, number = int(match[1]), int(match[2])
        try:
            date.fromisocalendar(year, number, 1)
        except ValueError:
            pass
        else:
            return year, number
    raise ComposeError(f"bad week {week!r}: use YYYY-Www, e.g. 2025-W05")


def iso_week_window(
    week: str | None, zone: ZoneInfo, now: datetime
) -> tuple[str, datetime, datetime]:
    """The key and window [Monday 00:00, next Monday 00:00) of an ISO week in ``zone``.

    ``week`` is ``YYYY-Www`` (e.g. ``2025-W05``); ``None`` means the week before the one
    ``now`` falls in, seen in ``zone``. Both ends are built from the calendar in ``zone``,
    so a week with a DST switch is 167 or 169 hours long.
    """
    if week is None:
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        last_week = now.astimezone(zone).date() - timedelta(days=7)
        year, number, _ = last_week.isocalendar()
    else:
        year, number = _parse_week(week)
    start = _week_start(year, number, zone)
    following = date.fromisocalendar(year, number, 1) + timedelta(days=7)
    end = _week_start(*following.isocalendar()[:2], zone)
    return f"{year}-W{number:02d}", start, end


class _TextExtractor(HTMLParser):
    """Collects the text of an HTML fragment; block elements become spaces.

    Inline elements (``<strong>``, ``<a>``, ...) add no space, so "<b>Akte</b>, ein"
    stays "Akte, ein".
    """

    _SKIP = frozenset({"script", "style", "template", "head", "title"})
    _BLOCK = frozenset(
        {
            "address",
            "article",
            "aside",
            "blockquote",
            "br",
            "dd",
            "div",
            "dl",
            "dt",
            "figcaption",
            "figure",
            "footer",
            "h1",
            "h2",
            "h3",
            "h4",
            "h5",
            "h6",
            "header",
            "hr",
            "img",
            "li",
            "main",
            "nav",
            "ol",
            "p",
            "pre",
            "section",
            "table",
            "td",
            "th",
            "tr",
            "ul",
        }
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skipping += 1
        if tag in self._BLOCK:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP and self._skipping:
            self._skipping -= 1
        if tag in self._BLOCK:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def plain_text(html_or_text: str) -> str:
    """The text of an HTML fragment (or plain text) on one line: tags out, entities in."""
    parser = _TextExtractor()
    parser.feed(html_or_text)
    parser.close()
    return " ".join("".join(parser.parts).split())


def teaser_for(html_or_text: str, limit: int) -> str:
    """Plain text of at most ``limit`` characters: whole sentences where they fit.

    A text longer than ``limit`` ends with the last sentence that fits (if it keeps a
    third of the limit or more), else it is cut at a word boundary with "…", which counts
    towards ``limit``. Only a single word longer than the limit is cut inside the word.
    """
    if limit < 1:
        raise ValueError(f"teaser limit must be at least 1, not {limit}")
    return cut_text(plain_text(html_or_text), limit)


def shorten(text: str, limit: int) -> str:
    """``text`` if it has at most ``limit`` characters, else cut at a word boundary with "…".

    The "…" counts towards ``limit``; only a single word longer than the limit is cut
    inside the word.
    """
    return cut_at_word(text, limit)


def link_with_utm(url: str, utm: Mapping[str, str], issue_key: str) -> str:
    """``url`` with the UTM parameters added; ``{week}`` in a value becomes ``issue_key``.

    The existing query and fragment stay as they are, and a parameter the URL already
    has is not overwritten.
    """
    if not utm or not url:
        return url
    parts = urlsplit(url)
    present = {name for name, _ in parse_qsl(parts.query, keep_blank_values=True)}
    added = [(k, v.replace("{week}", issue_key)) for k, v in utm.items() if k not in present]
    if not added:
        return url
    query = "&".join(q for q in (parts.query, urlencode(added)) if q)
    return urlunsplit(parts._replace(query=query))


#: Control characters (C0, C1) and every other character str.splitlines() breaks at:
#: none may stay in one line of text (a subject, a header value).
LINE_BREAKING = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_SUBJECTS = SandboxedEnvironment(autoescape=False, undefined=StrictUndefined)


def render_subject(newsletter: NewsletterSettings, issue: Issue) -> str:
    """The issue's subject from the newsletter's template, on one line.

    At most :data:`MAX_SUBJECT_LENGTH` characters, cut at a word boundary with "…".
    """
    iso_year, week, _ = issue.window_start.astimezone(newsletter.zone).isocalendar()
    first = next((s.items[0].article for s in issue.sections if s.items), None)
    names = {
        "name": newsletter.name,
        "week_label": issue.week_label,
        "week": week,
        "year": iso_year,
        "date_label": issue.date_label,
        "top_title": first.title if first else "",
    }
    try:
        subject = _SUBJECTS.from_string(newsletter.subject).render(names)
    except TemplateError as exc:
        known = ", ".join(names)
        raise ComposeError(
            f"newsletter {newsletter.id!r}: subject template {newsletter.subject!r}: "
            f"{exc.message or exc} (names: {known})"
        ) from None
    return shorten(" ".join(LINE_BREAKING.sub(" ", subject).split()), MAX_SUBJECT_LENGTH)


def _newest_first(articles: Iterable[Article]) -> list[Article]:
    by_uid = sorted(articles, key=lambda a: a.uid)
    return sorted(by_uid, key=lambda a: a.published, reverse=True)


def window_candidates(
    articles: Iterable[Article], window_start: datetime, window_end: datetime
) -> dict[str, list[Article]]:
    """The newest revision of each article in the window, by category, newest first."""
    latest: dict[str, Article] = {}
    for article in articles:
        if not window_start <= article.published < window_end:
            continue
        seen = latest.get(article.uid)
        if seen is None or _revision(article) > _revision(seen):
            latest[article.uid] = article
    by_category: dict[str, list[Article]] = {}
    for article in latest.values():
        by_category.setdefault(article.category, []).append(article)
    return {category: _newest_first(found) for category, found in by_category.items()}


def arrange(candidates: list[Article], edits: IssueEdits | None) -> list[Article]:
    """One category's articles in the order the editors chose, left-out ones removed.

    Pinned articles come first, then those the editors placed (by rank), then the rest
    newest first, as ``candidates`` has them.
    """
    if edits is None:
        return list(candidates)
    kept = [a for a in candidates if a.uid not in edits.excluded]
    place = {a.uid: i for i, a in enumerate(kept)}
    return sorted(
        kept,
        key=lambda a: (
            a.uid not in edits.pinned,
            a.uid not in edits.ranks,
            edits.ranks.get(a.uid, 0),
            place[a.uid],
        ),
    )


def compose_issue(
    newsletter: NewsletterSettings,
    articles: Iterable[Article],
    *,
    key: str,
    window_start: datetime,
    window_end: datetime,
    now: datetime,
    edits: IssueEdits | None = None,
) -> Issue:
    """The newsletter's issue of the window [window_start, window_end).

    Sections follow the newsletter's category order; categories the newsletter does not
    know and empty sections are left out. Each section's items are its first
    ``max_per_category`` articles in the editors' order (pinned, placed, then newest
    first), its reserve the rest in the same order: the limit applies to what each reader
    may read (:func:`filter_issue`), so a reader of one region gets that region's articles
    although others filled the section. The window alone decides which articles count;
    ``now`` is taken like every stage takes the clock, from the caller.

    ``edits`` are the editors' changes (:class:`~digest.core.models.IssueEdits`): articles
    left out, pinned or moved, teasers rewritten and an intro text. They apply before
    the cut to ``max_per_category``, so a left-out article makes room for the next.
    """
    by_category = window_candidates(articles, window_start, window_end)
    teasers = edits.teasers if edits is not None else {}

    def item(a: Article) -> IssueItem:
        return IssueItem(
            article=a,
            teaser=teasers.get(a.uid)
            or teaser_for(a.summary, newsletter.teaser_length)
            or teaser_for(a.content, newsletter.teaser_length),
            url=link_with_utm(a.link, newsletter.utm, key),
        )

    sections = []
    limit = newsletter.max_per_category
    for category in newsletter.categories:
        chosen = [item(a) for a in arrange(by_category.get(category.key, []), edits)]
        if chosen:
            sections.append(
                Section(category.key, category.title, tuple(chosen[:limit]), tuple(chosen[limit:]))
            )

    issue = Issue(
        newsletter=newsletter.id,
        key=key,
        window_start=window_start,
        window_end=window_end,
        subject="",
        sections=tuple(sections),
        intro=edits.intro.strip() if edits is not None else "",
    )
    return localize_issue(newsletter, issue, newsletter.locale)


def localize_issue(newsletter: NewsletterSettings, issue: Issue, locale: str) -> Issue:
    """The issue with its week and date labels and its subject in ``locale``.

    The content (headlines, teasers, category titles, the intro) stays as written; the
    subject template is the newsletter's, with the labels of ``locale``.
    """
    zone = newsletter.zone
    iso_year, week, _ = issue.window_start.astimezone(zone).isocalendar()
    localized = dataclasses.replace(
        issue,
        locale=locale,
        date_label=format_window(issue.window_start, issue.window_end, locale, zone),
        week_label=format_week(iso_year, week, locale),
    )
    return dataclasses.replace(localized, subject=render_subject(newsletter, localized))


def _revision(article: Article) -> datetime:
    return article.updated or article.published


def cut_issue(
    issue: Issue,
    categories: frozenset[str] | None,
    regions: frozenset[str] | None,
    *,
    newsletter: NewsletterSettings | None = None,
) -> Issue:
    """The issue restricted to ``categories`` and ``regions`` (``None``: all).

    Articles without a region always stay; sections left empty are dropped. With
    ``newsletter`` the subject is rendered again, so a ``top_title`` names an article
    the reader actually gets.
    """
    return filter_issue(issue, Rule(categories, regions).allows, newsletter=newsletter)


def filter_issue(
    issue: Issue,
    allows: Callable[[Article], bool],
    *,
    newsletter: NewsletterSettings | None = None,
) -> Issue:
    """The issue as a reader sees it who may read what ``allows`` lets through.

    Each section keeps, in its order (items, then reserve), the first articles that
    ``allows`` lets through, as many as it has items: the ``max_per_category`` limit
    applies to what this reader may read, and a section without a reserve has no more
    items than the limit. Empty sections are dropped; the cut has no reserve. With
    ``newsletter`` the subject is rendered again for what is left.
    """
    sections = []
    for section in issue.sections:
        allowed = (item for item in (*section.items, *section.reserve) if allows(item.article))
        items = tuple(itertools.islice(allowed, len(section.items)))
        if items:
            sections.append(dataclasses.replace(section, items=items, reserve=()))
    cut = dataclasses.replace(issue, sections=tuple(sections))
    if newsletter is not None:
        cut = dataclasses.replace(cut, subject=render_subject(newsletter, cut))
    return cut


def content_key(issue: Issue) -> str:
    """A short hash that is equal for issues with the same key, subject, articles and
    locale: what a variant is compiled for (a reserve is not content: a cut has none)."""
    digest = hashlib.sha256()
    for part in (issue.newsletter, issue.key, issue.subject, issue.intro, issue.locale):
        digest.update(part.encode() + b"\0")
    for section in issue.sections:
        digest.update(b"\1" + section.category.encode() + b"\0")
        for item in section.items:
            digest.update(item.article.uid.encode() + b"\0" + item.teaser.encode() + b"\0")
    return digest.hexdigest()[:16]


def format_issue(issue: Issue) -> str:
    """A readable dump of an issue, for golden files and ``preview`` output."""
    lines = [
        f"Newsletter: {issue.newsletter}",
        f"Issue:      {issue.key} ({issue.week_label}, {issue.date_label})",
        f"Window:     {issue.window_start.isoformat()} – {issue.window_end.isoformat()}",
        f"Subject:    {issue.subject}",
        f"Articles:   {len(issue.articles)}",
    ]
    if issue.intro:
        lines.append(f"Intro:      {' '.join(issue.intro.split())}")
    for section in issue.sections:
        lines += ["", f"## {section.title} [{section.category}]"]
        for item in section.items:
            a = item.article
            facts = [a.published.isoformat(), f"uid {a.uid}"]
            facts += [f"region {a.region}"] if a.region else []
            facts += [f"label {a.label}"] if a.label else []
            lines += ["", f"- {a.title}", f"  {' · '.join(facts)}", f"  url: {item.url}"]
            if a.image:
                lines.append(f"  image: {a.image.url} (alt: {a.image.alt or '-'})")
            lines.append(f"  teaser: {item.teaser}")
        if section.reserve:
            lines += ["", "  Next for readers whose interests leave room:"]
            for item in section.reserve:
                region = f" ({item.article.region})" if item.article.region else ""
                lines.append(f"  + {item.article.title}{region}")
    return "\n".join(lines) + "\n"
