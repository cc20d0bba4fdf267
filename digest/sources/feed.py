"""Feed sources: RSS and Atom (through feedparser) and JSON Feed, mapped to Articles.

JSON Feed documents are read by :mod:`digest.sources.jsonfeed`; the cleaning and
mapping of items is shared by every format and lives here.

Items that cannot become an Article (no link, no title, no date, a link that is not
http(s) or longer than :data:`~digest.core.limits.MAX_URL`) are skipped and counted in the
warnings; values longer than their limit in :mod:`digest.core.limits` are shortened and counted
too. A document that is no feed at all, or whose HTML nests deeper than
:data:`~digest.core.limits.MAX_HTML_DEPTH`, is a :class:`~digest.core.errors.SourceError`.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import io
import re
import time
import xml.sax
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import feedparser
import httpx
import nh3
from feedparser.namespaces import mediarss

from digest.config import NewsletterSettings, SourceSettings
from digest.core.errors import SourceError
from digest.core.limits import (
    ELLIPSIS,
    MAX_AUTHOR,
    MAX_CONTENT,
    MAX_HTML_DEPTH,
    MAX_IMAGE_ALT,
    MAX_LABEL,
    MAX_SUMMARY,
    MAX_TITLE,
    MAX_UID,
    MAX_URL,
)
from digest.core.models import Article, Image
from digest.sources.bounds import bound_markup, html_depth_exceeds, shorten
from digest.sources.fetch import FetchResult, FetchState, HostPacer, fetch_bytes
from digest.sources.jsonfeed import JsonFeedItem, is_json_feed, read_json_feed
from digest.sources.worker import WorkerFailed, WorkerTimeout, run_in_worker

__all__ = ["fetch_source", "parse_feed", "parse_feed_with_warnings"]

_TAGS = {"p", "br", "a", "strong", "b", "em", "i", "ul", "ol", "li", "blockquote"}
_ATTRIBUTES = {"a": {"href", "title"}}
_URL_SCHEMES = {"http", "https", "mailto"}
_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".avif")
_TAG_START = re.compile(r"<[A-Za-z/!?]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_UNSAFE_IN_URL = re.compile(r"[\x00-\x20\x7f]")
_EMAIL = re.compile(r"<?[^\s<>()@]+@[^\s<>()@]+>?")
_EMPTY_PARENS = re.compile(r"\(\s*\)")
# Plain-text values are cut to this many times their limit before they are cleaned, so
# cleaning (and the e-mail pattern of author names) never sees megabytes; markup and
# entities rarely make a value more than a few times longer than its text.
_RAW_FACTOR = 8


async def fetch_source(
    source: SourceSettings,
    newsletter: NewsletterSettings,
    state: FetchState | None,
    *,
    client: httpx.AsyncClient,
    base_dir: Path,
    pacer: HostPacer | None = None,
) -> FetchResult:
    """Fetch one feed (URL or local path) and map its items to Articles.

    ``source.timeout`` bounds the whole: fetching, parsing and sanitizing. Parsing runs
    in a child process, killed when the time is up.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + source.timeout
    download = await fetch_bytes(source, state, client=client, base_dir=base_dir, pacer=pacer)
    if download.not_modified:
        return FetchResult(articles=(), state=download.state, not_modified=True)
    args = (download.data, source, newsletter, download.url, download.content_type)
    try:
        outcome = await run_in_worker(_parse_in_worker, args, deadline - loop.time())
    except WorkerTimeout:
        reason = f"timed out after {source.timeout:g} s parsing the feed"
        raise SourceError(source.name, reason) from None
    except WorkerFailed as exc:
        raise SourceError(source.name, f"the feed parser failed ({exc})") from None
    if isinstance(outcome, str):
        raise SourceError(source.name, outcome)
    articles, warnings = outcome
    return FetchResult(tuple(articles), download.state, warnings=tuple(warnings))


def _parse_in_worker(
    data: bytes,
    source: SourceSettings,
    newsletter: NewsletterSettings,
    base_url: str | None,
    content_type: str | None,
) -> tuple[list[Article], list[str]] | str:
    """:func:`parse_feed_with_warnings`, with a SourceError as its reason (which pickles)."""
    try:
        return parse_feed_with_warnings(
            data, source, newsletter, base_url=base_url, content_type=content_type
        )
    except SourceError as exc:
        return exc.reason


