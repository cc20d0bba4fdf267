"""The confirmation mail of a sign-up, and the loop that drains the mail queue.

The sign-up pages queue a confirmation (see :mod:`digest.audience.signup`);
:func:`send_due_mail` sends what is due, through the same message builder and SMTP
settings as the issues, and retries a failure with exponential backoff. Each queued row
is claimed with a lease and marked sent once the relay accepted it; its Message-ID
derives from the row's request id, so even a crash between the two (the one case that
sends twice) gives the reader's mail system the same Message-ID twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from digest.audience.signup import confirmation_due, purge_expired_signups
from digest.audience.tokens import confirm_url
from digest.config import NewsletterSettings, Settings
from digest.core.errors import DigestError
from digest.core.i18n import language, reader_locale, translations
from digest.core.models import Message
from digest.delivery.transport import SmtpPool, Transport
from digest.message.mail import build_message
from digest.message.render import greeting_for, render_mail_templates
from digest.store import Store
from digest.store.signups import QueuedMail, Signup

__all__ = [
    "MAX_ATTEMPTS",
    "confirmation_message",
    "retry_delay",
    "run_mail_queue",
    "send_due_mail",
]

# The logger keeps the name it had when this lived with the sign-ups, so log filters
# still match.
log = logging.getLogger("digest.audience.signup")

#: A confirmation still unsent after this many attempts is given up.
MAX_ATTEMPTS = 12
#: The first retry waits this long, each next one twice as long, up to MAX_DELAY.
FIRST_DELAY = timedelta(seconds=30)
MAX_DELAY = timedelta(hours=1)
#: How long a claimed row is ours before another sender may take it.
LEASE = timedelta(minutes=5)


def retry_delay(attempts: int) -> timedelta:
    """The wait before the next attempt after ``attempts`` failed ones."""
    return min(FIRST_DELAY * 2 ** max(attempts - 1, 0), MAX_DELAY)


def confirm_subject(newsletter: NewsletterSettings, locale: str | None = None) -> str:
    """The subject of the confirmation mail, in ``locale`` (default: the newsletter's)."""
    catalogue = translations(locale or newsletter.locale)
    # TRANSLATORS: the subject of the confirmation mail; name is the newsletter's.
    text = catalogue.gettext("Please confirm your subscription: %(name)s")
    return text % {"name": newsletter.name}


def confirmation_message(
    settings: Settings,
    newsletter: NewsletterSettings,
    signup: Signup,
    *,
    request_id: str,
    now: datetime,
) -> Message:
    """The confirmation request of one sign-up, HTML and text, without advertising.

    It carries nothing the sign-up form received but the address. It speaks the sign-up's
    locale (the language of the page it was made on), else the newsletter's.
    """
    locale = reader_locale(signup.locale, newsletter.locale)
    subject = confirm_subject(newsletter, locale)
    html, text = render_mail_templates(
        settings,
        newsletter,
        "confirm",
        {
            "newsletter": newsletter,
            "subject": subject,
            # Nothing a stranger typed goes into this mail, only the address: a name
            # field would let anyone mail any sentence from our domain to any address.
            # The name is kept for the mail after the confirmation.
            "greeting": greeting_for("", locale),
            "confirm_url": confirm_url(settings, newsletter.id, signup.id),
            "confirm_days": newsletter.confirm_days,
            "lang": language(locale),
        },
        locale=locale,
    )
    return build_message(
        newsletter=newsletter,
        settings=settings,
        to_addr=signup.email,
        to_name="",
        subject=subject,
        html=html,
        text=text,
        unsubscribe_url=None,
        unsubscribe_mailto=None,
        now=now,
        message_id=f"confirm-{request_id}",
    )


async def send_due_mail(
    store: Store,
    settings: Settings,
    transport: Transport | None = None,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> int:
    """Send every queued mail that is due, once each; returns how many were sent.

    Without ``transport`` an SMTP pool on ``settings.smtp`` is opened, and only when
    something is due. A connection failure ends the round: every later row would fail
    the same way, and keeps its own schedule.
    """
    sent = 0
    pool: SmtpPool | None = None
    try:
        while (
            mail := await asyncio.to_thread(store.claim_mail, lease=LEASE, now=now())
        ) is not None:
            try:
                message = await asyncio.to_thread(_message_for, store, settings, mail, now())
            except DigestError as exc:  # a template or an address the operator can fix
                await asyncio.to_thread(_failed, store, mail, str(exc), True, now())
                log.warning("queued mail %s cannot be built: %s", mail.request_id, exc)
                continue
            if message is None:
                await asyncio.to_thread(
                    store.mail_failed, mail.id, "nothing to send", retry_at=None
                )
                continue
            if transport is None:
                pool = pool or SmtpPool(settings.smtp)
            try:
                result = await (transport or pool).send(message)  # type: ignore[union-attr]
            except DigestError as exc:
                await asyncio.to_thread(_failed, store, mail, str(exc), True, now())
                log.warning("queued mail %s not sent: %s", mail.request_id, exc)
                break
            if result.ok:
                await asyncio.to_thread(store.mail_sent, mail.id, now())
                sent += 1
            else:
                reply = f"{result.code} {result.reply}"
                await asyncio.to_thread(_failed, store, mail, reply, result.temporary, now())
                log.warning("queued mail %s refused: %s", mail.request_id, reply)
    finally:
        if pool is not None:
            await pool.close()
    return sent


def _failed(store: Store, mail: QueuedMail, error: str, temporary: bool, now: datetime) -> None:
    give_up = not temporary or mail.attempts >= MAX_ATTEMPTS
    retry_at = None if give_up else now + retry_delay(mail.attempts)
    store.mail_failed(mail.id, error, retry_at=retry_at)


def _message_for(
    store: Store, settings: Settings, mail: QueuedMail, now: datetime
) -> Message | None:
    due = confirmation_due(store, settings, mail, now)
    if due is None:
        return None
    newsletter, signup = due
    return confirmation_message(settings, newsletter, signup, request_id=mail.request_id, now=now)


async def run_mail_queue(
    store: Store,
    settings: Settings,
    *,
    stop: asyncio.Event,
    interval: float = 5.0,
    transport: Transport | None = None,
) -> None:
    """Send due mail every ``interval`` seconds until ``stop`` is set.

    Runs in ``digest serve`` (a task of the app's lifespan) and in ``digest run``. Two
    processes may run it on one store: the lease keeps them from sending a row twice.
    """
    while not stop.is_set():
        try:
            await send_due_mail(store, settings, transport)
            await asyncio.to_thread(purge_expired_signups, store, settings, datetime.now(UTC))
        except Exception:  # the loop must outlive one bad round
            log.exception("mail queue round failed; trying again in %s s", interval)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
