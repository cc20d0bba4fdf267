"""Run a newsletter's sources, deduplicate and save what they carry.

A source that fails is reported (in the returned report, for the caller to show) naming
it and why; the others are still collected, and the failure is remembered in the store
beside the source's fetch state.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import httpx

from digest.config import NewsletterSettings, Settings, SourceSettings
from digest.core.errors import ConfigError, SourceError
from digest.sources import FetchResult, FetchState, Guest, fetch_any, new_http_client
from digest.store import Store

__all__ = [
    "LOCAL_HOST",
    "SourceReport",
    "CollectReport",
    "collect_newsletter",
    "source_host",
    "try_sources",
]

log = logging.getLogger("digest.sources.collect")

#: The host of sources read from files: they have no host to be polite to.
LOCAL_HOST = "local"


def source_host(source: SourceSettings) -> str:
    """The host a source is fetched from (as the per-host pacing names it), lower case;
    :data:`LOCAL_HOST` for a file."""
    parts = urlsplit(source.url)
    if parts.scheme.lower() in ("http", "https") and parts.hostname:
        return parts.hostname.lower()
    return LOCAL_HOST


@dataclass(frozen=True)
class SourceReport:
    """The outcome of one source: articles seen, or the reason it failed."""

    name: str
    articles: int = 0
    not_modified: bool = False
    error: str | None = None
    warnings: tuple[str, ...] = ()


@dataclass
class CollectReport:
    """What one collect run did for one newsletter."""

    newsletter: str
    sources: list[SourceReport] = field(default_factory=list)
    new: int = 0
    updated: int = 0

    @property
    def failed(self) -> list[SourceReport]:
        return [s for s in self.sources if s.error]


async def _fetch_one(
    settings: Settings,
    state: FetchState | None,
    newsletter: NewsletterSettings,
    source: SourceSettings,
    client: httpx.AsyncClient,
    guest: Guest,
    now: datetime,
    stored_summaries: Callable[[Sequence[str]], Mapping[str, str]] | None = None,
) -> FetchResult | SourceError:
    """One source fetched; its failure returned, not raised, so the others go on."""
    try:
        return await fetch_any(
            source,
            newsletter,
            state,
            client=client,
            base_dir=settings.base_dir,
            guest=guest,
            now=now,
            stored_summaries=stored_summaries,
        )
    except SourceError as exc:
        return exc


async def collect_newsletter(
    settings: Settings,
    store: Store,
    newsletter: NewsletterSettings,
    *,
    client: httpx.AsyncClient | None = None,
    now: datetime | None = None,
    sources: Sequence[SourceSettings] | None = None,
    guest: Guest | None = None,
    force: bool = False,
) -> CollectReport:
    """Fetch every source of ``newsletter`` (or only ``sources``, some of them)
    concurrently and save the articles.

    ``guest`` (its pacing and robots.txt rules) may be shared with other collect runs,
    so that sources of several newsletters on one host take turns too. An article the
    store has already keeps its stored teaser: its page is fetched once
    (``fetch_articles``). ``force`` fetches every source in full: no conditional GET,
    so a server answers 200 with the whole feed or page even when it has not changed,
    and article pages are fetched again.
    """
    now = now or datetime.now(UTC)
    chosen = list(newsletter.sources if sources is None else sources)
    report = CollectReport(newsletter.id)
    own_client = client is None
    client = client or new_http_client(settings.user_agent)
    guest = guest or Guest(settings.user_agent, settings.host_delay)

    def stored(uids: Sequence[str]) -> Mapping[str, str]:
        return store.stored_summaries(newsletter.id, uids)

    try:
        outcomes = await asyncio.gather(
            *(
                _fetch_one(
                    settings,
                    None if force else FetchState(*store.source_state(newsletter.id, source.name)),
                    newsletter,
                    source,
                    client,
                    guest,
                    now,
                    None if force else stored,
                )
                for source in chosen
            )
        )
    finally:
        if own_client:
            await client.aclose()
    for source, outcome in zip(chosen, outcomes, strict=True):
        if isinstance(outcome, SourceError):
            log.debug("source %r skipped: %s", source.name, outcome.reason)  # the caller says it
            store.save_source_state(
                newsletter.id,
                source.name,
                etag=None,
                last_modified=None,
                error=outcome.reason,
                now=now,
            )
            report.sources.append(SourceReport(source.name, error=outcome.reason))
            continue
        warnings = outcome.warnings
        gap = _gap_warning(newsletter, outcome, store.newest_published(newsletter.id, source.name))
        if gap:
            warnings = (*warnings, gap)
        for warning in warnings:
            log.debug("source %r: %s", source.name, warning)  # the caller says it
        new, updated = store.upsert_articles(newsletter.id, outcome.articles, now=now)
        report.new += new
        report.updated += updated
        store.save_source_state(
            newsletter.id,
            source.name,
            etag=outcome.state.etag,
            last_modified=outcome.state.last_modified,
            error=None,
            now=now,
        )
        report.sources.append(
            SourceReport(source.name, len(outcome.articles), outcome.not_modified, None, warnings)
        )
    return report


def _gap_warning(
    newsletter: NewsletterSettings, outcome: FetchResult, newest_stored: datetime | None
) -> str | None:
    """A warning when nothing the source carries now reaches back to what was stored.

    Feeds keep only their last items. If even the oldest one is newer than the newest
    stored from that source, items published in between may have left the feed unseen.
    """
    if newest_stored is None or outcome.not_modified or not outcome.articles:
        return None
    published = sorted(a.published.astimezone(UTC) for a in outcome.articles)
    newest_stored = newest_stored.astimezone(UTC)
    if published[0] <= newest_stored:
        return None
    # Collecting twice within the span the feed shows leaves a margin for a busy spell.
    span = published[-1] - published[0]
    every = max(1, int(span.total_seconds() // 120))
    now_every = newsletter.collect_every_minutes
    return (
        f"its oldest item (published {published[0]:%Y-%m-%d %H:%M} UTC) is newer than the "
        f"newest one stored from it (published {newest_stored:%Y-%m-%d %H:%M} UTC), so the "
        f"feed may have dropped items in between; its {len(published)} items span "
        f"{_duration(span)}: collect at least every {every} minutes "
        f"(collect_every_minutes of {newsletter.id!r} is "
        f"{now_every or '0, collecting only before composing'})"
    )


def _duration(span: timedelta) -> str:
    minutes = int(span.total_seconds() // 60)
    if minutes < 120:
        return f"{minutes} minutes"
    hours = minutes // 60
    return f"{hours} hours" if hours < 48 else f"{hours // 24} days"


async def try_sources(
    settings: Settings,
    newsletter: NewsletterSettings,
    source_name: str | None = None,
    *,
    now: datetime | None = None,
) -> list[tuple[SourceSettings, FetchResult | SourceError]]:
    """Fetch the sources of ``newsletter`` (or the one named) as collect does; store nothing.

    No fetch state is sent, so every source answers in full.
    """
    now = now or datetime.now(UTC)
    sources = list(newsletter.sources)
    if source_name is not None:
        sources = [s for s in sources if s.name == source_name]
        if not sources:
            known = ", ".join(repr(s.name) for s in newsletter.sources) or "none"
            raise ConfigError(
                f"{newsletter.id}.sources", f"no source {source_name!r} (known: {known})"
            )
    guest = Guest(settings.user_agent, settings.host_delay)

    async with new_http_client(settings.user_agent) as client:
        outcomes = await asyncio.gather(
            *(_fetch_one(settings, None, newsletter, s, client, guest, now) for s in sources)
        )
    return list(zip(sources, outcomes, strict=True))