def parse_feed(
    data: bytes,
    source: SourceSettings,
    newsletter: NewsletterSettings,
    *,
    base_url: str | None = None,
    content_type: str | None = None,
) -> list[Article]:
    """Parse RSS, Atom or JSON Feed bytes into Articles, dropping items that cannot be used."""
    return parse_feed_with_warnings(
        data, source, newsletter, base_url=base_url, content_type=content_type
    )[0]


def parse_feed_with_warnings(
    data: bytes,
    source: SourceSettings,
    newsletter: NewsletterSettings,
    *,
    base_url: str | None = None,
    content_type: str | None = None,
) -> tuple[list[Article], list[str]]:
    """Like :func:`parse_feed`, and also return the non-fatal notes about the feed."""
    if is_json_feed(data, content_type):
        json_items, home, notes = read_json_feed(data, source.name)
        items = [_from_json(item) for item in json_items]
    else:
        items, home, notes = _read_xml_feed(data, source.name, base_url, content_type)
    mapper = _Mapper(source, newsletter, base_url or home)
    articles = [article for item in items if (article := mapper.article(item)) is not None]
    if notes and items and not articles:
        # Read leniently and still nothing usable: for the operator that is a broken feed.
        problem = notes[0].partition(": ")[2] or notes[0]
        raise SourceError(source.name, f"not a feed: {problem}, and no item could be read")
    return articles, notes + mapper.warnings()


@dataclass
class _Item:
    """One entry of any feed format, before it is checked and mapped to an Article."""

    uid: str = ""
    link: str = ""
    title: str = ""  # as given: text or HTML, not yet made plain
    published: datetime | None = None
    updated: datetime | None = None
    author: str = ""  # as given, e-mail address and all
    tags: list[tuple[str, str]] = field(default_factory=list)  # (term, label), no label tags
    label: str = ""  # as given
    summary: str = ""  # HTML, not yet sanitized
    content: str = ""
    summary_base: str = ""  # what relative URLs in the summary are relative to (xml:base)
    content_base: str = ""
    images: list[Image] = field(default_factory=list)  # declared pictures, best first


def _bounded_uid(uid: str) -> str:
    """The uid, or for an absurdly long one a stable digest of it."""
    if len(uid) <= MAX_UID:
        return uid
    return "sha256:" + hashlib.sha256(uid.encode("utf-8", "surrogatepass")).hexdigest()


