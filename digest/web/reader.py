"""The reader's own pages: sign-up, confirmation (double opt-in) and the preference centre
(:mod:`digest.web.preferences`).

Every form carries a CSRF token (:mod:`digest.web.forms`). No answer tells whether an
address is known: the sign-up page answers the same for a new, pending, subscribed or
suppressed address, and the preference centre of an unknown or erased subscriber looks
like any invalid link.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from digest.audience.signup import merged_interests, store_signup
from digest.audience.tokens import TokenError, preferences_url, read_confirm_token
from digest.config import NewsletterSettings
from digest.core.addresses import checked_address
from digest.core.errors import AddressError, ConfigError
from digest.core.i18n import N_, reader_locale, translations
from digest.store.signups import NewSignup
from digest.web.forms import HONEYPOT_FIELD, field_text
from digest.web.pages import message_page, not_found, render, settings_of, store_of
from digest.web.preferences import change_preferences, show_preferences
from digest.web.reader_pages import (
    ALL_REGIONS,
    chosen_regions,
    client_ip,
    form_page,
    genuine,
    invalid_link,
    reader_name,
    user_agent,
)
from digest.web.routing import page

__all__ = ["confirm", "reader_routes", "show_confirm", "show_signup", "sign_up"]

# Message ids, translated when a page is shown.
_ALREADY_CONFIRMED = (
    N_("Already confirmed"),
    N_(
        "This sign-up has already been confirmed, and its link changes nothing any more. "
        "To change your subscription, use the link at the end of each newsletter."
    ),
)


def reader_routes() -> list[Route]:
    """The routes of the sign-up, confirmation and preference pages."""
    return [
        page("/subscribe/{newsletter}", show=show_signup, change=sign_up, name="subscribe"),
        page("/confirm/{token}", show=show_confirm, change=confirm, name="confirm"),
        page(
            "/preferences/{token}",
            show=show_preferences,
            change=change_preferences,
            name="preferences",
        ),
    ]


# --- sign-up -------------------------------------------------------------------------------


def _newsletter_of(request: Request) -> NewsletterSettings | None:
    try:
        newsletter = settings_of(request).newsletter(request.path_params["newsletter"])
    except ConfigError:
        return None
    return newsletter if newsletter.signup else None


def _signup_form(
    request: Request,
    newsletter: NewsletterSettings,
    *,
    status: int = 200,
    values: dict[str, Any] | None = None,
    errors: list[str] | None = None,
    again: bool = False,
) -> Response:
    values = values or {
        "email": "",
        "name": "",
        "categories": {c.key for c in newsletter.categories},
        "region_scope": ALL_REGIONS,
        "regions": set(),
        "consent": False,
    }
    locale = newsletter.locale
    return form_page(
        request,
        "subscribe.html",
        status,
        locale=locale,
        newsletter=newsletter,
        consent_statement=newsletter.consent_statement_in(locale),
        values=values,
        errors=errors or [],
        again=again,
        honeypot=HONEYPOT_FIELD,
    )


def show_signup(request: Request) -> Response:
    """``GET /subscribe/{newsletter}``: the sign-up form."""
    newsletter = _newsletter_of(request)
    if newsletter is None:
        return not_found(request)
    return _signup_form(request, newsletter)


async def sign_up(request: Request) -> Response:
    """``POST /subscribe/{newsletter}``: store the sign-up and queue its confirmation mail."""
    newsletter = _newsletter_of(request)
    if newsletter is None:
        return not_found(request)
    form = await request.form()
    region_scope, regions = chosen_regions(form, newsletter)
    values: dict[str, Any] = {
        "email": field_text(form.get("email")).strip()[:320],
        "name": reader_name(form.get("name")),
        "categories": {field_text(v) for v in form.getlist("categories") if isinstance(v, str)}
        & {c.key for c in newsletter.categories},
        "region_scope": region_scope,
        "regions": regions,
        "consent": form.get("consent") == "yes",
    }
    if not genuine(request, form):
        # A form posted from elsewhere (the embeddable snippet, or a forged post):
        # shown again, filled in, for the reader to send from here. Consent is given
        # here, and categories the snippet leaves out are offered all ticked.
        values["categories"] = values["categories"] or {c.key for c in newsletter.categories}
        values["consent"] = False
        return _signup_form(request, newsletter, values=values, again=True)
    sent = render(request, "signup_sent.html", locale=newsletter.locale, newsletter=newsletter)
    if form.get(HONEYPOT_FIELD):
        return sent  # a robot: the same answer, nothing done
    settings = settings_of(request)
    locale = newsletter.locale
    gettext = translations(locale).gettext
    errors = []
    try:
        email = checked_address(values["email"], smtputf8=settings.smtp.smtputf8)
    except AddressError:
        errors.append(gettext("Please enter a valid email address."))
    if not values["categories"]:
        errors.append(gettext("Please choose at least one category."))
    if newsletter.asks_regions and not values["regions"]:
        errors.append(gettext("Please choose at least one region."))
    if not values["consent"]:
        errors.append(gettext("Please agree to the consent statement."))
    if errors:
        return _signup_form(request, newsletter, status=400, values=values, errors=errors)
    signup = NewSignup(
        newsletter=newsletter.id,
        email=email,
        name=values["name"],
        categories=frozenset(values["categories"]),
        # A newsletter without regional content asks nothing, and the choice of
        # regions made for others stays as it is (see merged_interests).
        regions=frozenset(values["regions"] if newsletter.asks_regions else ()),
        # The statement as the page showed it, in the page's language.
        statement=newsletter.consent_statement_in(locale),
        text_version=newsletter.consent_version,
        # The language of the page it was made on (the newsletter's): the confirmation
        # mail, the pages of its links and, once confirmed, each issue speak it.
        locale=locale,
        ip=client_ip(request),
        user_agent=user_agent(request),
        # The form's own address: consent is given on this page (also after the
        # embeddable snippet), and a Referer or query string may carry anything.
        page_url=settings.public_url + request.url.path,
    )
    interval = timedelta(minutes=newsletter.confirm_interval_minutes)
    # Stored (mail queued) or not, because one was sent lately: the same answer.
    await run_in_threadpool(
        lambda: store_signup(settings, store_of(request), signup, interval=interval)
    )
    return sent


# --- confirmation --------------------------------------------------------------------------


def _confirm_token(request: Request) -> tuple[int, NewsletterSettings] | None:
    settings = settings_of(request)
    token = request.path_params["token"]
    longest = max((n.confirm_days for n in settings.newsletters), default=1)
    try:
        signup_id, newsletter_id = read_confirm_token(settings.secret_key, token, longest * 86400)
        newsletter = settings.newsletter(newsletter_id)
        # Each newsletter's own validity, checked again now that it is known.
        read_confirm_token(settings.secret_key, token, newsletter.confirm_days * 86400)
    except (TokenError, ConfigError):
        return None
    return signup_id, newsletter


def show_confirm(request: Request) -> Response:
    """``GET /confirm/{token}``: a page with the button that confirms the sign-up."""
    found = _confirm_token(request)
    if found is None:
        return invalid_link(request)
    signup_id, newsletter = found
    pending = store_of(request).signup(signup_id)
    if pending is None or pending.newsletter != newsletter.id:
        return invalid_link(request, newsletter.locale)
    locale = reader_locale(pending.locale, newsletter.locale)
    if pending.confirmed_at is not None:
        return message_page(request, 200, locale, *_ALREADY_CONFIRMED)
    return form_page(request, "confirm.html", locale=locale, newsletter=newsletter)


async def confirm(request: Request) -> Response:
    """``POST /confirm/{token}``: confirm the sign-up (the double opt-in), once."""
    found = _confirm_token(request)
    if found is None:
        return invalid_link(request)
    signup_id, newsletter = found
    settings, store = settings_of(request), store_of(request)
    pending = await run_in_threadpool(store.signup, signup_id)
    if pending is None or pending.newsletter != newsletter.id:
        return invalid_link(request, newsletter.locale)
    # The sign-up's language: that of the page it was made on.
    locale = reader_locale(pending.locale, newsletter.locale)
    form = await request.form()
    if not genuine(request, form):
        return form_page(
            request, "confirm.html", 400, locale=locale, newsletter=newsletter, again=True
        )
    interests = merged_interests(
        settings, newsletter, set(pending.categories), set(pending.regions)
    )
    done = await run_in_threadpool(
        lambda: store.confirm_signup(
            signup_id,
            join_list=newsletter.join_list,
            interests=interests,
            ip=client_ip(request),
        )
    )
    if done is None or done[0].subscriber_id is None:
        return invalid_link(request, locale)
    confirmed, first = done
    if not first:
        # One token, one confirmation: a replay must not undo a later withdrawal.
        return message_page(request, 200, locale, *_ALREADY_CONFIRMED)
    assert confirmed.subscriber_id is not None
    return render(
        request,
        "confirmed.html",
        locale=locale,
        newsletter=newsletter,
        preferences_url=preferences_url(settings, newsletter.id, confirmed.subscriber_id),
    )
