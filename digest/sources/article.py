"""Teasers from article pages, for items that come without one (``fetch_articles = true``).

A page offers several descriptions (meta, Open Graph, Twitter, microdata, JSON-LD) and
its main text; :mod:`digest.sources.describe` reads them and picks the first that holds
up. Pages of one source are read together, so a text several of its articles carry (the
site's tagline) is passed over. The teaser is plain text, cut to the newsletter's
``teaser_length`` as compose cuts it (whole sentences where they fit) and escaped into
the summary, so the page's markup never reaches an email and no more is stored than is
shown.
"""

from __future__ import annotations

import asyncio
import dataclasses
import html
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path

import httpx

from digest.config import SourceSettings
from digest.core.errors import SourceError
from digest.core.limits import MAX_SUMMARY
from digest.core.models import Article
from digest.core.sentences import cut_text
from digest.sources.describe import Described, choose, describe_page, text_key
from digest.sources.robots import Guest
from digest.sources.worker import WorkerFailed, WorkerTimeout, run_in_worker

__all__ = ["teaser_from_page", "add_teasers", "MAX_ARTICLE_PAGES"]

#: Most article pages fetched for one source in one run.
MAX_ARTICLE_PAGES = 20


def teaser_from_page(
    data: bytes, content_type: str | None = None, limit: int = MAX_SUMMARY, title: str = ""
) -> str:
    """The teaser an article page gives on its own, as plain text of at most ``limit``."""
    return cut_text(choose(describe_page(data, content_type, limit), titles=[title]), limit)


def _describe_in_worker(data: bytes, content_type: str | None, room: int) -> Described:
    return describe_page(data, content_type, room)


async def add_teasers(
    articles: tuple[Article, ...],
    source: SourceSettings,
    *,
    client: httpx.AsyncClient,
    base_dir: Path,
    guest: Guest,
    now: datetime,
    deadline: float | None = None,
    teaser_length: int = MAX_SUMMARY,
    stored: Callable[[Sequence[str]], Mapping[str, str]] | None = None,
) -> tuple[tuple[Article, ...], tuple[str, ...]]:
    """``articles``, those without a teaser given one from their page; and notes on failures.

    An article the store has already (``stored`` gives the stored summary of each uid
    it has) keeps the teaser stored with it, or none: its page was fetched by an earlier
    run, and a site sees each article page once. Of the others, only articles newer
    than ``source.max_age_days`` are looked at, at most :data:`MAX_ARTICLE_PAGES` of
    them; a page that cannot be fetched leaves its article as
    it was and is counted in the notes. Pages not read by ``deadline`` (in the event
    loop's clock) are left as they are too, and a note says how many. A teaser is at
    most ``teaser_length`` characters: what the newsletter shows.
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
    pages, problems, notes = await _read_pages(
        [articles[i] for i in wanted],
        source,
        client=client,
        base_dir=base_dir,
        guest=guest,
        deadline=deadline,
        room=teaser_length,
    )
    # A text on the pages of several articles is the site's, not the article's.
    on_pages: Counter[str] = Counter()
    for page in pages.values():
        on_pages.update({text_key(text) for _, text in page.candidates})
    shared = {key for key, n in on_pages.items() if n > 1}
    for index in wanted:
        article = articles[index]
        if (described := pages.get(article.link)) is None:
            continue
        teaser = cut_text(choose(described, shared, [article.title]), teaser_length)
        if teaser:
            result[index] = dataclasses.replace(article, summary=html.escape(teaser))
        else:
            problems.append(f"{article.link} has no description or main text that holds up")
    if problems:
        n = len(problems)
        notes.insert(
            0, f"{n} article {'page' if n == 1 else 'pages'} gave no teaser (first: {problems[0]})"
        )
    return tuple(result), tuple(notes)


async def _read_pages(
    articles: list[Article],
    source: SourceSettings,
    *,
    client: httpx.AsyncClient,
    base_dir: Path,
    guest: Guest,
    deadline: float | None,
    room: int,
) -> tuple[dict[str, Described], list[str], list[str]]:
    """What the pages of ``articles`` offer, by link; the problems met; notes on the time."""
    pages: dict[str, Described] = {}
    problems: list[str] = []
    notes: list[str] = []
    for done, article in enumerate(articles):
        if article.link in pages:
            continue
        page_source = dataclasses.replace(source, url=article.link)
        try:
            async with asyncio.timeout_at(deadline):
                # Robots.txt of the page and of every site a redirect leads to.
                download = await guest.fetch(page_source, None, client=client, base_dir=base_dir)
                pages[article.link] = await run_in_worker(
                    _describe_in_worker,
                    (download.data, download.content_type, room),
                    source.timeout,
                )
        except TimeoutError:
            left = len(articles) - done
            notes.append(
                f"the source's time ({source.time_limit:g} s) ran out with {left} article "
                f"{'page' if left == 1 else 'pages'} not read; their teasers stay empty"
            )
            break
        except SourceError as exc:
            problems.append(exc.reason)
        except (WorkerTimeout, WorkerFailed):
            problems.append(f"{article.link} could not be read in time")
    return pages, problems, notes