class _Mapper:
    """Turns the items of one feed into Articles and counts what it skips."""

    def __init__(self, source: SourceSettings, newsletter: NewsletterSettings, base: str | None):
        self.source = source
        self.base = _web_url(base or "", None)
        self.markup_base = self.base  # the base of the markup being cleaned
        self.regions = {region.casefold(): region for region in newsletter.regions}
        direct: dict[str, str] = {}
        for category in newsletter.categories:
            direct.setdefault(category.key.casefold(), category.key)
            direct.setdefault(category.title.casefold(), category.key)
        self.categories = {**direct, **newsletter.category_map}
        self.skipped: Counter[str] = Counter()
        self.shortened: Counter[tuple[str, int, str]] = Counter()  # (what, limit, outcome)
        self.cleaner = nh3.Cleaner(
            tags=_TAGS,
            attributes=_ATTRIBUTES,
            url_schemes=_URL_SCHEMES,
            link_rel="noopener noreferrer",
            attribute_filter=self._filter_attribute,
        )

    def article(self, item: _Item) -> Article | None:
        link = self.url(item.link)
        title = self.text(item.title, MAX_TITLE, "a title")
        published = item.published or item.updated
        if link is None or not title or published is None:
            self.skipped[_why_unusable(item, link, title)] += 1
            return None
        summary_base = item.summary_base if item.summary else item.content_base
        summary = self.bounded(item.summary or item.content, MAX_SUMMARY, "a summary")
        content = self.bounded(item.content, MAX_CONTENT, "content")
        author = self.text(item.author, MAX_AUTHOR, "an author name", clean=_author_name)
        return Article(
            uid=_bounded_uid(item.uid or link),
            source=self.source.name,
            title=title,
            link=link,
            published=published,
            updated=item.updated,
            category=self.category(item.tags),
            region=self.region(title, item.tags),
            author=author or None,
            summary=self.clean(summary, MAX_SUMMARY, summary_base),
            content=self.clean(content, MAX_CONTENT, item.content_base),
            image=self.image(item.images, [(content, item.content_base), (summary, summary_base)]),
            label=self.text(item.label, MAX_LABEL, "a label") or None,
        )

    def warnings(self) -> list[str]:
        skipped = [
            f"{n} {'item' if n == 1 else 'items'} {reason} skipped"
            for reason, n in self.skipped.items()
        ]
        shortened = [
            f"{n} {'item' if n == 1 else 'items'} with {what} longer than {limit} characters "
            f"{outcome}"
            for (what, limit, outcome), n in self.shortened.items()
        ]
        return skipped + shortened

    def text(
        self, raw: str, limit: int, what: str, clean: Callable[[str], str] | None = None
    ) -> str:
        """``raw`` as one line of plain text of at most ``limit`` characters."""
        clean = clean or _plain
        precut = len(raw) > limit * _RAW_FACTOR
        value = clean(raw[: limit * _RAW_FACTOR] if precut else raw)
        if len(value) > limit:
            value = shorten(value, limit)
        elif precut:  # what was left out was markup or text: either way the value is cut
            value = value[: limit - len(ELLIPSIS)].rstrip() + ELLIPSIS
        else:
            return value
        self.shortened[what, limit, "shortened"] += 1
        return value

    def bounded(self, markup: str, limit: int, what: str) -> str:
        """``markup`` cut to ``limit`` characters before anything parses it."""
        if len(markup) <= limit:
            return markup
        self.shortened[what, limit, "shortened"] += 1
        return bound_markup(markup, limit)

    def url(self, value: str, base: str | None = None) -> str | None:
        return _web_url(value, base or self.base)

    def base_of(self, markup_base: str) -> str | None:
        """The absolute base URL of a piece of markup (its xml:base), else the feed's."""
        return (_web_url(markup_base, self.base) if markup_base else None) or self.base

    def category(self, tags: list[tuple[str, str]]) -> str:
        for term, label in tags:
            for value in (term, label):
                key = " ".join(value.split()).casefold()
                if key in self.categories:
                    return self.categories[key]
        return self.source.default_category

    def region(self, title: str, tags: list[tuple[str, str]]) -> str | None:
        prefix, colon, _ = title.partition(": ")
        if colon and prefix.casefold() in self.regions:
            return self.regions[prefix.casefold()]
        for term, _label in tags:
            key = " ".join(term.split()).casefold()
            if key in self.regions:
                return self.regions[key]
        return None

    def clean(self, markup: str, limit: int, base: str = "") -> str:
        """Sanitized ``markup`` (already bounded to ``limit``) of at most ``limit`` characters."""
        if not markup.strip():
            return ""
        if html_depth_exceeds(markup, MAX_HTML_DEPTH):
            raise SourceError(
                self.source.name, f"an item's HTML is nested deeper than {MAX_HTML_DEPTH} levels"
            )
        self.markup_base = self.base_of(base)
        try:
            cleaned = self.cleaner.clean(markup).strip()
            # Sanitizing can lengthen markup (escaped "<", rel attributes, closed elements).
            target = limit
            while len(cleaned) > limit:
                target = target * 9 // 10
                cleaned = self.cleaner.clean(bound_markup(cleaned, target)).strip()
        finally:
            self.markup_base = self.base
        return cleaned

    def image(self, declared: list[Image], markups: list[tuple[str, str]]) -> Image | None:
        """The first usable picture: declared ones first, then <img> in ``markups``.

        ``markups`` are (markup, its xml:base) pairs.
        """
        too_long = False
        for candidate, base in _image_candidates(declared, markups):
            if len(candidate.url) > MAX_URL:
                too_long = True
                continue
            url = self.url(candidate.url, self.base_of(base))
            if url is not None:
                return Image(url, self.text(candidate.alt, MAX_IMAGE_ALT, "an image description"))
        if too_long:
            self.shortened["an image URL", MAX_URL, "left without a picture"] += 1
        return None

    def _filter_attribute(self, element: str, attribute: str, value: str) -> str | None:
        # Called by nh3 after its scheme check; must not raise (nh3 would only report it).
        if element != "a" or attribute != "href" or value.lower().startswith("mailto:"):
            return value
        return self.url(value, self.markup_base)


def _web_url(value: str, base: str | None) -> str | None:
    """``value`` as an absolute http(s) URL of at most ``MAX_URL`` characters, else None.

    A relative ``value`` is resolved against ``base``. A longer URL is not cut (that would
    point elsewhere) but refused.
    """
    if len(value) > MAX_URL * 3:  # cheap refusal before quoting megabytes
        return None
    value = _UNSAFE_IN_URL.sub(lambda m: quote(m.group()), value.strip())
    if not value:
        return None
    try:
        absolute = urljoin(base, value) if base else value
        parts = urlsplit(absolute)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    return absolute if len(absolute) <= MAX_URL else None


