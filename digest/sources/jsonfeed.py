"""JSON Feed 1.0 and 1.1 (https://jsonfeed.org), which feedparser 6.0 does not read.

This module knows the format: which document is a JSON Feed, where each value sits and
which types are allowed. It returns one :class:`JsonFeedItem` per item with its values
as given; cleaning them (plain-text titles, author names, sanitized HTML) and mapping
them to Articles is the same for every feed format and happens in
:mod:`digest.sources.feed`.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from digest.core.errors import SourceError
from digest.core.models import Image

__all__ = ["JsonFeedItem", "is_json_feed", "read_json_feed"]

_VERSION_PREFIX = "https://jsonfeed.org/version/"


@dataclass
class JsonFeedItem:
    """One item of a JSON Feed, each value checked for its type but not cleaned."""

    uid: str = ""
    link: str = ""
    title: str = ""  # as given; feeds put markup and entities into it
    published: datetime | None = None
    updated: datetime | None = None
    author: str = ""  # the first author's name as given
    tags: list[str] = field(default_factory=list)
    label: str = ""  # from the "_digest" extension object
    summary: str = ""  # HTML (the plain-text summary, escaped)
    content: str = ""  # HTML (content_html, else content_text escaped)
    image: Image | None = None


def is_json_feed(data: bytes, content_type: str | None) -> bool:
    """Whether ``data`` is to be read as JSON: by its first character, else its media type."""
    first = data.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    if first in (b"{", b"<"):
        return first == b"{"
    return (content_type or "").partition(";")[0].strip().lower().endswith("json")


def read_json_feed(
    data: bytes, source_name: str
) -> tuple[list[JsonFeedItem], str | None, list[str]]:
    """The items, home page URL and non-fatal notes of a JSON Feed document.

    A document that is not a JSON Feed is a :class:`~digest.core.errors.SourceError`; items
    that are not JSON objects are skipped and counted in the notes.
    """
    try:
        document = json.loads(data)
    except json.JSONDecodeError as exc:
        reason = f"invalid JSON at line {exc.lineno} ({exc.msg})"
        raise SourceError(source_name, f"not a feed: {reason}") from None
    except (ValueError, RecursionError):  # not UTF-8/16/32, or nested absurdly deep
        raise SourceError(source_name, "not a feed: JSON that cannot be decoded") from None
    version = document.get("version") if isinstance(document, dict) else None
    if not isinstance(version, str) or not version.startswith(_VERSION_PREFIX):
        raise SourceError(source_name, "not a feed: JSON without a JSON Feed version")
    items = document.get("items")
    if not isinstance(items, list):
        raise SourceError(source_name, "not a feed: JSON Feed without a list of items")
    home = _str(document.get("home_page_url")) or _str(document.get("feed_url")) or None
    entries = _dicts(items)
    bad = len(items) - len(entries)
    notes = [f"{bad} {'item' if bad == 1 else 'items'} that are not objects skipped"] if bad else []
    return [_item(entry) for entry in entries], home, notes


def _item(item: dict[str, Any]) -> JsonFeedItem:
    extra = item.get("_digest")
    extra = extra if isinstance(extra, dict) else {}
    uid = item.get("id")
    authors = _dicts(item.get("authors")) or _dicts([item.get("author")])
    tags = item.get("tags")
    image = _str(item.get("image"))
    return JsonFeedItem(
        # JSON Feed: a reader must coerce a numeric id to a string.
        uid=str(uid).strip() if isinstance(uid, str | int) and not isinstance(uid, bool) else "",
        link=_str(item.get("url")) or _str(item.get("external_url")),
        title=_str(item.get("title")),
        published=_from_iso(item.get("date_published")),
        updated=_from_iso(item.get("date_modified")),
        author=_str(authors[0].get("name")) if authors else "",
        tags=[tag for tag in tags if isinstance(tag, str)] if isinstance(tags, list) else [],
        label=_str(extra.get("label")),
        summary=html.escape(_str(item.get("summary"))),
        content=_str(item.get("content_html")) or html.escape(_str(item.get("content_text"))),
        image=Image(image, _str(extra.get("image_alt"))) if image else None,
    )


def _from_iso(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
        return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        return None


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []
