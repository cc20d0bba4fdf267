"""The library functions the CLI and the scheduler call: one per command.

Each opens what it needs (store, transport), does one job and returns a report.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from datetime import UTC, datetime
from email.utils import make_msgid
from pathlib import Path

from digest.audience.segments import recipients_for
from digest.cluster.schema import open_cluster_store
from digest.config import NewsletterSettings, Settings, load_settings
from digest.core.errors import DigestError, for_editors
from digest.core.i18n import N_
from digest.core.models import Issue, Message, Recipient
from digest.delivery.deliver import send_issue
from digest.delivery.dryrun import DryRunReport, dry_run
from digest.delivery.relays import open_transport
from digest.delivery.report import DeliveryReport, Progress
from digest.delivery.transport import SendResult, Transport
from digest.issue.compose import iso_week_window
from digest.issue.prepare import PreparedIssue, prepare_issue
from digest.issue.review import is_approved
from digest.mailboxes.bounces import sender_address
from digest.message.dkim import signer_for
from digest.message.personalize import Personalizer
from digest.ops.approval import approve, send_approved
from digest.ops.review_mail import request_review
from digest.sources.collect import CollectReport, collect_newsletter
from digest.store import Store, resolve_store_url

__all__ = [
    "open_store",
    "collect",
    "collect_sources",
    "scheduled_weeks",
    "send",
    "dry_run",
    "DryRunReport",
    "run_newsletter",
    "approve",
    "send_approved",
    "approved_waiting",
    "preview_message",
    "test_send",
    "send_due",
    "relay_backoff",
    "retry_due_deliveries",
    "process_unsubscribe_mailbox",
    "process_bounce_mailbox",
    "log_collect",
]

log = logging.getLogger("digest.ops.jobs")


def open_store(settings: Settings) -> Store:
    """The store named by the settings, migrated to the newest schema; in a cluster
    checked instead (only ``digest migrate`` migrates there).

    ``secret_key`` keys the suppression list's address hashes.
    """
    if settings.cluster.enabled:
        return open_cluster_store(settings)
    return Store.open(
        resolve_store_url(settings.store.url, settings.base_dir), secret_key=settings.secret_key
    )


async def collect(
    settings: Settings,
    store: Store,
    newsletter_id: str | None = None,
    *,
    now: datetime | None = None,
    force: bool = False,
) -> list[CollectReport]:
    """Collect every newsletter's sources (or one newsletter's); ``force``: see
    :func:`~digest.sources.collect.collect_newsletter`."""
    chosen = [settings.newsletter(newsletter_id)] if newsletter_id else list(settings.newsletters)
    return [await collect_newsletter(settings, store, n, now=now, force=force) for n in chosen]


async def send(
    settings: Settings,
    store: Store,
    newsletter: NewsletterSettings,
    week: str | None,
    transport: Transport,
    *,
    now: datetime | None = None,
    progress: Progress | None = None,
    stop: asyncio.Event | None = None,
    processes: int = 1,
) -> DeliveryReport | None:
    """Compose ``week`` (default: the previous week) and send it; None if it is empty.

    Once ``stop`` is set no new message starts; those in flight finish and are recorded.
    ``processes``: see :func:`~digest.delivery.deliver.send_issue` (``transport`` must then be the
    one ``settings.smtp`` opens).
    """
    now = now or datetime.now(UTC)
    prepared = prepare_issue(store, newsletter, week, now)
    if prepared is None or prepared.record is None:
        return None
    return await send_issue(
        settings,
        store,
        newsletter,
        prepared.record,
        prepared.issue,
        transport,
        now=now,
        progress=progress,
        stop_requested=stop,
        processes=processes,
    )


async def send_due(
    settings: Settings,
    store: Store,
    transport: Transport,
    *,
    now: datetime | None = None,
    stop: asyncio.Event | None = None,
    processes: int = 1,
) -> list[DeliveryReport]:
    """Send the due deliveries of every unfinished issue of the configured newsletters.

    An issue is unfinished while rows of it are pending or being sent; only those whose
    retry time has come (or that were never tried) are sent. Oldest issue first.
    """
    now = now or datetime.now(UTC)
    configured = {n.id: n for n in settings.newsletters}
    reports = []
    for newsletter_id, key in store.unfinished_issues(list(configured)):
        if stop is not None and stop.is_set():
            break
        newsletter = configured[newsletter_id]
        record = store.get_issue(newsletter_id, key)
        if record is None:
            continue
        # A 'composed' issue here has an audience not planned completely: always go on.
        if record.status != "composed" and not store.due_deliveries(record.id, datetime.now(UTC)):
            continue
        # Still 'composed', the issue is composed again from its window as the first run
        # did: saved, so its stored subject and articles are those it goes on with.
        prepared = prepare_issue(store, newsletter, key, now, save=record.status == "composed")
        if prepared is None or prepared.record is None:
            continue
        reports.append(
            await send_issue(
                settings,
                store,
                newsletter,
                prepared.record,
                prepared.issue,
                transport,
                now=now,
                stop_requested=stop,
                processes=processes,
            )
        )
        if reports[-1].stopped:
            break  # the relay is unavailable or refuses us: the next check tries again
    return reports


#: The longest wait between two tries of a relay that could not be reached.
RELAY_RETRY_MAX_SECONDS = 300.0


def relay_backoff(previous: float, first: float) -> float:
    """Seconds to wait before trying a relay that could not be reached again: ``first``
    (one check interval) after a success, doubling since, at most
    :data:`RELAY_RETRY_MAX_SECONDS`."""
    return min(RELAY_RETRY_MAX_SECONDS, max(first, 2 * previous))


class RelayWatch:
    """Whether the retry passes of this process reach the relay, and when to try again.

    A relay that cannot be reached (or our configuration keeps us from a session) is the
    run's problem, not the readers': no reader's row is touched, and the retry job tries
    the relay again after a wait that doubles from one check interval up to
    :data:`RELAY_RETRY_MAX_SECONDS`. It is logged when the problem starts or changes
    and when the relay is reached again, not at every pass.
    """

    def __init__(self) -> None:
        self.problem: str | None = None
        self.wait = 0.0
        self.next_try = 0.0  # time.monotonic() before which no pass sends
        self.down_since = 0.0

    def due(self) -> bool:
        return time.monotonic() >= self.next_try

    def unreached(self, problem: str, first_wait: float) -> None:
        now = time.monotonic()
        self.wait = relay_backoff(self.wait, first_wait)
        self.next_try = now + self.wait
        if problem != self.problem:
            log.error(
                "relay not reached: %s; the readers stay due, untouched; trying the relay "
                "again with a growing wait (at most %.0f s)",
                problem,
                RELAY_RETRY_MAX_SECONDS,
            )
            self.down_since = self.down_since if self.problem else now
        self.problem = problem

    def reached(self) -> None:
        if self.problem is not None:
            log.info(
                "relay reached again after %.0f s; sending the due readers",
                time.monotonic() - self.down_since,
            )
        self.problem, self.wait, self.next_try = None, 0.0, 0.0


#: The relay as the retry passes of this process (`digest run`) found it.
RELAY = RelayWatch()


async def retry_due_deliveries(config_path: str) -> None:
    """The scheduled job: send the due deferred deliveries of every unfinished issue.

    While the relay cannot be reached it is tried with its own backoff (see
    :class:`RelayWatch`); no reader's attempts or age change meanwhile.
    """
    if not RELAY.due():
        return
    settings = load_settings(Path(config_path))
    store = open_store(settings)
    try:
        transport = open_transport(settings.smtp)
        try:
            reports = await send_due(settings, store, transport, processes=settings.smtp.processes)
        finally:
            await transport.close()
        unreached = next((r for r in reports if r.not_reached), None)
        if unreached is not None:
            RELAY.unreached(unreached.stopped or "", settings.retry.check_minutes * 60)
            return
        if reports:
            RELAY.reached()
        for report in reports:
            if report.stopped:
                log.error("retrying deferred deliveries: %s", report.summary())
            else:
                log.info("retrying deferred deliveries: %s", report.summary())
    finally:
        store.close()


async def collect_sources(
    config_path: str, newsletter_id: str, *, now: datetime | None = None
) -> list[CollectReport]:
    """The scheduled job: collect one newsletter's sources between its weekly runs.

    Feeds keep only their last items; collecting through the week stores those a busy
    week pushes out of the feed before the run composes the issue.
    """
    settings = load_settings(Path(config_path))
    store = open_store(settings)
    try:
        reports = await collect(settings, store, newsletter_id, now=now)
    finally:
        store.close()
    log_collect(reports)
    return reports


def log_collect(reports: list[CollectReport]) -> None:
    """One line per collect run, and one per failed source or warning."""
    for report in reports:
        for source in report.sources:
            if source.error:
                log.warning(
                    "%s: source %r skipped: %s", report.newsletter, source.name, source.error
                )
            for warning in source.warnings:
                log.warning("%s: source %r: %s", report.newsletter, source.name, warning)
        unchanged = sum(1 for s in report.sources if s.not_modified)
        log.info(
            "%s: collected %d sources (%d unchanged, %d failed): %d new, %d updated articles",
            report.newsletter,
            len(report.sources),
            unchanged,
            len(report.failed),
            report.new,
            report.updated,
        )


def prepared_or_error(
    store: Store, newsletter: NewsletterSettings, week: str | None, now: datetime
) -> PreparedIssue:
    prepared = prepare_issue(store, newsletter, week, now, save=False)
    if prepared is None:
        raise for_editors(
            DigestError(
                f"newsletter {newsletter.id!r} has no articles for "
                f"{week or 'the previous week'}; run `digest collect` first"
            ),
            N_("There are no articles for this week."),
        )
    return prepared


async def run_newsletter(config_path: str, newsletter_id: str) -> None:
    """The scheduled job: collect, compose the previous week and send it.

    With ``review = "required"`` an issue not yet approved is composed and the editors
    are asked (once) to review it instead; approved issues of earlier weeks that wait for
    this run (``approved_send = "next_run"``) go out first.
    """
    settings = load_settings(Path(config_path))
    newsletter = settings.newsletter(newsletter_id)
    store = open_store(settings)
    try:
        now = datetime.now(UTC)
        transport = open_transport(settings.smtp)
        try:
            for week in await scheduled_weeks(settings, store, newsletter, now, transport):
                _log_result(
                    newsletter_id,
                    await send(
                        settings,
                        store,
                        newsletter,
                        week,
                        transport,
                        now=now,
                        processes=settings.smtp.processes,
                    ),
                )
        finally:
            await transport.close()
    finally:
        store.close()


async def scheduled_weeks(
    settings: Settings,
    store: Store,
    newsletter: NewsletterSettings,
    now: datetime,
    transport: Transport | None = None,
) -> list[str]:
    """What a scheduled run of ``newsletter`` does before sending: the weeks to send.

    Collects the newsletter's sources, then: the approved issues of earlier weeks that
    wait for this run, oldest first, and the previous week's issue when it may go out.
    One that awaits an editor's approval is composed and the editors are asked (once, on
    ``transport``, else on one opened for it) instead; one without articles is said so.
    ``digest run`` sends the weeks here, a cluster queues their plans.
    """
    log_collect(await collect(settings, store, newsletter.id, now=now))
    weeks = approved_waiting(store, newsletter)
    key = iso_week_window(None, newsletter.zone, now)[0]
    if is_approved(store, newsletter, key):
        return weeks if key in weeks else [*weeks, key]
    prepared = prepare_issue(store, newsletter, None, now)
    if prepared is None:
        _log_result(newsletter.id, None)
        return weeks
    own = transport is None
    pool = transport or open_transport(settings.smtp)
    try:
        asked = await request_review(
            settings, store, newsletter, prepared.issue.key, prepared.issue.subject, pool, now=now
        )
    finally:
        if own:
            await pool.close()
    log.info(
        "%s %s: composed; awaits an editor's approval%s",
        newsletter.id,
        prepared.issue.key,
        f" ({asked} editors asked)" if asked else "",
    )
    return weeks


def _log_result(newsletter_id: str, result: DeliveryReport | None) -> None:
    if result is None:
        log.info("%s: no new articles in the previous week; nothing sent", newsletter_id)
    elif result.stopped:
        log.error("%s; the next run (or `digest send`) sends the rest", result.summary())
    else:
        log.info("%s", result.summary())


def approved_waiting(store: Store, newsletter: NewsletterSettings) -> list[str]:
    """Weeks of approved issues of a reviewed newsletter that have not gone out in full."""
    if newsletter.review != "required":
        return []
    return sorted(
        row.key
        for row, _counts in store.issues_of(newsletter.id, limit=20)
        if row.status in ("composed", "sending") and is_approved(store, newsletter, row.key)
    )


async def process_unsubscribe_mailbox(config_path: str) -> None:
    """The scheduled job: apply the unsubscribe requests in the configured mailbox."""
    await _mailbox_job(config_path, "unsubscribe")


async def process_bounce_mailbox(config_path: str) -> None:
    """The scheduled job: record the bounces and complaints in the bounce mailbox."""
    await _mailbox_job(config_path, "bounces")


async def _mailbox_job(config_path: str, kind: str) -> None:
    """Process the ``kind`` mailbox on a store of its own and log its summary."""
    from digest.mailboxes.passes import MAILBOXES

    settings = load_settings(Path(config_path))
    name, process = MAILBOXES[kind]

    def run() -> str:
        store = open_store(settings)
        try:
            return process(settings, store)
        finally:
            store.close()

    # imap-tools and the store block: keep the scheduler's event loop free meanwhile.
    log.info("%s: %s", name, await asyncio.to_thread(run))


def preview_recipient(
    store: Store,
    newsletter: NewsletterSettings,
    *,
    segment: str | None = None,
    subscriber: str | None = None,
) -> Recipient:
    """Who a preview or a test is for: a subscriber by address, else a segment."""
    from digest.audience.segments import segment_recipient

    if subscriber:
        found = store.subscriber_by_email(subscriber.strip())
        if found is None:
            raise for_editors(
                DigestError(f"no subscriber {subscriber!r} in the store"),
                N_("There is no subscriber %(address)s."),
                address=subscriber,
            )
        matches = recipients_for(newsletter, [found])
        if not matches:
            raise for_editors(
                DigestError(
                    f"{subscriber} is in no segment of {newsletter.id!r} "
                    f"(lists: {', '.join(sorted(found.lists)) or 'none'})"
                ),
                N_("%(address)s is in no segment of this newsletter."),
                address=subscriber,
            )
        return matches[0]
    chosen = newsletter.segment(segment) if segment else None
    if chosen is None:
        if not newsletter.segments:
            raise DigestError(f"newsletter {newsletter.id!r} has no segments")
        chosen = newsletter.segments[0]
    return segment_recipient(chosen)


def preview_message(
    settings: Settings,
    store: Store,
    newsletter: NewsletterSettings,
    week: str | None,
    *,
    segment: str | None = None,
    subscriber: str | None = None,
    now: datetime | None = None,
    to: str | None = None,
    subject_prefix: str = "",
) -> tuple[Issue, Message]:
    """The message a segment or subscriber would get, nothing sent or stored.

    Its unsubscribe and preference links name no subscriber, so they work for no one.
    With ``to`` it is addressed there instead and signed as the send signs (a test);
    ``subject_prefix`` goes before the subject.
    """
    now = now or datetime.now(UTC)
    issue = prepared_or_error(store, newsletter, week, now).issue
    if to is not None and newsletter.archive and not _in_archive(store, newsletter, issue.key):
        # The "View in browser" link leads to the issue's archive page, which is there
        # only once the issue has gone out: a test of an issue not sent yet leaves the
        # link out rather than show one that answers 404. (Not the editors' preview
        # instead: a test may go to any address, and that page needs an editor's login.)
        newsletter = replace(newsletter, archive=False)
    recipient = preview_recipient(store, newsletter, segment=segment, subscriber=subscriber)
    personalizer = Personalizer(settings, newsletter, issue, now)
    variant = personalizer.variant_for(recipient)
    if variant is None:
        raise for_editors(
            DigestError(f"nothing in {issue.key} for that recipient's interests"),
            N_("This issue has nothing for these interests."),
        )
    if subject_prefix:
        variant = replace(
            variant, issue=replace(variant.issue, subject=subject_prefix + variant.issue.subject)
        )
    # Its links name no subscriber (id 0), whoever it shows: a preview as a reader must
    # not hand whoever sees it the links that open that reader's data.
    stand_in = replace(recipient.subscriber, id=0)
    if to is None:
        return issue, personalizer.message_for(replace(recipient, subscriber=stand_in), variant)
    # A test goes out as readers' messages do: from the prepared bytes, DKIM-signed. It
    # belongs to no delivery, so its return path is the plain sender address.
    # Nor does a test mail carry the name the reader typed (whoever signed up typed it):
    # it greets as a reader without a name is greeted.
    return issue, personalizer.fast_message_for(
        replace(recipient, subscriber=replace(stand_in, email=to, name="")),
        variant,
        make_msgid(domain=newsletter.sender_domain),
        envelope_from=sender_address(newsletter),
        signer=signer_for(settings, newsletter.sender_domain),
    )


def _in_archive(store: Store, newsletter: NewsletterSettings, key: str) -> bool:
    """Whether the issue's archive page exists: it has been sent (see digest.message.archive)."""
    return any(record.key == key for record, _at in store.sent_issues(newsletter.id))


