"""Listing pages: news sites without a feed, read with the CSS selectors of the source.

Each item the ``item`` selector finds becomes the same Article a feed item becomes: the
values are read as plain text here and mapped, checked, bounded and sanitized by the
feed module's mapper. The page is parsed with lexbor (selectolax), in a child process like
a feed. A page on which the ``item`` selector finds nothing, or whose items all lack a
title, link or date, fails the source (the site's layout changed); a selector that finds
nothing in any item, and items skipped for a missing part, are warnings naming the selector.

An element the ``item`` selector finds that holds two items or more is a wrapper, not an
item. Read-more links ("weiter…", "mehr...", "Mehr erfahren", "Read more") never reach a
teaser, and an image that a lazy loader keeps in ``data-src`` (or ``data-lazy-src``, a
``srcset``) behind a ``data:`` placeholder is read from there.
"""

from __future__ import annotations

import asyncio
import dataclasses
import html
import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from selectolax.lexbor import LexborHTMLParser, LexborNode, SelectolaxError

from digest.config import NewsletterSettings, SelectorSettings, SourceSettings
from digest.core.errors import SourceError
from digest.core.models import Article, Image
from digest.sources.dates import find_date
from digest.sources.feed import _Item, _Mapper, _web_url
from digest.sources.fetch import FetchResult, FetchState
from digest.sources.robots import Guest
from digest.sources.worker import WorkerFailed, WorkerTimeout, run_in_worker

__all__ = [
    "ListingPage",
    "parse_listing",
    "fetch_listing",
    "decode_html",
    "first_link",
    "is_read_more",
]

