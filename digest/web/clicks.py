"""``GET /r/<token>``: a counted article link, answered with a redirect to the article.

The token (:func:`~digest.audience.tokens.click_url`) names an issue, one of its articles
and the channel (the digest as mailed, or its archive page); every reader of the issue
has the same one. The answer is a 302 to the article's link (with the newsletter's UTM
parameters, as the digest had it) only when the token is validly signed and the article
was in that issue; anything else is the 404 page. No open redirect: the target comes
from the store, never from the request.

What is counted (:class:`ClickTally`), for a newsletter with ``click_counts`` on: per
issue, article, day (in the newsletter's time zone), channel and kind, a number. Nothing
about who: the store gets no address, user agent, cookie or subscriber. Link scanners
(mail security gateways that fetch every link of a message within seconds of delivery,
link previews, prefetching browsers) are counted apart, as ``scanner``, as far as they
can be told:

- a ``HEAD`` request, a prefetch (``Sec-Purpose``/``Purpose``/``X-Moz: prefetch``), no
  user agent, or one of :data:`SCANNER_AGENTS`;
- a burst: one client (address and user agent) asking for links to two or more articles
  of one issue with less than :data:`BURST_GAP` seconds between requests. A person
  opens one article at a time; a scanner fetches them all at once. The same link asked
  for again within the gap (a double click) counts once.

To tell a burst, the app remembers for about a second which client asked for what: in
this process's memory only, as a keyed hash (the key is random per process), and only
until the burst is settled. Counts are written every :data:`FLUSH_SECONDS` in one
transaction (and when the app stops), so a redirect never waits for the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import date, datetime

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from digest.audience.tokens import TokenError, article_ref, read_click_token
from digest.config import NewsletterSettings, Settings
from digest.issue.compose import link_with_utm
from digest.store import Store
from digest.store.clicks import READ, SCANNER, ClickKey, ClickTarget
from digest.web.logs import CLICK_PREFIX
from digest.web.pages import not_found, settings_of, store_of

__all__ = [
    "BURST_GAP",
    "CLICK_PREFIX",
    "FLUSH_SECONDS",
    "SCANNER_AGENTS",
    "ClickTally",
    "Clicks",
    "follow_click",
    "counting_clicks",
    "looks_like_a_scanner",
]

log = logging.getLogger("digest.web")

#: Requests of one client for one issue less than this many seconds apart form a burst.
BURST_GAP = 1.0
#: A burst is settled after this many seconds whatever follows.
LONGEST_BURST = 10.0
#: How often the counts go to the store.
FLUSH_SECONDS = 1.0
#: How long an issue's articles are remembered for its links, in seconds.
TARGETS_SECONDS = 300.0
TARGETS_KEPT = 1000

#: Parts of the user agents (lowercase) of mail gateways' link scanners, crawlers, link
#: previews and HTTP libraries: no person reading.
SCANNER_AGENTS = (
    "+http",  # a crawler's contact address, e.g. "(compatible; Googlebot/2.1; +http://…)"
    "bot/",
    "bot;",
    "crawler",
    "spider",
    "scanner",
    "headless",
    "preview",
    "existence discovery",  # Microsoft Office checking that a link exists
    "barracuda",
    "mimecast",
    "proofpoint",
    "symantec",
    "messagelabs",
    "trend micro",
    "trendmicro",
    "forcepoint",
    "sophos",
    "zscaler",
    "ironport",
    "fireeye",
    "checkpoint",
    "paloalto",
    "facebookexternalhit",
    "whatsapp",
    "slack",
    "discord",
    "telegram",
    "skype",
    "python",
    "curl/",
    "wget/",
    "go-http-client",
    "java/",
    "okhttp",
    "libwww",
    "httpclient",
    "apache-httpclient",
)

_PREFETCH = ("purpose", "sec-purpose", "x-moz", "x-purpose")


def looks_like_a_scanner(request: Request) -> bool:
    """A request no person made by following the link: HEAD, a prefetch, a known agent."""
    if request.method == "HEAD":
        return True
    headers = request.headers
    if any("prefetch" in headers.get(name, "").lower() for name in _PREFETCH):
        return True
    agent = headers.get("user-agent", "").lower()
    return not agent.strip() or any(part in agent for part in SCANNER_AGENTS)


@dataclass
class _Burst:
    issue_id: int
    channel: str
    day: date
    first: float
    last: float
    hits: dict[int, int] = field(default_factory=dict)  # article id → requests


class ClickTally:
    """Counts in memory until they are taken for the store; bursts settled on the way.

    ``client`` is an opaque key (see :meth:`Clicks.client_key`); it never leaves this
    object, and is forgotten when its burst is settled.
    """

    def __init__(self, gap: float = BURST_GAP, longest: float = LONGEST_BURST) -> None:
        self.gap = gap
        self.longest = longest
        self._lock = threading.Lock()
        self._bursts: dict[tuple[bytes, int, str], _Burst] = {}
        self._counts: dict[ClickKey, int] = {}

    def note(
        self,
        client: bytes,
        issue_id: int,
        article_id: int,
        channel: str,
        day: date,
        *,
        scanner: bool,
        at: float,
    ) -> None:
        """One request for an article's link, at ``at`` (a monotonic time)."""
        with self._lock:
            if scanner:
                self._add(ClickKey(issue_id, article_id, day, channel, SCANNER), 1)
                return
            key = (client, issue_id, channel)
            burst = self._bursts.get(key)
            if burst is not None and (
                at - burst.last >= self.gap or at - burst.first >= self.longest
            ):
                self._settle(self._bursts.pop(key))
                burst = None
            if burst is None:
                burst = self._bursts[key] = _Burst(issue_id, channel, day, at, at)
            burst.last = at
            burst.hits[article_id] = burst.hits.get(article_id, 0) + 1

    def take(self, at: float, *, everything: bool = False) -> dict[ClickKey, int]:
        """The counts so far, bursts that ended before ``at`` settled; they start afresh.

        With ``everything`` every burst is settled (when the app stops).
        """
        with self._lock:
            ended = [
                key
                for key, burst in self._bursts.items()
                if everything or at - burst.last >= self.gap or at - burst.first >= self.longest
            ]
            for key in ended:
                self._settle(self._bursts.pop(key))
            counts, self._counts = self._counts, {}
        return counts

    def give_back(self, counts: dict[ClickKey, int]) -> None:
        """Counts that could not be stored, to be taken again next time."""
        with self._lock:
            for key, n in counts.items():
                self._add(key, n)

    def _settle(self, burst: _Burst) -> None:
        if len(burst.hits) > 1:
            # Links to several articles of the issue at once: a scanner's requests.
            for article_id, n in burst.hits.items():
                self._add(
                    ClickKey(burst.issue_id, article_id, burst.day, burst.channel, SCANNER), n
                )
            return
        [article_id] = burst.hits
        self._add(ClickKey(burst.issue_id, article_id, burst.day, burst.channel, READ), 1)

    def _add(self, key: ClickKey, n: int) -> None:
        self._counts[key] = self._counts.get(key, 0) + n


