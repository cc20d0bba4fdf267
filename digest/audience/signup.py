"""Double opt-in: which queued confirmations are still worth sending, and sign-up choices.

A sign-up is stored with its confirmation mail queued (:func:`store_signup`) before
the page answers, so a relay that is down loses nothing; the mail itself is built and
sent by :mod:`digest.ops.mail_queue`: on one machine by the loop of ``digest serve``
and ``digest run``, in a cluster by a job queued with the sign-up. A confirmation is
due only while its sign-up is unconfirmed and its link has not expired
(:func:`confirmation_due`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from digest.config import NewsletterSettings, Settings
from digest.core.errors import ConfigError
from digest.store import Store
from digest.store.signups import CONFIRM, NewSignup, QueuedMail, Signup
from digest.store.sql import transaction

if TYPE_CHECKING:
    from sqlalchemy import Connection

__all__ = [
    "confirmation_due",
    "merged_interests",
    "purge_expired_signups",
    "store_signup",
]


def store_signup(
    settings: Settings,
    store: Store,
    signup: NewSignup,
    *,
    interval: timedelta,
    now: datetime | None = None,
    connection: Connection | None = None,
) -> int | None:
    """Store a sign-up with its confirmation mail queued (:meth:`Store.add_signup`); its
    id, or None when a confirmation went to the address less than ``interval`` ago.

    In a cluster (``[cluster] queue``) the job that sends the due confirmations is queued
    in the same transaction: there is a job if and only if the mail is queued, and a
    burst of sign-ups makes one job waiting, which sends them all. With ``connection``
    everything is written in the caller's transaction.
    """
    with transaction(store.engine, connection) as conn:
        signup_id = store.add_signup(signup, interval=interval, now=now, connection=conn)
        if signup_id is not None and settings.cluster.enabled:
            from digest.cluster.enqueue import defer_mail_queue

            defer_mail_queue(settings, conn)
    return signup_id


def merged_interests(
    settings: Settings, newsletter: NewsletterSettings, categories: set[str], regions: set[str]
) -> Callable[[frozenset[str] | None, frozenset[str] | None], tuple[set[str], set[str]]]:
    """A subscriber's interests with this newsletter's part replaced by a new choice.

    Categories and regions are kept per subscriber, across newsletters, and an empty
    set means "everything". The choice replaces this newsletter's keys only; what the
    subscriber chose for other newsletters stays. A newsletter that does not ask for
    regions (:attr:`~digest.config.NewsletterSettings.asks_regions`) leaves the regions
    as they are.
    """
    all_categories = {c.key for n in settings.newsletters for c in n.categories}
    all_regions = {r for n in settings.newsletters for r in n.regions}
    own_categories = {c.key for c in newsletter.categories}
    own_regions = set(newsletter.regions) if newsletter.asks_regions else set()

    def replace(
        current: frozenset[str] | None, chosen: set[str], own: set[str], every: set[str]
    ) -> set[str]:
        expanded = set(current) if current else set(every)
        result = (expanded - own) | (chosen & own)
        return set() if result >= every else result

    def interests(
        current_categories: frozenset[str] | None, current_regions: frozenset[str] | None
    ) -> tuple[set[str], set[str]]:
        return (
            replace(current_categories, categories, own_categories, all_categories),
            replace(current_regions, regions, own_regions, all_regions),
        )

    return interests


def purge_expired_signups(store: Store, settings: Settings, now: datetime) -> int:
    """Delete the sign-ups whose confirmation links have expired."""
    return sum(
        store.purge_signups(n.id, now - timedelta(days=n.confirm_days))
        for n in settings.newsletters
    )


def confirmation_due(
    store: Store, settings: Settings, mail: QueuedMail, now: datetime
) -> tuple[NewsletterSettings, Signup] | None:
    """The newsletter and sign-up a queued mail confirms; None if nothing is to be sent."""
    if mail.kind != CONFIRM or mail.signup_id is None:
        return None
    signup = store.signup(mail.signup_id)
    try:
        newsletter = settings.newsletter(mail.newsletter)
    except ConfigError:
        return None
    if signup is None or signup.confirmed_at is not None:
        return None
    # An old confirmation is worthless once its link has expired.
    if now - signup.created_at > timedelta(days=newsletter.confirm_days):
        return None
    return newsletter, signup
