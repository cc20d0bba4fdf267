"""One pass over a configured mailbox, by kind: what the schedule runs every
``interval_minutes`` (``digest run``'s jobs, the cluster's mailbox job)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from digest.config import Settings
    from digest.store import Store

__all__ = ["MAILBOXES", "bounce_pass", "unsubscribe_pass"]


def unsubscribe_pass(settings: Settings, store: Store) -> str:
    """Apply the unsubscribe requests in the configured mailbox; a summary (blocks)."""
    from digest.mailboxes.mailbox import open_mailbox, process_mailbox

    with open_mailbox(settings) as mailbox:
        return process_mailbox(settings, store, mailbox).summary()


def bounce_pass(settings: Settings, store: Store) -> str:
    """Record the bounces and complaints in the bounce mailbox; a summary (blocks)."""
    from digest.mailboxes.bounces import open_bounce_mailbox, process_bounces

    with open_bounce_mailbox(settings) as mailbox:
        return process_bounces(settings, store, mailbox).summary()


#: Each mailbox by kind: its name in the log and the pass that processes it.
MAILBOXES: dict[str, tuple[str, Callable[[Settings, Store], str]]] = {
    "unsubscribe": ("unsubscribe mailbox", unsubscribe_pass),
    "bounces": ("bounce mailbox", bounce_pass),
}