def _why_unusable(item: _Item, link: str | None, title: str) -> str:
    if not item.link.strip():
        return "without a link" if item.uid else "without a link or id"
    if link is None:
        if len(item.link.strip()) > MAX_URL:
            return f"with a link longer than {MAX_URL} characters"
        return "with a link that is not http(s)"
    return "without a title" if not title else "without a date"


def _image_candidates(
    declared: list[Image], markups: list[tuple[str, str]]
) -> Iterator[tuple[Image, str]]:
    for image in declared:
        yield image, ""
    for markup, base in markups:
        if "<img" in markup.lower():
            finder = _ImageFinder()
            finder.feed(markup)
            finder.close()
            for image in finder.images:
                yield image, base


class _ImageFinder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.images: list[Image] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "img" and values.get("src"):
            self.images.append(Image(values["src"] or "", values.get("alt") or ""))


# --- RSS and Atom through feedparser ---------------------------------------------------


def _read_xml_feed(
    data: bytes, source_name: str, base_url: str | None, content_type: str | None
) -> tuple[list[_Item], str | None, list[str]]:
    headers = {"content-type": _xml_content_type(content_type)}
    if base_url:
        headers["content-location"] = base_url
    # A stream, never bytes: given bytes, feedparser first tries to open them as a file name.
    # nh3 sanitizes later; feedparser's own sanitizer would only double the parsing time.
    # Its relative URI resolution reparses every HTML value with sgmllib, 13 s for 4.6 MB
    # of nested markup against 0.2 s without; the mapper resolves against xml:base itself.
    try:
        result = feedparser.parse(
            io.BytesIO(data),
            response_headers=headers,
            sanitize_html=False,
            resolve_relative_uris=False,
        )
    except Warning:
        raise
    except Exception as exc:
        # feedparser 6.0 has bugs on malformed input (KeyError, TypeError, ValueError from
        # a character reference beyond U+10FFFF, ...); for us that input is not a feed.
        reason = f"not a feed: feedparser failed with {type(exc).__name__}"
        raise SourceError(source_name, reason) from exc
    entries = _dicts(result.get("entries"))
    problem = result.get("bozo_exception") if result.get("bozo") else None
    if isinstance(problem, feedparser.NonXMLContentType):
        problem = None  # a server's wrong Content-Type is nothing the operator can fix
    if not entries:
        if problem is not None and not isinstance(problem, feedparser.CharacterEncodingOverride):
            raise SourceError(source_name, f"not a feed: {_describe(problem, data)}")
        if not result.get("version"):
            what = "the document is empty" if not data.strip() else "no RSS or Atom element found"
            raise SourceError(source_name, f"not a feed: {what}")
    notes = [] if problem is None else [_note(problem, data)]
    home = _str(dict.get(result.get("feed") or {}, "link")) or None
    return [_from_feedparser(entry) for entry in entries], home, notes


def _xml_content_type(content_type: str | None) -> str:
    if not content_type:
        return "application/xml"
    media, _, params = content_type.partition(";")
    if media.strip().lower() == "text/xml" and "charset" not in params.lower():
        # feedparser follows RFC 3023 (us-ascii); RFC 7303 lets the XML declaration decide.
        return "application/xml" + (f";{params}" if params.strip() else "")
    return content_type


def _describe(problem: BaseException, data: bytes) -> str:
    if isinstance(problem, xml.sax.SAXParseException):
        line = problem.getLineNumber() or 1
        head = data[:100].replace(b"\x00", b"").lstrip(b"\xef\xbb\xbf\xff\xfe")
        if not head.startswith(b"<?xml"):
            line -= 1  # feedparser put an XML declaration line in front before parsing
        return f"XML syntax error at line {max(line, 1)} ({problem.getMessage()})"
    return " ".join(str(problem).split())[:200] or type(problem).__name__


def _note(problem: BaseException, data: bytes) -> str:
    if isinstance(problem, feedparser.ThingsNobodyCaresAboutButMe):
        return f"encoding problem, feed read anyway: {_describe(problem, data)}"
    return f"feed is not well-formed, read leniently: {_describe(problem, data)}"


