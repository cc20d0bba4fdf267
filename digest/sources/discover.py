"""Propose a source for a web page: the feeds it advertises, else selectors for its items.

:func:`discover` fetches the page as a source would be fetched (robots.txt, the
private-address rule, the size cap) and returns a :class:`Discovery`: the feeds named by
``<link rel="alternate">`` (the site's own before comment feeds), or, where there are
none, a ``kind = "html"`` proposal from :mod:`digest.sources.proposal`, with the
Articles those selectors read from the page as a preview; or, on a page without
repeated dated items, a note saying what it has instead.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from selectolax.lexbor import LexborHTMLParser

from digest.config import (
    CategorySettings,
    Impressum,
    NewsletterSettings,
    SelectorSettings,
    SourceSettings,
)
from digest.core.errors import SourceError
from digest.core.models import Article
from digest.sources.feed import _web_url
from digest.sources.listing import decode_html, parse_listing
from digest.sources.proposal import propose
from digest.sources.robots import Guest

__all__ = ["Feed", "Discovery", "discover", "feed_names", "source_block"]

_COMMENTS = re.compile(r"comment|kommentar", re.IGNORECASE)
_FEED_KINDS = {
    "application/rss+xml": "RSS",
    "application/atom+xml": "Atom",
    "application/feed+json": "JSON Feed",
    "application/json": "JSON Feed",
    "application/rdf+xml": "RDF",
}
_FEED_TYPES = frozenset(_FEED_KINDS)
# Why a fetch was refused: the address is not public (the private-address rule).
_NOT_PUBLIC = re.compile(
    r"\bis an? (?:unspecified|loopback|link-local|site-local|multicast|reserved|private|"
    r"non-public) address\b"
)


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
    try:
        # Robots.txt of the page and of every site a redirect leads to.
        download = await guest.fetch(source, None, client=client, base_dir=base_dir)
    except SourceError as exc:
        if allow_private or not _NOT_PUBLIC.search(exc.reason):
            raise
        raise SourceError(
            exc.source,
            f"{exc.reason}; for a page on this machine or the local network, run "
            "`digest sources discover --allow-private` and put `allow_private = true` in "
            "the source",
        ) from None
    page_url = download.url or url
    tree = LexborHTMLParser(decode_html(download.data, download.content_type))
    title_node = tree.css_first("title")
    found = Discovery(page_url, " ".join((title_node.text() if title_node else "").split()))
    found.feeds = advertised_feeds(tree, page_url)
    if found.feeds:
        return found
    proposal = propose(tree, page_url)
    found.selectors = proposal.selectors
    if found.selectors is None:
        found.warnings.append(proposal.note)
        return found
    proposed = SourceSettings(
        name=found.title or url,
        url=page_url,
        default_category="allgemein",
        kind="html",
        selectors=found.selectors,
    )
    try:
        page = parse_listing(
            download.data,
            proposed,
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
    # The site's own feeds first; feeds of comments (WordPress lists them first) after.
    return sorted(feeds, key=lambda f: bool(_COMMENTS.search(f"{f.title} {f.url}")))


def feed_names(feeds: list[Feed], fallback: str) -> list[str]:
    """A name for each feed (its title, else ``fallback``), no two alike."""
    names = [f.title or fallback for f in feeds]
    repeated = {n for n, count in Counter(names).items() if count > 1}
    names = [
        f"{n} ({_FEED_KINDS.get(f.type, f.type)})" if n in repeated else n
        for n, f in zip(names, feeds, strict=True)
    ]
    seen: Counter[str] = Counter()
    distinct = []
    for name in names:
        seen[name] += 1
        distinct.append(name if seen[name] == 1 else f"{name} {seen[name]}")
    return distinct


def source_block(
    name: str,
    url: str,
    *,
    selectors: SelectorSettings | None = None,
    default_category: str = "CATEGORY",
    allow_private: bool = False,
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
    if allow_private:
        lines.append("allow_private = true")
    if selectors is not None:
        lines.insert(2, 'kind = "html"')
        lines.append("[newsletters.sources.selectors]")
        parts = ("item", "title", "link", "date", "teaser", "exclude", "image", "label", "next")
        for part in parts:
            if selector := getattr(selectors, part):
                lines.append(f"{part} = {value(selector)}")
    return "\n".join(lines) + "\n"
