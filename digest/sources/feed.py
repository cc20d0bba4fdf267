"""Feed sources: RSS and Atom (through feedparser) and JSON Feed, mapped to Articles.

JSON Feed documents are read by :mod:`digest.sources.jsonfeed`; the cleaning and
mapping of items is shared by every format and lives here.

Items that cannot become an Article (no link, no title, no date, a link that is not
http(s)) are skipped and counted in the warnings; a document that is no feed at all is a
:class:`~digest.errors.SourceError`.
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
from collections.abc import Iterator
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
from digest.errors import SourceError
from digest.models import Article, Image
from digest.sources.fetch import FetchResult, FetchState, fetch_bytes
from digest.sources.jsonfeed import JsonFeedItem, is_json_feed, read_json_feed

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


async def fetch_source(
    source: SourceSettings,
    newsletter: NewsletterSettings,
    state: FetchState | None,
    *,
    client: httpx.AsyncClient,
    base_dir: Path,
) -> FetchResult:
    """Fetch one feed (URL or local path) and map its items to Articles."""
    download = await fetch_bytes(source, state, client=client, base_dir=base_dir)
    if download.not_modified:
        return FetchResult(articles=(), state=download.state, not_modified=True)
    # Parsing is CPU-bound; a thread keeps the event loop free for the other sources.
    articles, warnings = await asyncio.to_thread(
        parse_feed_with_warnings,
        download.data,
        source,
        newsletter,
        base_url=download.url,
        content_type=download.content_type,
    )
    return FetchResult(tuple(articles), download.state, warnings=tuple(warnings))


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
    title: str = ""  # plain text
    published: datetime | None = None
    updated: datetime | None = None
    author: str = ""
    tags: list[tuple[str, str]] = field(default_factory=list)  # (term, label), no label tags
    label: str = ""
    summary: str = ""  # HTML, not yet sanitized
    content: str = ""
    images: list[Image] = field(default_factory=list)  # declared pictures, best first


#: Longest uid kept as it is; the store indexes uids, and an index entry has a limit.
MAX_UID = 500


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
        self.regions = {region.casefold(): region for region in newsletter.regions}
        direct: dict[str, str] = {}
        for category in newsletter.categories:
            direct.setdefault(category.key.casefold(), category.key)
            direct.setdefault(category.title.casefold(), category.key)
        self.categories = {**direct, **newsletter.category_map}
        self.skipped: Counter[str] = Counter()
        self.cleaner = nh3.Cleaner(
            tags=_TAGS,
            attributes=_ATTRIBUTES,
            url_schemes=_URL_SCHEMES,
            link_rel="noopener noreferrer",
            attribute_filter=self._filter_attribute,
        )

    def article(self, item: _Item) -> Article | None:
        link = self.url(item.link)
        published = item.published or item.updated
        if link is None or not item.title or published is None:
            self.skipped[_why_unusable(item, link)] += 1
            return None
        return Article(
            uid=_bounded_uid(item.uid or link),
            source=self.source.name,
            title=item.title,
            link=link,
            published=published,
            updated=item.updated,
            category=self.category(item.tags),
            region=self.region(item.title, item.tags),
            author=item.author or None,
            summary=self.clean(item.summary or item.content),
            content=self.clean(item.content),
            image=self.image(item),
            label=item.label or None,
        )

    def warnings(self) -> list[str]:
        return [
            f"{n} {'item' if n == 1 else 'items'} {reason} skipped"
            for reason, n in self.skipped.items()
        ]

    def url(self, value: str) -> str | None:
        return _web_url(value, self.base)

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

    def clean(self, markup: str) -> str:
        return self.cleaner.clean(markup).strip() if markup.strip() else ""

    def image(self, item: _Item) -> Image | None:
        for candidate in _image_candidates(item):
            url = self.url(candidate.url)
            if url is not None:
                return Image(url, _plain(candidate.alt))
        return None

    def _filter_attribute(self, element: str, attribute: str, value: str) -> str | None:
        # Called by nh3 after its scheme check; must not raise (nh3 would only report it).
        if element != "a" or attribute != "href" or value.lower().startswith("mailto:"):
            return value
        return self.url(value)


def _web_url(value: str, base: str | None) -> str | None:
    """``value`` as an absolute http(s) URL, resolved against ``base``; else None."""
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
    return absolute


def _why_unusable(item: _Item, link: str | None) -> str:
    if not item.link.strip():
        return "without a link" if item.uid else "without a link or id"
    if link is None:
        return "with a link that is not http(s)"
    return "without a title" if not item.title else "without a date"


def _image_candidates(item: _Item) -> Iterator[Image]:
    yield from item.images
    for markup in (item.content, item.summary):
        if "<img" in markup.lower():
            finder = _ImageFinder()
            finder.feed(markup)
            finder.close()
            yield from finder.images


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
    try:
        result = feedparser.parse(io.BytesIO(data), response_headers=headers, sanitize_html=False)
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
            label = label or _plain(term or tag_label)
        else:
            tags.append((term, tag_label))
    contents = _dicts(get("content"))
    return _Item(
        uid=_str(get("id")).strip(),
        link=_str(get("link")),
        title=_plain(_str(get("title"))),
        published=_from_struct_time(get("published_parsed")),
        updated=_from_struct_time(get("updated_parsed")),
        # Not author_detail: feedparser's e-mail pattern cuts TLDs longer than four letters
        # (".digital") and moves the rest into the name.
        author=_author_name(_str(get("author"))),
        tags=tags,
        label=label,
        summary=_as_html(_str(get("summary")), get("summary_detail")),
        content=_as_html(_str(contents[0].get("value")), contents[0]) if contents else "",
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
        title=_plain(item.title),
        published=item.published,
        updated=item.updated,
        author=_author_name(item.author),
        tags=[(tag, "") for tag in item.tags],
        label=_plain(item.label),
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