#: Before the subject of every test message.
TEST_PREFIX = "[TEST] "


async def test_send(
    settings: Settings,
    store: Store,
    newsletter: NewsletterSettings,
    week: str | None,
    addresses: list[str],
    transport: Transport,
    *,
    segment: str | None = None,
    subscriber: str | None = None,
    now: datetime | None = None,
) -> list[SendResult]:
    """Send the issue as a segment or subscriber gets it to ``addresses``, marked [TEST].

    Nothing is recorded: the ledger of the issue does not change. One result per address,
    with the server's answer.
    """
    results = []
    for address in addresses:
        _issue, message = preview_message(
            settings,
            store,
            newsletter,
            week,
            segment=segment,
            subscriber=subscriber,
            now=now,
            to=address,
            subject_prefix=TEST_PREFIX,
        )
        results.append(await transport.send(message))
    return results


def preview(
    settings: Settings,
    store: Store,
    newsletter: NewsletterSettings,
    week: str | None,
    *,
    segment: str | None = None,
    subscriber: str | None = None,
    fmt: str = "html",
    now: datetime | None = None,
) -> bytes:
    """One issue as a segment or a subscriber would get it: HTML, text, .eml or a dump."""
    from digest.issue.compose import format_issue

    now = now or datetime.now(UTC)
    if fmt == "issue":
        return format_issue(prepared_or_error(store, newsletter, week, now).issue).encode()
    _issue, message = preview_message(
        settings, store, newsletter, week, segment=segment, subscriber=subscriber, now=now
    )
    if fmt == "eml":
        return message.data
    import email
    from email import policy

    parsed = email.message_from_bytes(message.data, policy=policy.default)
    part = parsed.get_body(preferencelist=("html",) if fmt == "html" else ("plain",))
    assert part is not None
    return part.get_content().encode()