@dataclass
class _Targets:
    until: float
    issue_id: int | None
    articles: dict[str, ClickTarget]


class Clicks:
    """What the app keeps for counted links: the tally and the issues' articles."""

    def __init__(self) -> None:
        self.tally = ClickTally()
        self._salt = secrets.token_bytes(16)
        self._targets: dict[tuple[str, str], _Targets] = {}

    def client_key(self, request: Request) -> bytes:
        """An opaque key of the client (address and user agent), random per process."""
        address = request.client.host if request.client else ""
        agent = request.headers.get("user-agent", "")
        return hashlib.blake2b(
            f"{address}\0{agent}".encode(errors="replace"), key=self._salt, digest_size=12
        ).digest()

    async def target(
        self, store: Store, newsletter: str, key: str, ref: str
    ) -> tuple[int, ClickTarget] | None:
        """The issue's id and the article ``ref`` names, if the issue carried it."""
        now = time.monotonic()
        found = self._targets.get((newsletter, key))
        if found is None or found.until < now:
            stored = await run_in_threadpool(store.click_targets, newsletter, key)
            if len(self._targets) >= TARGETS_KEPT:
                self._targets.clear()
            issue_id, articles = stored if stored is not None else (None, [])
            found = self._targets[newsletter, key] = _Targets(
                now + TARGETS_SECONDS, issue_id, {article_ref(a.uid): a for a in articles}
            )
        article = found.articles.get(ref)
        if found.issue_id is None or article is None:
            return None
        return found.issue_id, article


def _newsletter(settings: Settings, newsletter_id: str) -> NewsletterSettings | None:
    return next((n for n in settings.newsletters if n.id == newsletter_id), None)


async def follow_click(request: Request) -> Response:
    """``GET``/``HEAD /r/{token}``: 302 to the article, counted; 404 for anything else."""
    settings = settings_of(request)
    try:
        link = read_click_token(settings.secret_key, request.path_params["token"])
    except TokenError:
        return not_found(request)
    clicks: Clicks = request.app.state.clicks
    found = await clicks.target(store_of(request), link.newsletter, link.issue, link.article)
    if found is None:
        return not_found(request)
    issue_id, article = found
    newsletter = _newsletter(settings, link.newsletter)
    # The link as the digest had it; a newsletter no longer configured has no UTM to add.
    url = link_with_utm(article.link, newsletter.utm, link.issue) if newsletter else article.link
    if not url.lower().startswith(("https://", "http://")):
        return not_found(request)
    if newsletter is not None and newsletter.click_counts:
        clicks.tally.note(
            clicks.client_key(request),
            issue_id,
            article.article_id,
            link.channel,
            datetime.now(newsletter.zone).date(),
            scanner=looks_like_a_scanner(request),
            at=time.monotonic(),
        )
    return RedirectResponse(url, 302, headers={"Cache-Control": "no-store"})


async def _flush(store: Store, tally: ClickTally, *, everything: bool = False) -> None:
    counts = tally.take(time.monotonic(), everything=everything)
    if not counts:
        return
    try:
        await run_in_threadpool(store.add_clicks, counts)
    except Exception as exc:  # the database is away: keep them for the next try
        tally.give_back(counts)
        log.warning("click counts not stored, kept for the next try: %s", exc)


@contextlib.asynccontextmanager
async def counting_clicks(
    store: Store, clicks: Clicks, interval: float = FLUSH_SECONDS
) -> AsyncIterator[None]:
    """While the app serves: the counts go to the store every ``interval`` seconds, and
    what is left when it stops."""
    stop = asyncio.Event()

    async def flushing() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            await _flush(store, clicks.tally)

    task = asyncio.create_task(flushing())
    try:
        yield
    finally:
        stop.set()
        await task
        await _flush(store, clicks.tally, everything=True)
