"""Review before sending: newsletters with ``review = "required"`` wait for an editor.

The scheduled run composes the issue and, instead of sending it, mails every editor a
link to it, once per issue (:func:`request_review`). An editor approves it in the web
app or with ``digest approve``; the approval is stored with who and when, and
:func:`digest.delivery.deliver.send_issue` refuses to send an issue of such a newsletter without
one (:class:`~digest.core.errors.NotApproved`).
"""

from __future__ import annotations

import logging
from datetime import datetime
from html import escape

from digest.config import NewsletterSettings, Settings
from digest.core.errors import NotApproved
from digest.core.i18n import translations
from digest.core.models import Message
from digest.delivery.transport import Transport
from digest.message.mail import build_message
from digest.store import Store

__all__ = ["issue_url", "is_approved", "request_review", "require_approval", "review_messages"]

log = logging.getLogger("digest.issue.review")


def issue_url(settings: Settings, newsletter_id: str, week: str) -> str:
    """The page of an issue in the editors' area."""
    return f"{settings.public_url}/admin/{newsletter_id}/{week}"


def is_approved(store: Store, newsletter: NewsletterSettings, week: str) -> bool:
    """True if the issue may go out: no review needed, or an editor approved it."""
    if newsletter.review != "required":
        return True
    approval = store.approval(newsletter.id, week)
    return approval is not None and approval.approved_at is not None


def require_approval(store: Store, newsletter: NewsletterSettings, week: str) -> None:
    """NotApproved unless the issue may go out."""
    if not is_approved(store, newsletter, week):
        raise NotApproved(
            f"issue {week} of {newsletter.id!r} awaits an editor's approval "
            f'(review = "required"): approve it in /admin or with '
            f"`digest approve {newsletter.id} --week {week}`"
        )


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