# The whole text of a read-more link: "weiter…", "mehr...", "Mehr erfahren", "Read more »".
_READ_MORE = re.compile(
    r"[\s\[(»›→>]*(?:weiter(?:lesen)?|mehr(?:\s+(?:lesen|erfahren|dazu|anzeigen))?|"
    r"zum\s+(?:artikel|beitrag)|(?:den\s+ganzen\s+)?artikel\s+lesen|read\s+more|"
    r"continue\s+reading|more|details)[\s.…»›→>)\]]*",
    re.IGNORECASE,
)
# Text for screen readers only, as in WordPress's "Weiterlesen<span …> „Titel“</span>".
_HIDDEN = ".screen-reader-text, .sr-only, .visually-hidden, .visuallyhidden"
#: Where lazy-loading pages keep an image's address while ``src`` holds a placeholder.
_LAZY_SOURCES = ("data-src", "data-lazy-src", "data-original", "data-lazy")
_LAZY_SETS = ("data-srcset", "data-lazy-srcset", "srcset")
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([A-Za-z0-9_.:-]+)""", re.IGNORECASE)


@dataclass(frozen=True)
class ListingPage:
    """What one listing page holds: its Articles, notes, and the link to the next page."""

    articles: tuple[Article, ...]
    warnings: tuple[str, ...]
    next_url: str | None = None


def decode_html(data: bytes, content_type: str | None) -> str:
    """The text of an HTML page: in the charset its header or a <meta> names, else UTF-8."""
    candidates = []
    _, _, params = (content_type or "").partition(";")
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            candidates.append(value.strip().strip("\"'"))
    if (match := _META_CHARSET.search(data[:4096])) is not None:
        candidates.append(match.group(1).decode("ascii"))
    for charset in candidates:
        try:
            return data.decode(charset, errors="replace")
        except LookupError:
            continue
    return data.decode("utf-8", errors="replace")


def first_link(node: LexborNode) -> LexborNode | None:
    """``node`` if it is a link, else the first link inside it."""
    if node.tag == "a" and node.attributes.get("href"):
        return node
    return node.css_first("a[href]")


def is_read_more(link: LexborNode) -> bool:
    """Whether ``link`` reads "weiter…", "mehr...", "Mehr erfahren", "Read more" and the like."""
    text = _text(link)
    for hidden in link.css(_HIDDEN):
        text = text.replace(_text(hidden), " ")
    return _READ_MORE.fullmatch(" ".join(text.split())) is not None


def _text(node: LexborNode | None) -> str:
    return " ".join((node.text(deep=True, separator=" ") or "").split()) if node else ""


def parse_listing(
    data: bytes,
    source: SourceSettings,
    newsletter: NewsletterSettings,
    *,
    page_url: str | None = None,
    content_type: str | None = None,
) -> ListingPage:
    """The Articles of one listing page, read with ``source.selectors``."""
    selectors = source.selectors
    if selectors is None:
        raise SourceError(source.name, "an html source needs [newsletters.sources.selectors]")
    try:
        return _Reader(source, selectors, newsletter, page_url).read(
            LexborHTMLParser(decode_html(data, content_type))
        )
    except SelectolaxError as exc:  # the config check parses every selector; lexbor may still
        raise SourceError(source.name, f"a selector cannot be used: {exc}") from None


class _Reader:
    def __init__(
        self,
        source: SourceSettings,
        selectors: SelectorSettings,
        newsletter: NewsletterSettings,
        page_url: str | None,
    ) -> None:
        self.source = source
        self.sel = selectors
        self.zone = newsletter.zone
        self.page_url = page_url
        self.mapper = _Mapper(source, newsletter, page_url)
        self.found: Counter[str] = Counter()  # optional part -> items it was found in
        # (required part, its selector) -> items skipped without it
        self.missing: Counter[tuple[str, str]] = Counter()

    def read(self, tree: LexborHTMLParser) -> ListingPage:
        where = self.page_url or self.source.url
        for hidden in tree.css("script, style, noscript, template"):
            hidden.decompose()  # their text is code, never a title or a teaser
        nodes = tree.css(self.sel.item)
        if not nodes:
            raise SourceError(
                self.source.name,
                f"the item selector {self.sel.item!r} found nothing on {where}; "
                "has the page's layout changed?",
            )
        articles = []
        for node in nodes:
            if len(node.css(self.sel.item)) > 2:
                continue  # it holds two items or more (and itself): a wrapper, not an item
            item = self.item(node)
            if item is not None and (article := self.mapper.article(item)) is not None:
                articles.append(article)
        if not articles:
            raise SourceError(
                self.source.name,
                f"none of the {len(nodes)} items found by {self.sel.item!r} on {where} has "
                f"a title, link and date ({'; '.join(self.skipped_notes()) or 'all unusable'}); "
                "has the page's layout changed?",
            )
        return ListingPage(tuple(articles), tuple(self.notes(len(nodes))), self.next_url(tree))

    def item(self, node: LexborNode) -> _Item | None:
        sel = self.sel
        title_node = node.css_first(sel.title)
        title = _text(title_node)
        if not title:
            self.missing["title", sel.title] += 1
            return None
        if sel.link:
            link_node = node.css_first(sel.link)
            link_node = first_link(link_node) if link_node is not None else None
        else:
            link_node = (first_link(title_node) if title_node else None) or first_link(node)
        link = (link_node.attributes.get("href") or "") if link_node is not None else ""
        if not link.strip() or _web_url(link, self.page_url) is None:
            self.missing["link", sel.link or "a[href]"] += 1
            return None
        date_node = node.css_first(sel.date) if sel.date else node
        date_text = ""
        if date_node is not None:
            date_text = date_node.attributes.get("datetime") or _text(date_node)
        found = find_date(date_text, self.zone, self.source.date_format) if date_text else None
        if found is None:
            self.missing["date", sel.date or sel.item] += 1
            return None
        image = self.image(node)
        label = self.optional(node, "label")
        category = self.optional(node, "category")
        if sel.exclude:
            for part in node.css(sel.exclude):
                part.decompose()
        for anchor in node.css("a"):
            if is_read_more(anchor):
                anchor.decompose()  # "weiter…", "Mehr erfahren": no part of a teaser
        teaser = self.optional(node, "teaser")
        at = teaser.find(found.text)
        if 0 <= at <= 2:  # the date opens the teaser, as in "[28.01.2025] Im Frühjahr …"
            teaser = teaser[at + len(found.text) :].lstrip(" ])-–—:|")
        return _Item(
            link=link,
            title=html.escape(title),
            published=found.when,
            tags=[(category, "")] if category else [],
            label=html.escape(label),
            summary=html.escape(teaser),
            images=[image] if image else [],
        )

    def optional(self, node: LexborNode, part: str) -> str:
        selector = getattr(self.sel, part)
        if not selector:
            return ""
        value = _text(node.css_first(selector))
        if value:
            self.found[part] += 1
        return value

    def image(self, node: LexborNode) -> Image | None:
        if not self.sel.image:
            return None
        found = node.css_first(self.sel.image)
        if found is not None and found.tag != "img":
            found = found.css_first("img")
        if found is None:
            return None
        attributes = found.attributes
        src = _image_source(attributes)
        if not src:
            return None
        self.found["image"] += 1
        return Image(src, html.escape(attributes.get("alt") or ""))

    def next_url(self, tree: LexborHTMLParser) -> str | None:
        if not self.sel.next or self.page_url is None:
            return None
        node = tree.css_first(self.sel.next)
        link = first_link(node) if node is not None else None
        href = (link.attributes.get("href") or "") if link is not None else ""
        return _web_url(href, self.page_url) if href.strip() else None

    def skipped_notes(self) -> list[str]:
        return [
            f"{n} without a {part} ({selector!r})" for (part, selector), n in self.missing.items()
        ]

    def notes(self, items: int) -> list[str]:
        notes = [
            f"{n} {'item' if n == 1 else 'items'} without a {part} (selector {selector!r}) skipped"
            for (part, selector), n in self.missing.items()
        ]
        for part in ("teaser", "image", "label", "category"):
            selector = getattr(self.sel, part)
            if selector and not self.found[part]:
                notes.append(f"the {part} selector {selector!r} found nothing in {items} items")
        return notes + self.mapper.warnings()


def _image_source(attributes: dict[str, str | None]) -> str:
    """An image's address: ``src``, unless a lazy loader put a placeholder there.

    A ``data:`` placeholder (or none) stands in for the address in ``data-src``,
    ``data-lazy-src`` and the like, or the first one of a ``srcset``.
    """
    src = (attributes.get("src") or "").strip()
    if src and not src.lower().startswith("data:"):
        return src
    for name in _LAZY_SOURCES:
        if (value := (attributes.get(name) or "").strip()) and not value.startswith("data:"):
            return value
    for name in _LAZY_SETS:
        first = (attributes.get(name) or "").split(",")[0].split()
        if first and not first[0].lower().startswith("data:"):
            return first[0]
    return ""


def _parse_in_worker(
    data: bytes,
    source: SourceSettings,
    newsletter: NewsletterSettings,
    page_url: str | None,
    content_type: str | None,
) -> ListingPage | str:
    try:
        return parse_listing(data, source, newsletter, page_url=page_url, content_type=content_type)
    except SourceError as exc:
        return exc.reason


async def fetch_listing(
    source: SourceSettings,
    newsletter: NewsletterSettings,
    state: FetchState | None,
    *,
    client: httpx.AsyncClient,
    base_dir: Path,
    guest: Guest,
    now: datetime,
    deadline: float | None = None,
) -> FetchResult:
    """Fetch a listing page and its next pages (up to ``source.max_pages``) into Articles.

    Next pages are followed while the page's oldest item is newer than
    ``source.max_age_days``; a next page that fails, or is not read by ``deadline`` (in
    the event loop's clock), ends the walk with a warning. The conditional GET applies
    to the first page, which decides whether anything changed.
    """
    cutoff = now - timedelta(days=source.max_age_days)
    url: str | None = source.url
    seen: set[str] = set()
    articles: list[Article] = []
    warnings: list[str] = []
    first_state = FetchState()
    pages = 0
    while url is not None and pages < source.max_pages:
        seen.add(url)
        try:
            async with asyncio.timeout_at(deadline):
                page, download_state, not_modified = await _fetch_page(
                    dataclasses.replace(source, url=url),
                    newsletter,
                    state if pages == 0 else None,
                    client=client,
                    base_dir=base_dir,
                    guest=guest,
                )
        except TimeoutError:
            ran_out = f"the source's time ({source.time_limit:g} s) ran out"
            if pages == 0:
                raise SourceError(source.name, ran_out) from None
            warnings.append(f"page {pages + 1} not read: {ran_out}")
            break
        except SourceError as exc:
            if pages == 0:
                raise
            warnings.append(f"page {pages + 1} not read: {exc.reason}")
            break
        if pages == 0:
            if not_modified or page is None:
                return FetchResult(articles=(), state=download_state, not_modified=True)
            first_state = download_state
        assert page is not None
        pages += 1
        articles += page.articles
        warnings += [w if pages == 1 else f"page {pages}: {w}" for w in page.warnings]
        oldest = min(a.published for a in page.articles)
        url = page.next_url if page.next_url not in seen and oldest >= cutoff else None
    unique = {article.uid: article for article in reversed(articles)}
    ordered = [a for a in articles if unique.get(a.uid) is a]
    return FetchResult(tuple(ordered), first_state, warnings=tuple(warnings))


async def _fetch_page(
    source: SourceSettings,
    newsletter: NewsletterSettings,
    state: FetchState | None,
    *,
    client: httpx.AsyncClient,
    base_dir: Path,
    guest: Guest,
) -> tuple[ListingPage | None, FetchState, bool]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + source.timeout
    download = await guest.fetch(source, state, client=client, base_dir=base_dir)
    if download.not_modified:
        return None, download.state, True
    page_url = download.url
    if page_url is None and urlsplit(source.url).scheme.lower() in ("http", "https"):
        page_url = source.url
    args = (download.data, source, newsletter, page_url, download.content_type)
    try:
        outcome = await run_in_worker(_parse_in_worker, args, deadline - loop.time())
    except WorkerTimeout:
        reason = f"timed out after {source.timeout:g} s parsing the page"
        raise SourceError(source.name, reason) from None
    except WorkerFailed as exc:
        raise SourceError(source.name, f"the page parser failed ({exc})") from None
    if isinstance(outcome, str):
        raise SourceError(source.name, outcome)
    return outcome, download.state, False
