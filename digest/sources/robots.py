"""Being a good guest on sites that publish no feed: robots.txt and one request at a time.

Listing pages and article pages are fetched the way a crawler fetches them, so they
follow the site's robots.txt (RFC 9309) for the configured user agent, and its
Crawl-delay. Feeds are published for programs to read and are fetched like a feed
reader fetches them, without robots.txt; every fetch shares the per-host pacing.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
from protego import Protego

from digest.config import SourceSettings
from digest.core.errors import SourceError, SourceStatusError
from digest.sources.fetch import USER_AGENT, Download, FetchState, HostPacer, fetch_bytes

__all__ = ["Guest", "ROBOTS_MAX_BYTES", "MAX_CRAWL_DELAY"]

#: The first 500 KiB of a robots.txt are read, the least RFC 9309 asks a crawler to
#: parse; the rest of a longer file is left out.
ROBOTS_MAX_BYTES = 500 * 1024
#: A longer Crawl-delay is honoured as this many seconds.
MAX_CRAWL_DELAY = 60.0


class Guest:
    """The manners of one collect run: its user agent, pacing and robots.txt rules."""

    def __init__(self, user_agent: str = USER_AGENT, delay: float = 0.0) -> None:
        self.user_agent = user_agent
        self.pacer = HostPacer(delay)
        self._rules: dict[str, Protego | None] = {}  # origin -> rules; None: allow all

    async def check(
        self, url: str, source: SourceSettings, *, client: httpx.AsyncClient, base_dir: Path
    ) -> None:
        """Raise a SourceError if robots.txt forbids ``url`` to this user agent.

        Local paths have no robots.txt. A robots.txt that is missing (4xx) allows all; one
        that cannot be fetched (5xx, network) forbids all, as RFC 9309 says.
        """
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("http", "https"):
            return
        origin = urlunsplit((parts.scheme.lower(), parts.netloc.lower(), "", "", ""))
        if origin not in self._rules:
            self._rules[origin] = await self._load(origin, source, client, base_dir)
        rules = self._rules[origin]
        if rules is None:
            return
        delay = rules.crawl_delay(self.user_agent)
        if delay:
            self.pacer.slow_down(parts.hostname or "", min(float(delay), MAX_CRAWL_DELAY))
        if not rules.can_fetch(url, self.user_agent):
            raise SourceError(source.name, f"robots.txt of {origin} does not allow {url}")

    async def fetch(
        self,
        source: SourceSettings,
        state: FetchState | None,
        *,
        client: httpx.AsyncClient,
        base_dir: Path,
    ) -> Download:
        """``source.url`` fetched as a crawler fetches it: if robots.txt allows it, and
        each URL a redirect leads to only if the robots.txt of that URL's site allows
        it too (a SourceError otherwise); at the pace of :attr:`pacer`."""

        async def allowed(url: str) -> None:
            await self.check(url, source, client=client, base_dir=base_dir)

        await allowed(source.url)
        return await fetch_bytes(
            source, state, client=client, base_dir=base_dir, pacer=self.pacer, check=allowed
        )

    async def _load(
        self, origin: str, source: SourceSettings, client: httpx.AsyncClient, base_dir: Path
    ) -> Protego | None:
        robots = dataclasses.replace(source, url=f"{origin}/robots.txt", max_bytes=ROBOTS_MAX_BYTES)
        try:
            download = await fetch_bytes(
                robots, None, client=client, base_dir=base_dir, pacer=self.pacer, truncate=True
            )
        except SourceStatusError as exc:
            if 400 <= exc.status < 500:
                return None
            reason = f"robots.txt of {origin} unavailable ({exc.reason}), so nothing is fetched"
            raise SourceError(source.name, reason) from None
        except SourceError as exc:
            reason = f"robots.txt of {origin} unavailable ({exc.reason}), so nothing is fetched"
            raise SourceError(source.name, reason) from None
        data = download.data
        if download.truncated:  # a line cut in the middle would be another rule
            data = data[: data.rfind(b"\n") + 1]
        return Protego.parse(data.decode("utf-8", errors="replace"))
