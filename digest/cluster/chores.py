"""The cluster's small jobs: one host's sources, a mailbox pass, the mail queue.

Each does what ``digest run``'s job of the same kind does, on the worker's settings and
store. A collect job holds the queue's lock of its host (``host:<name>``), so the
sources of one host are fetched by one worker at a time, with one pacing and one
robots.txt, whichever newsletters they belong to.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from digest.cluster.tasks import Worker
    from digest.config import SourceSettings
    from digest.sources.collect import CollectReport

__all__ = ["collect_host_job", "mail_queue_job", "mailbox_job"]

log = logging.getLogger("digest.cluster")


async def collect_host_job(
    worker: Worker, host: str, sources: list[list[str]]
) -> list[CollectReport]:
    """Collect ``sources`` ([newsletter id, source name] pairs), all on ``host``.

    A source no longer configured, or no longer on ``host``, is skipped with a warning
    (the configuration changed after the job was queued; the next tick queues it anew).
    """
    from digest.ops.jobs import log_collect
    from digest.sources import Guest, new_http_client
    from digest.sources.collect import collect_newsletter

    settings, store = worker.settings, worker.store
    chosen = _chosen_sources(worker, host, sources)
    guest = Guest(settings.user_agent, settings.host_delay)  # shared: one host, one pace
    reports = []
    async with new_http_client(settings.user_agent) as client:
        for newsletter_id, picked in chosen.items():
            newsletter = settings.newsletter(newsletter_id)
            reports.append(
                await collect_newsletter(
                    settings, store, newsletter, client=client, sources=picked, guest=guest
                )
            )
    log_collect(reports)
    return reports


def _chosen_sources(
    worker: Worker, host: str, sources: list[list[str]]
) -> dict[str, list[SourceSettings]]:
    """The configured sources of ``sources`` on ``host``, by newsletter id."""
    from digest.sources.collect import source_host

    configured = {(n.id, s.name): s for n in worker.settings.newsletters for s in n.sources}
    chosen: dict[str, list[SourceSettings]] = {}
    for newsletter_id, name in sources:
        source = configured.get((newsletter_id, name))
        if source is None:
            log.warning("collect %s: %s has no source %r; skipped", host, newsletter_id, name)
        elif source_host(source) != host:
            log.warning(
                "collect %s: source %r of %s is on %s now; skipped (its own job collects it)",
                host,
                name,
                newsletter_id,
                source_host(source),
            )
        else:
            chosen.setdefault(newsletter_id, []).append(source)
    return chosen


async def mailbox_job(worker: Worker, kind: str) -> None:
    """One pass over the ``kind`` mailbox ("unsubscribe" or "bounces"), if configured."""
    from digest.mailboxes.passes import MAILBOXES

    settings = worker.settings
    config = {"unsubscribe": settings.unsubscribe_mailbox, "bounces": settings.bounces}.get(kind)
    if config is None:
        raise ValueError(f"no mailbox of kind {kind!r} (known: {', '.join(MAILBOXES)})")
    name, process = MAILBOXES[kind]
    if not config.configured:
        log.info("%s: not configured; nothing to do", name)
        return
    # imap-tools and the store block: keep the worker's event loop free meanwhile.
    log.info("%s: %s", name, await asyncio.to_thread(process, settings, worker.store))


async def mail_queue_job(worker: Worker) -> int:
    """Send the due confirmation mails, once each, until none is due; then delete the
    sign-ups whose links have expired. How many mails were sent."""
    from digest.audience.signup import purge_expired_signups
    from digest.ops.mail_queue import send_due_mail

    settings, store = worker.settings, worker.store
    sent = await send_due_mail(store, settings)
    purged = await asyncio.to_thread(purge_expired_signups, store, settings, datetime.now(UTC))
    if sent or purged:
        log.info("mail queue: %d mails sent, %d expired sign-ups deleted", sent, purged)
    return sent
