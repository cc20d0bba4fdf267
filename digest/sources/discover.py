"""Propose a source for a web page: the feeds it advertises, else selectors for its items.

:func:`discover` fetches the page as a source would be fetched (robots.txt, the
private-address rule, the size cap) and returns a :class:`Discovery`: the feeds named by
``<link rel="alternate">``, or, where there are none, a ``kind = "html"`` proposal
whose item selector is the page's most repeated structure that holds a link and a
date, with the Articles those selectors read from the page as a preview.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from selectolax.lexbor import LexborHTMLParser, LexborNode

from digest.config import (
    CategorySettings,
    Impressum,
    NewsletterSettings,
    SelectorSettings,
    SourceSettings,
)
from digest.core.errors import SourceError
from digest.core.models import Article
from digest.sources.dates import find_date
from digest.sources.feed import _web_url
from digest.sources.listing import decode_html, parse_listing
from digest.sources.robots import Guest

__all__ = ["Feed", "Discovery", "discover", "propose_selectors", "source_block"]

_FEED_TYPES = {
    "application/rss+xml",
    "application/atom+xml",
    "application/feed+json",
    "application/json",
    "application/rdf+xml",
}
_CSS_IDENT = re.compile(r"-?[_a-zA-Z][_a-zA-Z0-9-]*")
_NEXT_WORDS = re.compile(r"weiter|nächste|ältere|next|older|»|›", re.IGNORECASE)
_LABEL_CLASS = re.compile(r"label|kicker|dachzeile|rubrik|badge|tag", re.IGNORECASE)
_DATE_CLASS = re.compile(r"date|datum|time|zeit", re.IGNORECASE)
_SKIP = frozenset({"html", "head", "body", "script", "style", "noscript", "template", "svg"})
#: Fewer repetitions than this are no list of news.
_MIN_ITEMS = 3


@dataclass(frozen=True)
class Feed:
    """A feed a page advertises."""

    url: str
    title: str
    type: str


@dataclass
class Discovery:
    """What :func:`discover` found on a page."""

    url: str
    title: str
    feeds: list[Feed] = field(default_factory=list)
    selectors: SelectorSettings | None = None
    preview: list[Article] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _preview_newsletter() -> NewsletterSettings:
    return NewsletterSettings(
        id="discover",
        name="discover",
        sender="discover@localhost",
        impressum=Impressum("", "", "", ""),
        categories=(CategorySettings("allgemein", "Allgemein"),),
        sources=(),
        segments=(),
    )


async def discover(
    url: str,
    *,
    client: httpx.AsyncClient,
    guest: Guest,
    allow_private: bool = False,
    base_dir: Path = Path("."),
) -> Discovery:
    """Fetch ``url`` and find its feeds, else propose selectors for its items."""
    source = SourceSettings(
        name=url, url=url, default_category="allgemein", allow_private=allow_private
    )
    if _web_url(url, None) is None:
        raise SourceError(url, "not an http(s) URL")
    download = await guest.fetch(source, None, client=client, base_dir=base_dir)
    page_url = download.url or url
    tree = LexborHTMLParser(decode_html(download.data, download.content_type))
    title_node = tree.css_first("title")
    found = Discovery(page_url, " ".join((title_node.text() if title_node else "").split()))
    found.feeds = advertised_feeds(tree, page_url)
    if found.feeds:
        return found
    found.selectors = propose_selectors(tree)
    if found.selectors is None:
        found.warnings.append("no repeated structure with links and dates found on the page")
        return found
    proposal = SourceSettings(
        name=found.title or url,
        url=page_url,
        default_category="allgemein",
        kind="html",
        selectors=found.selectors,
    )
    try:
        page = parse_listing(
            download.data,
            proposal,
            _preview_newsletter(),
            page_url=page_url,
            content_type=download.content_type,
        )
    except SourceError as exc:
        found.warnings.append(exc.reason)
        return found
    found.preview = list(page.articles)
    found.warnings += page.warnings
    return found


def advertised_feeds(tree: LexborHTMLParser, page_url: str) -> list[Feed]:
    """The feeds named by the page's ``<link rel="alternate" type="…">`` elements."""
    feeds: list[Feed] = []
    for link in tree.css("link[rel][href]"):
        attributes = link.attributes
        rels = (attributes.get("rel") or "").lower().split()
        kind = (attributes.get("type") or "").split(";")[0].strip().lower()
        if "alternate" not in rels or kind not in _FEED_TYPES:
            continue
        url = _web_url(attributes.get("href") or "", page_url)
        if url is not None and all(f.url != url for f in feeds):
            feeds.append(Feed(url, " ".join((attributes.get("title") or "").split()), kind))
    return feeds


