"""What the reader's pages share: a form with its CSRF token and the check of a posted one,
the invalid-link page, and what a consent proof records of the request.

The sign-up and confirmation pages (:mod:`digest.web.reader`) and the preference centre
(:mod:`digest.web.preferences`) both build on these.
"""

from __future__ import annotations

from typing import Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

from digest.config import NewsletterSettings
from digest.core.i18n import N_
from digest.web.forms import CSRF_FIELD, csrf_token, field_text, form_is_genuine
from digest.web.pages import message_page, render, settings_of

__all__ = [
    "ALL_REGIONS",
    "MAX_NAME",
    "SOME_REGIONS",
    "chosen_regions",
    "client_ip",
    "form_page",
    "genuine",
    "invalid_link",
    "reader_name",
    "user_agent",
]

MAX_NAME = 100

#: The two answers to the region question (``region_scope``): every region of the
#: newsletter, or only the regions ticked below it.
ALL_REGIONS = "all"
SOME_REGIONS = "some"

# Message ids, translated when a page is shown.
_INVALID_LINK = (
    N_("Invalid link"),
    N_(
        "This link is invalid, incomplete or has expired. Please use the complete link "
        "from the email or sign up again."
    ),
)


def client_ip(request: Request) -> str | None:
    """The address the request came from, for the consent proof."""
    return request.client.host if request.client else None


def user_agent(request: Request) -> str | None:
    """The request's User-Agent (at most 1000 characters), for the consent proof."""
    return (request.headers.get("user-agent") or "")[:1000] or None


def reader_name(value: object) -> str:
    """A name as typed in a form: whitespace collapsed, at most :data:`MAX_NAME` characters."""
    return " ".join(field_text(value).split())[:MAX_NAME]


def chosen_regions(form: FormData, newsletter: NewsletterSettings) -> tuple[str, set[str]]:
    """The region question of a posted form: (:data:`ALL_REGIONS`, every region of the
    newsletter) or (:data:`SOME_REGIONS`, the ticked ones, perhaps none).

    A form without the question (the embeddable snippet, which may name regions in
    hidden fields) chooses the regions it names, else all of them. Regions the
    newsletter does not know are dropped.
    """
    own = set(newsletter.regions)
    ticked = {field_text(v) for v in form.getlist("regions") if isinstance(v, str)} & own
    scope = form.get("region_scope")
    if scope == ALL_REGIONS or (scope != SOME_REGIONS and not ticked):
        return ALL_REGIONS, own
    return SOME_REGIONS, ticked


def form_page(request: Request, name: str, status: int = 200, **context: Any) -> Response:
    """The page of template ``name`` with a form that posts back to the same path."""
    context.setdefault("csrf", csrf_token(settings_of(request).secret_key, request.url.path))
    return render(request, name, status, csrf_field=CSRF_FIELD, **context)


def genuine(request: Request, form: FormData) -> bool:
    """True if ``form`` was posted from a page of :func:`form_page` for this path."""
    settings = settings_of(request)
    token = form.get(CSRF_FIELD)
    return form_is_genuine(
        request,
        token if isinstance(token, str) else None,
        settings.secret_key,
        settings.public_url,
    )


def invalid_link(request: Request, locale: str | None = None) -> Response:
    """The 400 page of a link that is invalid, incomplete or expired."""
    return message_page(request, 400, locale or settings_of(request).locale, *_INVALID_LINK)
