"""Fetch the bytes of a source: over HTTP(S) with a size cap and a conditional GET, or from disk.

Every failure is a :class:`~digest.core.errors.SourceError` whose reason is one short sentence.
HTTP(S) fetches reach public addresses only, unless the source has ``allow_private``
(see :mod:`digest.sources.addresses`). Local paths are no network fetch: the operator
names them in the configuration, and nothing a feed says can make digest read a file.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

import httpx

from digest.config import DEFAULT_USER_AGENT, SourceSettings
from digest.core.errors import SourceError, SourceStatusError
from digest.core.models import Article
from digest.sources.addresses import allowing_private, guarded_transport, refusal

__all__ = [
    "USER_AGENT",
    "MAX_REDIRECTS",
    "FetchState",
    "FetchResult",
    "Download",
    "HostPacer",
    "new_http_client",
    "fetch_bytes",
]

USER_AGENT = DEFAULT_USER_AGENT
MAX_REDIRECTS = 5


@dataclass(frozen=True)
class FetchState:
    """The validators of a source's last response, kept by the caller between runs."""

    etag: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True)
class FetchResult:
    """What one fetch of a source produced.

    ``not_modified`` means the server answered 304: ``articles`` is empty and ``state``
    is the one passed in. ``warnings`` are non-fatal notes for the operator.
    """

    articles: tuple[Article, ...]
    state: FetchState
    not_modified: bool = False
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Download:
    """The raw body of a source; ``url`` is the final URL after redirects (None on disk).

    ``truncated``: the body went on beyond ``max_bytes`` and ``data`` is its start (only
    when the fetch was asked to ``truncate``)."""

    data: bytes
    state: FetchState
    url: str | None = None
    content_type: str | None = None
    not_modified: bool = False
    truncated: bool = False


class HostPacer:
    """One request at a time per host, at least ``delay`` seconds apart.

    Shared by every fetch of one collect run, so sources on the same site (and the
    article pages and robots.txt fetched for them) take turns instead of arriving together.
    """

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self._locks: dict[str, asyncio.Lock] = {}
        self._last: dict[str, float] = {}
        self._host_delay: dict[str, float] = {}

    def slow_down(self, host: str, delay: float) -> None:
        """Wait at least ``delay`` seconds between requests to ``host`` (a Crawl-delay)."""
        self._host_delay[host] = max(self._host_delay.get(host, 0.0), delay)

    @contextlib.asynccontextmanager
    async def turn(self, host: str) -> AsyncIterator[None]:
        """Hold ``host`` for one request (and its body), after the delay since the last."""
        lock = self._locks.setdefault(host, asyncio.Lock())
        async with lock:
            loop = asyncio.get_running_loop()
            delay = max(self.delay, self._host_delay.get(host, 0.0))
            if host in self._last:
                wait = self._last[host] + delay - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
            try:
                yield
            finally:
                self._last[host] = loop.time()


def new_http_client(user_agent: str = USER_AGENT) -> httpx.AsyncClient:
    """An HTTP client with digest's User-Agent and defaults for fetching sources.

    :func:`fetch_bytes` follows redirects itself (at most ``MAX_REDIRECTS``), sets the
    timeout per source and checks each hop's addresses, so any client works; this one
    also connects only to addresses it checked itself, so DNS that changes its answer
    between the check and the connection cannot lead it to a private address.
    """
    limits = httpx.Limits(max_connections=10, max_keepalive_connections=5)
    return httpx.AsyncClient(
        headers={"User-Agent": user_agent},
        timeout=httpx.Timeout(20.0, connect=10.0),
        follow_redirects=False,
        max_redirects=MAX_REDIRECTS,
        limits=limits,
        transport=guarded_transport(limits),
    )


async def fetch_bytes(
    source: SourceSettings,
    state: FetchState | None,
    *,
    client: httpx.AsyncClient,
    base_dir: Path,
    pacer: HostPacer | None = None,
    check: Callable[[str], Awaitable[None]] | None = None,
    truncate: bool = False,
) -> Download:
    """Fetch ``source.url`` over HTTP(S), or read it from disk when it is a path or file URL.

    ``source.timeout`` bounds the whole HTTP exchange, redirects included; the body is
    read up to ``source.max_bytes`` and aborted beyond that, whatever Content-Length says.
    With a ``pacer``, each request (each redirect hop too) waits for its host's turn.
    ``check`` is awaited with each URL a redirect leads to before it is requested (the
    robots.txt of its site, see :meth:`digest.sources.robots.Guest.fetch`); it raises to
    refuse it. With ``truncate`` an HTTP body longer than ``source.max_bytes`` is cut
    there (``Download.truncated``) instead of failing.
    """
    scheme = urlsplit(source.url).scheme.lower()
    if scheme in ("http", "https"):
        return await _fetch_http(
            source, state or FetchState(), client, pacer or HostPacer(), check, truncate
        )
    path = _local_path(source, base_dir)
    data = await asyncio.to_thread(_read_file, source, path)
    return Download(data=data, state=FetchState())


