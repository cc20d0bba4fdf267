"""Source → Article: feeds (RSS, Atom, JSON Feed), exports and listing pages fetched
safely (SSRF checks, robots.txt, conditional GET) and turned into Articles; ``collect``
runs a newsletter's sources and stores what they carry."""

from digest.sources.dispatch import fetch_any
from digest.sources.feed import fetch_source, parse_feed, parse_feed_with_warnings
from digest.sources.fetch import (
    MAX_REDIRECTS,
    USER_AGENT,
    Download,
    FetchResult,
    FetchState,
    HostPacer,
    fetch_bytes,
    new_http_client,
)
from digest.sources.listing import parse_listing
from digest.sources.robots import Guest

__all__ = [
    "FetchState",
    "FetchResult",
    "fetch_source",
    "fetch_any",
    "parse_listing",
    "Guest",
    "HostPacer",
    "parse_feed",
    "parse_feed_with_warnings",
    "new_http_client",
    "fetch_bytes",
    "Download",
    "USER_AGENT",
    "MAX_REDIRECTS",
]
