"""Teasers from article pages, for items that come without one (``fetch_articles = true``).

The teaser is the page's own description when it has one (``<meta name="description">``,
Open Graph, Twitter, JSON-LD ``description``), else the start of its main text as
trafilatura extracts it. Either way it is plain text, escaped into the summary, so the
page's markup never reaches an email; compose cuts it as it cuts every teaser.
"""

from __future__ import annotations

import asyncio
import dataclasses
import html
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from selectolax.lexbor import LexborHTMLParser

from digest.config import SourceSettings
from digest.core.errors import SourceError
from digest.core.limits import MAX_SUMMARY
from digest.core.models import Article
from digest.sources.bounds import shorten
from digest.sources.listing import decode_html
from digest.sources.robots import Guest
from digest.sources.worker import WorkerFailed, WorkerTimeout, run_in_worker

__all__ = ["teaser_from_page", "add_teasers", "MAX_ARTICLE_PAGES"]

#: Most article pages fetched for one source in one run.
MAX_ARTICLE_PAGES = 20
#: Longest JSON-LD block read; larger ones are skipped.
_MAX_JSON_LD = 200_000
_SENTENCE_END = (".", "!", "?", "…", ":", '"', "“", "”", "»", "«", ")")
_META = (
    'meta[name="description"]',
    'meta[property="og:description"]',
    'meta[name="og:description"]',
    'meta[name="twitter:description"]',
)


def teaser_from_page(data: bytes, content_type: str | None = None) -> str:
    """The description of an article page as plain text, else its main text; may be ''."""
    text = decode_html(data, content_type)
    tree = LexborHTMLParser(text)
    for selector in _META:
        node = tree.css_first(selector)
        if node is not None and (value := _one_line(node.attributes.get("content") or "")):
            return shorten(value, MAX_SUMMARY)
    for script in tree.css('script[type="application/ld+json"]'):
        raw = script.text(deep=True) or ""
        if len(raw) > _MAX_JSON_LD:
            continue
        try:
            document = json.loads(raw)
        except (ValueError, RecursionError):
            continue
        for description in _descriptions(document):
            if value := _one_line(html.unescape(description)):
                return shorten(value, MAX_SUMMARY)
    import trafilatura  # imported where used: it takes a third of a second to load

    main = trafilatura.extract(text, include_comments=False, include_tables=False) or ""
    lines = [line for line in main.splitlines() if line.strip()]
    # Headings (the headline above all) are the lines that end in no punctuation.
    while len(lines) > 1 and not lines[0].rstrip().endswith(_SENTENCE_END):
        lines.pop(0)
    return shorten(_one_line(" ".join(lines)), MAX_SUMMARY)


def _descriptions(value: Any, depth: int = 0) -> Iterator[str]:
    if depth > 5:
        return
    if isinstance(value, list):
        for entry in value:
            yield from _descriptions(entry, depth + 1)
    elif isinstance(value, dict):
        if isinstance(value.get("description"), str):
            yield value["description"]
        yield from _descriptions(value.get("@graph"), depth + 1)


def _one_line(value: str) -> str:
    return " ".join(value.split())


def _teaser_in_worker(data: bytes, content_type: str | None) -> str:
    return teaser_from_page(data, content_type)


async def add_teasers(
    articles: tuple[Article, ...],
    source: SourceSettings,
    *,
    client: httpx.AsyncClient,
    base_dir: Path,
    guest: Guest,
    now: datetime,
    deadline: float | None = None,
    stored: Callable[[Sequence[str]], Mapping[str, str]] | None = None,
) -> tuple[tuple[Article, ...], tuple[str, ...]]:
    """``articles``, those without a teaser given one from their page; and notes on failures.

    An article the store has already (``stored`` gives the stored summary of each uid
    it has) keeps the teaser stored with it, or none: its page was fetched by an earlier
    run, and a site sees each article page once. Of the others, only articles newer
    than ``source.max_age_days`` are looked at, at most :data:`MAX_ARTICLE_PAGES` of
    them; a page that cannot be fetched leaves its article as it was and is counted in
    the notes. Pages not read by ``deadline`` (in the event loop's clock) are left as
    they are too, and a note says how many.
    """
    cutoff = now - timedelta(days=source.max_age_days)
    bare = [i for i, a in enumerate(articles) if not a.summary.strip() and not a.content.strip()]
    known = stored([articles[i].uid for i in bare]) if stored is not None and bare else {}
    result = list(articles)
    for i in bare:
        if known.get(articles[i].uid):
            result[i] = dataclasses.replace(articles[i], summary=known[articles[i].uid])
    wanted = [i for i in bare if articles[i].uid not in known and articles[i].published >= cutoff][
        :MAX_ARTICLE_PAGES
    ]
    problems: list[str] = []
    notes: list[str] = []
    for done, index in enumerate(wanted):
        article = articles[index]
        page_source = dataclasses.replace(source, url=article.link)
        try:
            async with asyncio.timeout_at(deadline):
                download = await guest.fetch(page_source, None, client=client, base_dir=base_dir)
                teaser = await run_in_worker(
                    _teaser_in_worker, (download.data, download.content_type), source.timeout
                )
        except TimeoutError:
            left = len(wanted) - done
            notes.append(
                f"the source's time ({source.time_limit:g} s) ran out with {left} article "
                f"{'page' if left == 1 else 'pages'} not read; their teasers stay empty"
            )
            break
        except SourceError as exc:
            problems.append(exc.reason)
            continue
        except (WorkerTimeout, WorkerFailed):
            problems.append(f"{article.link} could not be read in time")
            continue
        if teaser:
            result[index] = dataclasses.replace(article, summary=html.escape(teaser))
        else:
            problems.append(f"{article.link} has no description or main text")
    if problems:
        n = len(problems)
        pages = "page" if n == 1 else "pages"
        notes.insert(0, f"{n} article {pages} gave no teaser (first: {problems[0]})")
    return tuple(result), tuple(notes)
