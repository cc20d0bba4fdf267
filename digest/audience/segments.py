"""Who receives what: subscribers matched to a newsletter's segments, and their cut.

Pure functions. A subscriber in several segments is one recipient (one email per issue)
whose cut is the union of what those segments let through, narrowed to the subscriber's
own categories and regions.
"""

from __future__ import annotations

from collections.abc import Iterable

from digest.config import NewsletterSettings, SegmentSettings
from digest.core.addresses import email_key
from digest.core.models import Issue, Recipient, Rule, Subscriber
from digest.issue.compose import filter_issue

__all__ = ["recipients_for", "segment_lists", "cut_for", "segment_recipient"]


def segment_lists(newsletter: NewsletterSettings) -> set[str]:
    """Every list any segment of the newsletter draws from."""
    return {name for segment in newsletter.segments for name in segment.lists}


def _narrow(chosen: tuple[str, ...], own: frozenset[str]) -> frozenset[str] | None:
    """Intersect a segment's choice with a subscriber's (empty means everything)."""
    if not chosen:
        return own or None
    return frozenset(chosen) & own if own else frozenset(chosen)


def _rule(segment: SegmentSettings, subscriber: Subscriber) -> Rule:
    return Rule(
        categories=_narrow(segment.categories, subscriber.categories),
        regions=_narrow(segment.regions, subscriber.regions),
    )


def recipients_for(
    newsletter: NewsletterSettings, subscribers: Iterable[Subscriber]
) -> list[Recipient]:
    """One recipient per subscriber in at least one segment, in subscriber order."""
    recipients = []
    seen: set[str] = set()
    for subscriber in subscribers:
        # The key the store keeps unique: casefold() would also take 'strasse@' and
        # 'straße@' for one mailbox and silently leave one of them out.
        key = email_key(subscriber.email)
        if key in seen:
            continue
        matching = [s for s in newsletter.segments if subscriber.lists & set(s.lists)]
        if not matching:
            continue
        seen.add(key)
        recipients.append(
            Recipient(
                subscriber,
                tuple(s.name for s in matching),
                tuple(_rule(s, subscriber) for s in matching),
            )
        )
    return recipients


def segment_recipient(segment: SegmentSettings) -> Recipient:
    """A stand-in recipient with no interests of their own, to preview a whole segment."""
    nobody = Subscriber(email="vorschau@example.invalid", name="", lists=frozenset(segment.lists))
    return Recipient(nobody, (segment.name,), (_rule(segment, nobody),))


def cut_for(issue: Issue, recipient: Recipient) -> Issue:
    """The issue as this recipient gets it; categories left empty are dropped."""
    return filter_issue(issue, recipient.allows)
