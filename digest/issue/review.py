"""Review before sending: newsletters with ``review = "required"`` wait for an editor.

The scheduled run composes the issue and, instead of sending it, mails every editor a
link to it, once per issue (:func:`digest.ops.review_mail.request_review`). An editor
approves it in the web app or with ``digest approve``; the approval is stored with who
and when, and :func:`digest.delivery.deliver.send_issue` refuses to send an issue of such
a newsletter without one (:class:`~digest.core.errors.NotApproved`).
"""

from __future__ import annotations

from digest.config import NewsletterSettings
from digest.core.errors import NotApproved
from digest.store import Store

__all__ = ["is_approved", "require_approval"]


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
