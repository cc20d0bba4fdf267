"""Fetch one source of any kind: a feed or a listing page, with article teasers if asked.

Each fetch is bounded by the source's ``timeout``; the source as a whole by its
``time_limit`` (a few times that), so twenty article pages cannot make it take twenty
timeouts. Whatever is not read by then is left out with a warning.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path

import httpx

from digest.config import NewsletterSettings, SourceSettings
from digest.sources.article import add_teasers
from digest.sources.feed import fetch_source
from digest.sources.fetch import FetchResult, FetchState
from digest.sources.listing import fetch_listing
from digest.sources.robots import Guest

__all__ = ["fetch_any"]


async def fetch_any(
    source: SourceSettings,
    newsletter: NewsletterSettings,
    state: FetchState | None,
    *,
    client: httpx.AsyncClient,
    base_dir: Path,
    guest: Guest,
    now: datetime,
    stored_summaries: Callable[[Sequence[str]], Mapping[str, str]] | None = None,
) -> FetchResult:
    """The Articles of ``source`` by its ``kind``; a failure is a SourceError.

    ``stored_summaries`` gives the stored summary of each uid the store has: an article
    it has is given that summary, and its page is not fetched again (``fetch_articles``).
    """
    deadline = asyncio.get_running_loop().time() + source.time_limit
    if source.kind == "html":
        result = await fetch_listing(
            source,
            newsletter,
            state,
            client=client,
            base_dir=base_dir,
            guest=guest,
            now=now,
            deadline=deadline,
        )
    else:
        result = await fetch_source(
            source, newsletter, state, client=client, base_dir=base_dir, pacer=guest.pacer
        )
    if not source.fetch_articles or not result.articles:
        return result
    articles, notes = await add_teasers(
        result.articles,
        source,
        client=client,
        base_dir=base_dir,
        guest=guest,
        now=now,
        deadline=deadline,
        teaser_length=newsletter.teaser_length,
        stored=stored_summaries,
    )
    return dataclasses.replace(result, articles=articles, warnings=result.warnings + notes)
