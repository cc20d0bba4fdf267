"""The mail asking the editors to review an issue, once per issue.

The gate itself (whether an issue may go out) is :mod:`digest.issue.review`; sending the
request needs the message builder and a transport, which sit above the issue stage.
"""

from __future__ import annotations

import logging
from datetime import datetime
from html import escape

from digest.config import NewsletterSettings, Settings
from digest.core.i18n import translations
from digest.core.models import Message
from digest.delivery.transport import Transport
from digest.message.mail import build_message
from digest.store import Store

__all__ = ["issue_url", "request_review", "review_messages"]

# The logger keeps the name it had when this lived with the gate, so log filters still match.
log = logging.getLogger("digest.issue.review")


def issue_url(settings: Settings, newsletter_id: str, week: str) -> str:
    """The page of an issue in the editors' area."""
    return f"{settings.public_url}/admin/{newsletter_id}/{week}"


def review_messages(
    settings: Settings,
    store: Store,
    newsletter: NewsletterSettings,
    week: str,
    subject: str,
    now: datetime,
) -> list[Message]:
    """One mail per editor asking to review and approve the issue."""
    catalogue = translations(newsletter.locale)
    url = issue_url(settings, newsletter.id, week)
    title = catalogue.gettext("For approval: %(subject)s") % {"subject": subject}
    body = catalogue.gettext(
        "The issue %(week)s of “%(name)s” is ready and waits for an editor's approval "
        "before it is sent:"
    ) % {"week": week, "name": newsletter.name}
    messages = []
    for editor in store.editors():
        text = f"{body}\n\n{url}\n"
        html = (
            f'<!doctype html><html lang="{newsletter.locale[:2]}"><body>'
            f'<p>{escape(body)}</p><p><a href="{escape(url)}">{escape(url)}</a></p>'
            "</body></html>"
        )
        messages.append(
            build_message(
                newsletter=newsletter,
                settings=settings,
                to_addr=editor.email,
                to_name=editor.name,
                subject=title,
                html=html,
                text=text,
                unsubscribe_url=None,
                unsubscribe_mailto=None,
                now=now,
                message_id=f"review-{newsletter.id}-{week}-{editor.id}",
            )
        )
    return messages


async def request_review(
    settings: Settings,
    store: Store,
    newsletter: NewsletterSettings,
    week: str,
    subject: str,
    transport: Transport,
    *,
    now: datetime,
) -> int:
    """Mail the editors a link to the issue, once per issue; returns the mails sent.

    Should no editor's mail go through, the request is released so that the next run
    asks again.
    """
    if not store.claim_review_mail(newsletter.id, week, now):
        return 0
    sent = 0
    for message in review_messages(settings, store, newsletter, week, subject, now):
        result = await transport.send(message)
        if result.ok:
            sent += 1
        else:
            log.warning(
                "%s %s: review request to %s refused: %s %s",
                newsletter.id,
                week,
                message.recipient,
                result.code,
                result.reply,
            )
    if not sent:
        store.release_review_mail(newsletter.id, week)
        log.warning("%s %s: no editor could be asked for approval", newsletter.id, week)
    return sent
