"""The plain values that flow through digest: Source → Article → Issue → Variant → Message.

Everything here is a frozen dataclass with no I/O. Times are always timezone-aware;
the store keeps them in UTC.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

__all__ = [
    "Image",
    "Article",
    "IssueItem",
    "Section",
    "Issue",
    "IssueEdits",
    "Subscriber",
    "Rule",
    "Recipient",
    "Variant",
    "Message",
    "DeliveryState",
]


@dataclass(frozen=True)
class Image:
    """An article's picture: absolute URL and the text that describes it."""

    url: str
    alt: str = ""


@dataclass(frozen=True)
class Article:
    """One article as collected from a source, deduplicated by ``uid`` per newsletter.

    ``summary`` and ``content`` hold sanitized HTML (nh3); ``uid`` is the item's GUID,
    else its link. ``region`` comes from a "Region: Headline" prefix or a category.
    """

    uid: str
    source: str
    title: str
    link: str
    published: datetime
    category: str
    region: str | None = None
    author: str | None = None
    summary: str = ""
    content: str = ""
    image: Image | None = None
    label: str | None = None
    updated: datetime | None = None


@dataclass(frozen=True)
class IssueItem:
    """One article as it appears in an issue: with its teaser and the "mehr…" URL."""

    article: Article
    teaser: str
    url: str


@dataclass(frozen=True)
class Section:
    """One category of an issue: its items in the editors' order (pins, ranks, newest).

    ``items`` are the first ``max_per_category`` of the category, what a reader with every
    interest gets. ``reserve`` holds the rest in the same order: a reader whose interests
    leave some items out gets the next of these that they may read instead (see
    :func:`digest.issue.compose.filter_issue`). A reader's cut has no reserve.
    """

    category: str
    title: str
    items: tuple[IssueItem, ...]
    reserve: tuple[IssueItem, ...] = ()


@dataclass(frozen=True)
class Issue:
    """A newsletter's edition for one window, e.g. ISO week ``2025-W05``."""

    newsletter: str
    key: str
    window_start: datetime
    window_end: datetime
    subject: str
    sections: tuple[Section, ...]
    date_label: str = ""
    week_label: str = ""
    intro: str = ""  # the editors' words before the first section; empty for none
    #: The locale of the labels, the subject and every text of ours around the content:
    #: the newsletter's, or a reader's in their copy (empty: the newsletter's).
    locale: str = ""

    @property
    def articles(self) -> tuple[Article, ...]:
        """The articles a reader with every interest gets (the sections' items)."""
        return tuple(item.article for s in self.sections for item in s.items)

    @property
    def all_articles(self) -> tuple[Article, ...]:
        """Every article some reader may get: the sections' items and their reserve."""
        return tuple(item.article for s in self.sections for item in (*s.items, *s.reserve))

    @property
    def is_empty(self) -> bool:
        return not any(s.items for s in self.sections)


@dataclass(frozen=True)
class IssueEdits:
    """What the editors changed in one issue: compose takes these as an input.

    Articles are named by uid. ``ranks`` orders a category's articles (lower first);
    pinned articles come before all others of their category. ``teasers`` replace the
    composed teaser, word for word.
    """

    intro: str = ""
    excluded: frozenset[str] = frozenset()
    pinned: frozenset[str] = frozenset()
    ranks: Mapping[str, int] = field(default_factory=dict)
    teasers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Subscriber:
    """A person on one or more lists, with the interests they chose.

    Empty ``categories`` or ``regions`` mean "everything".
    """

    email: str
    name: str = ""
    lists: frozenset[str] = frozenset()
    categories: frozenset[str] = frozenset()
    regions: frozenset[str] = frozenset()
    locale: str | None = None
    id: int | None = None


@dataclass(frozen=True)
class Rule:
    """What one segment lets through: categories and regions (None: all)."""

    categories: frozenset[str] | None = None
    regions: frozenset[str] | None = None

    def allows(self, article: Article) -> bool:
        if self.categories is not None and article.category not in self.categories:
            return False
        # An article without a region concerns everyone.
        return self.regions is None or article.region is None or article.region in self.regions


@dataclass(frozen=True)
class Recipient:
    """A subscriber of one issue: the segments they fall in and what those let through.

    An article reaches the recipient when any rule allows it; each rule already includes
    the subscriber's own interests.
    """

    subscriber: Subscriber
    segments: tuple[str, ...]
    rules: tuple[Rule, ...]

    def allows(self, article: Article) -> bool:
        return any(rule.allows(article) for rule in self.rules)


@dataclass(frozen=True)
class Variant:
    """An issue cut to one distinct content set, rendered once for all who share it.

    ``html`` and ``text`` contain personal placeholders (see ``digest.message.render``) that are
    filled in per recipient without compiling MJML again.
    """

    issue_key: str
    content_key: str
    issue: Issue
    html: str
    text: str
    marker: str = ""  # the random part of this variant's placeholders


@dataclass(frozen=True)
class Message:
    """The bytes of one email for one recipient, ready for the wire."""

    sender: str
    recipient: str
    message_id: str
    data: bytes = field(repr=False)
    # ``data`` as it follows DATA on the wire, when its maker knows it: every line end
    # CRLF and lines starting with "." stuffed (RFC 5321 4.5.2), without the final ".".
    wire: bytes | None = field(default=None, repr=False, compare=False)


class DeliveryState:
    """States of a delivery row in the ledger."""

    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"