def _from_feedparser(entry: dict[str, Any]) -> _Item:
    # dict.get, not entry.get: FeedParserDict raises a DeprecationWarning when "updated"
    # is looked up on an entry that only has "published".
    def get(key: str) -> Any:
        return dict.get(entry, key)

    tags: list[tuple[str, str]] = []
    label = ""
    for tag in _dicts(get("tags")):
        term, tag_label = _str(tag.get("term")), _str(tag.get("label"))
        if _str(tag.get("scheme")).strip().casefold() == "label":
            label = label or term or tag_label
        else:
            tags.append((term, tag_label))
    contents = _dicts(get("content"))
    return _Item(
        uid=_str(get("id")).strip(),
        link=_str(get("link")),
        title=_str(get("title")),
        published=_from_struct_time(get("published_parsed")),
        updated=_from_struct_time(get("updated_parsed")),
        # Not author_detail: feedparser's e-mail pattern cuts TLDs longer than four letters
        # (".digital") and moves the rest into the name.
        author=_str(get("author")),
        tags=tags,
        label=label,
        summary=_as_html(_str(get("summary")), get("summary_detail")),
        content=_as_html(_str(contents[0].get("value")), contents[0]) if contents else "",
        summary_base=_str(dict.get(get("summary_detail") or {}, "base")),
        content_base=_str(contents[0].get("base")) if contents else "",
        images=_declared_images(entry),
    )


def _declared_images(entry: dict[str, Any]) -> list[Image]:
    alt = _str(dict.get(entry, "media_description"))
    images = [
        Image(_str(media.get("url")), alt)
        for media in _dicts(dict.get(entry, "media_content"))
        if _str(media.get("type")).lower().startswith("image/")
        or _str(media.get("medium")).lower() == "image"
        or urlsplit(_str(media.get("url"))).path.lower().endswith(_IMAGE_EXTENSIONS)
    ]
    images += [Image(_str(t.get("url")), alt) for t in _dicts(dict.get(entry, "media_thumbnail"))]
    images += [
        Image(_str(link.get("href")), _str(link.get("title")))
        for link in _dicts(dict.get(entry, "links"))
        if link.get("rel") == "enclosure" and _str(link.get("type")).lower().startswith("image/")
    ]
    return images


def _as_html(value: str, detail: Any) -> str:
    plain = isinstance(detail, dict) and detail.get("type") == "text/plain"
    return html.escape(value) if plain else value


def _from_struct_time(value: Any) -> datetime | None:
    if not isinstance(value, time.struct_time):
        return None
    try:  # feedparser's parsed times are UTC; a leap second becomes :59
        return datetime(*value[:5], min(value.tm_sec, 59), tzinfo=UTC)
    except (ValueError, OverflowError):
        return None


def _keep_media_description_apart() -> None:
    """Store ``<media:description>`` as ``entry["media_description"]``.

    feedparser 6.0 handles it as the item's ``<description>``, so an image caption
    replaces the summary or the content (kurtmckee/feedparser#53).
    """

    def start(parser: Any, attrs: Any) -> None:
        parser.push("media_description", 1)

    def end(parser: Any) -> None:
        parser.pop("media_description")

    setattr(mediarss.Namespace, "_start_media_description", start)  # noqa: B010
    setattr(mediarss.Namespace, "_end_media_description", end)  # noqa: B010


_keep_media_description_apart()


# --- JSON Feed (read by digest.sources.jsonfeed) -------------------------------------------


def _from_json(item: JsonFeedItem) -> _Item:
    return _Item(
        uid=item.uid,
        link=item.link,
        title=item.title,
        published=item.published,
        updated=item.updated,
        author=item.author,
        tags=[(tag, "") for tag in item.tags],
        label=item.label,
        summary=item.summary,
        content=item.content,
        images=[item.image] if item.image else [],
    )


# --- small helpers -------------------------------------------------------------------------


def _plain(value: str) -> str:
    """Text or HTML as one line of plain text: no tags, entities decoded, whitespace collapsed."""
    text = value
    if "&" in text or _TAG_START.search(text):
        text = html.unescape(nh3.clean(text, tags=set()))
    for _ in range(2):  # again when decoding entities revealed markup (double-escaped feeds)
        if not _TAG_START.search(text):
            break
        text = html.unescape(nh3.clean(text, tags=set()))
    return " ".join(_CONTROL.sub(" ", text).split())


def _author_name(value: str) -> str:
    """The name in "Name", "mail@host (Name)", "Name <mail@host>" or "Name (mail@host)"."""
    name = _EMPTY_PARENS.sub(" ", _EMAIL.sub(" ", value)).strip()
    if name.startswith("(") and name.endswith(")"):
        name = name[1:-1]
    return _plain(name)


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []
