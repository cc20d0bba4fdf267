"""Sources of articles: each module turns the bytes of one kind of source into Articles."""

from digest.sources.feed import fetch_source, parse_feed, parse_feed_with_warnings
from digest.sources.fetch import (
    MAX_REDIRECTS,
    USER_AGENT,
    Download,
    FetchResult,
    FetchState,
    fetch_bytes,
    new_http_client,
)

__all__ = [
    "FetchState",
    "FetchResult",
    "fetch_source",
    "parse_feed",
    "parse_feed_with_warnings",
    "new_http_client",
    "fetch_bytes",
    "Download",
    "USER_AGENT",
    "MAX_REDIRECTS",
]