def _class_selector(node: LexborNode) -> str:
    classes = [c for c in (node.attributes.get("class") or "").split() if _CSS_IDENT.fullmatch(c)]
    return (node.tag or "") + "".join(f".{c}" for c in classes[:2])


def propose_selectors(tree: LexborHTMLParser) -> SelectorSettings | None:
    """Selectors for the page's most repeated element that holds a link and a date."""
    for hidden in tree.css("script, style, noscript, template"):
        hidden.decompose()
    body = tree.body
    if body is None:
        return None
    groups: Counter[str] = Counter()
    for node in body.traverse(include_text=False):
        if not node.tag or node.tag in _SKIP or node.tag.startswith(("-", "#")):
            continue
        groups[_class_selector(node)] += 1
    best: tuple[float, str] | None = None
    for selector, count in groups.items():
        if count < _MIN_ITEMS or selector.split(".")[0] in ("a", "span", "p", "img", "br"):
            continue
        nodes = tree.css(selector)
        with_parts = [n for n in nodes if n.css_first("a[href]") is not None and _has_date(n)]
        if len(with_parts) < _MIN_ITEMS:
            continue
        # Many items, nearly all with a link and a date, and a class to tell them apart.
        score = len(with_parts) * (len(with_parts) / len(nodes)) * (2 if "." in selector else 1)
        score *= 1 + min(len(_text(n)) for n in with_parts[:5]) / 200
        if best is None or score > best[0]:
            best = (score, selector)
    if best is None:
        return None
    item = best[1]
    sample = [n for n in tree.css(item) if n.css_first("a[href]") is not None][:_MIN_ITEMS]
    date = _date_selector(sample)
    return SelectorSettings(
        item=item,
        title=_common(sample, ["h1", "h2", "h3", "h4", "h5", "h6", "strong"]) or "a",
        date=date,
        exclude=date,
        teaser=_common(sample, _classed(sample, "p") + ["p"]),
        image=_common(sample, ["img"]),
        label=_common(sample, _classed(sample, "*", _LABEL_CLASS)),
        next=_next_selector(tree),
    )


def _text(node: LexborNode) -> str:
    return " ".join((node.text(deep=True, separator=" ") or "").split())


def _has_date(node: LexborNode) -> bool:
    from zoneinfo import ZoneInfo

    if node.css_first("time[datetime]") is not None:
        return True
    return find_date(_text(node), ZoneInfo("UTC")) is not None


def _common(sample: list[LexborNode], candidates: list[str]) -> str:
    """The first candidate selector that finds something in every sampled item."""
    for candidate in candidates:
        if all(n.css_first(candidate) is not None for n in sample):
            return candidate
    return ""


def _classed(
    sample: list[LexborNode], tag: str, pattern: re.Pattern[str] | None = None
) -> list[str]:
    """Class selectors of ``tag`` elements in the first item (matching ``pattern``)."""
    found = []
    for node in sample[0].css(tag):
        for name in (node.attributes.get("class") or "").split():
            if _CSS_IDENT.fullmatch(name) and (pattern is None or pattern.search(name)):
                found.append(f"{node.tag}.{name}")
    return found


def _date_selector(sample: list[LexborNode]) -> str:
    from zoneinfo import ZoneInfo

    if _common(sample, ["time[datetime]"]):
        return "time[datetime]"
    for candidate in _classed(sample, "*", _DATE_CLASS):
        if all(
            (n := s.css_first(candidate)) is not None and find_date(_text(n), ZoneInfo("UTC"))
            for s in sample
        ):
            return candidate
    return ""


def _next_selector(tree: LexborHTMLParser) -> str:
    if tree.css_first('a[rel~="next"][href]') is not None:
        return 'a[rel~="next"]'
    for link in tree.css("a[href]"):
        if _NEXT_WORDS.search(_text(link)):
            selector = _class_selector(link)
            if "." in selector and len(tree.css(selector)) == 1:
                return selector
    return ""


def source_block(
    name: str,
    url: str,
    *,
    selectors: SelectorSettings | None = None,
    default_category: str = "CATEGORY",
) -> str:
    """A ready-to-paste ``[[newsletters.sources]]`` block in TOML."""

    def value(text: str) -> str:
        return json.dumps(text, ensure_ascii=False)  # a JSON string is a TOML basic string

    lines = [
        "[[newsletters.sources]]",
        f"name = {value(name)}",
        f"url = {value(url)}",
        f"default_category = {value(default_category)}",
    ]
    if selectors is not None:
        lines.insert(2, 'kind = "html"')
        lines.append("[newsletters.sources.selectors]")
        parts = ("item", "title", "link", "date", "teaser", "exclude", "image", "label", "next")
        for part in parts:
            if selector := getattr(selectors, part):
                lines.append(f"{part} = {value(selector)}")
    return "\n".join(lines) + "\n"
