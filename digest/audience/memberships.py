"""Each subscriber's list memberships and the state of each: what `digest subscribers
list` shows.

A reader unsubscribes from a newsletter (one click, the preferences page, a mail), not
from a list, and stays an 'active' subscriber for the other newsletters. A membership
is 'unsubscribed' once its reader has left every newsletter whose segments draw on
that list; a subscriber who is not active (bounced, complained, unsubscribed from
everything, erased) has that status on every list.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from digest.audience.segments import segment_lists
from digest.config import Settings
from digest.core.models import Subscriber
from digest.store import Store

__all__ = ["ACTIVE", "UNSUBSCRIBED", "Listed", "list_subscribers", "newsletters_by_list"]

ACTIVE = "active"
UNSUBSCRIBED = "unsubscribed"


@dataclass(frozen=True)
class Listed:
    """One subscriber as listed: the row's status and each membership's state."""

    subscriber: Subscriber
    status: str
    memberships: tuple[tuple[str, str], ...]  # (list, state), by list name

    def memberships_text(self) -> str:
        """``allgemein:active,bayern:unsubscribed``."""
        return ",".join(f"{name}:{state}" for name, state in self.memberships)


def newsletters_by_list(settings: Settings) -> dict[str, set[str]]:
    """The ids of the newsletters whose segments draw on each list."""
    found: dict[str, set[str]] = {}
    for newsletter in settings.newsletters:
        for name in segment_lists(newsletter):
            found.setdefault(name, set()).add(newsletter.id)
    return found


def _state(status: str, list_name: str, left: set[str], users: Mapping[str, set[str]]) -> str:
    if status != ACTIVE:
        return status
    newsletters = users.get(list_name, set())
    return UNSUBSCRIBED if newsletters and newsletters <= left else ACTIVE


def list_subscribers(
    settings: Settings, store: Store, *, list_name: str | None = None, status: str | None = None
) -> tuple[dict[str, int], list[Listed]]:
    """How many subscribers (on ``list_name``) have each status, and the rows with
    ``status``, by address.

    With ``list_name`` a row's status is that membership's state. Without it, it is
    'active' while any membership is (or there is none) and 'unsubscribed' once none
    is; ``status`` then also finds a subscriber one of whose memberships has it.
    """
    users = newsletters_by_list(settings)
    found = store.subscriber_rows(list_name=list_name)
    left = store.withdrawals([s for s, row_status in found if row_status == ACTIVE])
    listed = []
    for subscriber, row_status in found:
        gone = left.get(subscriber.id, set()) if subscriber.id is not None else set()
        memberships = tuple(
            (name, _state(row_status, name, gone, users)) for name in sorted(subscriber.lists)
        )
        states = {state for _name, state in memberships}
        if list_name is not None:
            shown = dict(memberships).get(list_name, row_status)
        elif row_status == ACTIVE and states and ACTIVE not in states:
            shown = UNSUBSCRIBED
        else:
            shown = row_status
        listed.append(Listed(subscriber, shown, memberships))
    counts = dict(Counter(entry.status for entry in listed))
    if status is not None:
        listed = [
            entry
            for entry in listed
            if entry.status == status
            or (list_name is None and status in {state for _n, state in entry.memberships})
        ]
    return counts, listed