async def _fetch_http(
    source: SourceSettings,
    state: FetchState,
    client: httpx.AsyncClient,
    pacer: HostPacer,
    check: Callable[[str], Awaitable[None]] | None,
    truncate: bool,
) -> Download:
    try:
        async with asyncio.timeout(source.timeout):
            with allowing_private(source.allow_private):
                return await _get(source, state, client, pacer, check, truncate)
    except (TimeoutError, httpx.TimeoutException):
        raise SourceError(source.name, f"timed out after {source.timeout:g} s") from None
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise SourceError(source.name, f"cannot fetch {source.url}: {_describe(exc)}") from exc


async def _get(
    source: SourceSettings,
    state: FetchState,
    client: httpx.AsyncClient,
    pacer: HostPacer,
    check: Callable[[str], Awaitable[None]] | None,
    truncate: bool = False,
) -> Download:
    headers = {}
    if state.etag:
        headers["If-None-Match"] = state.etag
    if state.last_modified:
        headers["If-Modified-Since"] = state.last_modified
    url = httpx.URL(source.url)
    for hop in range(MAX_REDIRECTS + 1):
        if url.scheme not in ("http", "https"):
            raise SourceError(source.name, f"redirect to a URL that is not http(s): {url}")
        if (problem := await refusal(url)) is not None:
            raise SourceError(source.name, f"refused to fetch {url}: {problem}")
        if hop and check is not None:
            await check(str(url))
        async with (
            pacer.turn(url.host),
            client.stream(
                "GET", url, headers=headers, timeout=source.timeout, follow_redirects=False
            ) as response,
        ):
            if response.has_redirect_location:  # (is_redirect is true for any 3xx, 304 too)
                url = url.join(response.headers["location"])
                continue
            status = response.status_code
            if status == 304 and headers:
                return Download(data=b"", state=state, url=str(url), not_modified=True)
            if not 200 <= status < 300:
                what = f"HTTP {status} {httpx.codes.get_reason_phrase(status)}".rstrip()
                raise SourceStatusError(source.name, f"{what} from {url}", status)
            data, truncated = await _read_capped(response, source, truncate)
            return Download(
                data=data,
                state=FetchState(
                    response.headers.get("etag"), response.headers.get("last-modified")
                ),
                url=str(url),
                content_type=response.headers.get("content-type"),
                truncated=truncated,
            )
    raise SourceError(source.name, f"more than {MAX_REDIRECTS} redirects from {source.url}")


async def _read_capped(
    response: httpx.Response, source: SourceSettings, truncate: bool = False
) -> tuple[bytes, bool]:
    """The body up to ``source.max_bytes``, and whether it went on beyond (``truncate``);
    without ``truncate`` a longer body is a SourceError."""
    declared = response.headers.get("content-length", "")
    encoded = response.headers.get("content-encoding", "identity") != "identity"
    if declared.isdigit() and int(declared) > source.max_bytes and not encoded and not truncate:
        raise _too_large(source)
    chunks: list[bytes] = []
    size = 0
    # aiter_bytes() yields decoded bytes, so the cap also holds for a compressed body.
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        chunks.append(chunk)
        if size > source.max_bytes:
            if not truncate:
                raise _too_large(source)
            return b"".join(chunks)[: source.max_bytes], True
    return b"".join(chunks), False


def _local_path(source: SourceSettings, base_dir: Path) -> Path:
    parts = urlsplit(source.url)
    if parts.scheme.lower() == "file":
        if parts.netloc not in ("", "localhost"):
            raise SourceError(source.name, f"file URL with a host is not supported: {source.url}")
        path = Path(url2pathname(parts.path))
    elif len(parts.scheme) > 1:  # one letter is a Windows drive
        raise SourceError(source.name, f"unsupported URL scheme {parts.scheme!r} in {source.url}")
    else:
        path = Path(source.url)
    return path if path.is_absolute() else base_dir / path


def _read_file(source: SourceSettings, path: Path) -> bytes:
    try:
        with path.open("rb") as fh:
            data = fh.read(source.max_bytes + 1)
    except FileNotFoundError:
        raise SourceError(source.name, f"no such file: {path}") from None
    except IsADirectoryError:
        raise SourceError(source.name, f"{path} is a directory, not a file") from None
    except OSError as exc:
        raise SourceError(source.name, f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > source.max_bytes:
        raise SourceError(source.name, f"file larger than {source.max_bytes} bytes: {path}")
    return data


def _too_large(source: SourceSettings) -> SourceError:
    return SourceError(source.name, f"response larger than {source.max_bytes} bytes")


def _describe(exc: Exception) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]
