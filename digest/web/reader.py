"""The reader's own pages: sign-up, confirmation (double opt-in) and the preference centre.

Every form carries a CSRF token (:mod:`digest.web.forms`). No answer tells whether an
address is known: the sign-up page answers the same for a new, pending, subscribed or
suppressed address, and the preference centre of an unknown or erased subscriber looks
like any invalid link.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from digest.audience.segments import segment_lists
from digest.audience.signup import merged_interests
from digest.audience.tokens import (
    PREFERENCES,
    TokenError,
    preferences_url,
    read_confirm_token,
    read_token,
)
from digest.config import NewsletterSettings, Settings
from digest.core.addresses import checked_address
from digest.core.errors import AddressError, ConfigError
from digest.core.i18n import N_, translations
from digest.core.models import Subscriber
from digest.store import Store
from digest.store.privacy import Consent
from digest.store.signups import NewSignup
from digest.web.forms import CSRF_FIELD, HONEYPOT_FIELD, csrf_token, field_text, form_is_genuine
from digest.web.routing import page, page_locale

__all__ = ["reader_routes"]

Render = Callable[..., Response]
MAX_NAME = 100
#: The suppressions a reader may lift on their preference page: their own withdrawal.
#: A complaint, a hard or soft bounce or the operator's decision is lifted only by a new
#: sign-up with its own double opt-in.
LIFTED_BY_THE_READER = frozenset({"unsubscribed"})
#: Statuses such a suppression for every newsletter leaves behind.
BLOCKED_STATUSES = frozenset({"bounced", "complained", "suppressed"})
#: What the consent proof of a choice on the preference page names as its page: the
#: route, never the link itself (its token opens the reader's data).
PREFERENCES_PAGE = "/preferences/"


@dataclass(frozen=True)
class Choice:
    """One newsletter on a reader's preference page."""

    newsletter: NewsletterSettings
    receives: bool
    #: Suppressed for a reason only a new sign-up lifts: shown, but cannot be chosen.
    blocked: bool

    @property
    def joinable(self) -> bool:
        return not self.receives and not self.blocked and self.newsletter.signup


# Message ids, translated when a page is shown.
_INVALID_LINK = (
    N_("Invalid link"),
    N_(
        "This link is invalid, incomplete or has expired. Please use the complete link "
        "from the email or sign up again."
    ),
)
_ALREADY_CONFIRMED = (
    N_("Already confirmed"),
    N_(
        "This sign-up has already been confirmed, and its link changes nothing any more. "
        "To change your subscription, use the link at the end of each newsletter."
    ),
)
_ERASED = (
    N_("Data erased"),
    N_("Your data has been erased. You will no longer receive any emails from us."),
)


def _client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def reader_routes(
    settings: Settings, store: Store, render: Render, message: Render, not_found: Render
) -> list[Route]:
    """The routes of the sign-up, confirmation and preference pages.

    ``render(request, template, status, locale=..., **context)`` shows a page,
    ``message(request, status, locale, title, text)`` a page of one message.
    """

    def newsletter_of(request: Request) -> NewsletterSettings | None:
        try:
            newsletter = settings.newsletter(request.path_params["newsletter"])
        except ConfigError:
            return None
        return newsletter if newsletter.signup else None

    def form_page(request: Request, name: str, status: int = 200, **context: Any) -> Response:
        context.setdefault("csrf", csrf_token(settings.secret_key, request.url.path))
        return render(request, name, status, csrf_field=CSRF_FIELD, **context)

    def genuine(request: Request, form: FormData) -> bool:
        token = form.get(CSRF_FIELD)
        return form_is_genuine(
            request,
            token if isinstance(token, str) else None,
            settings.secret_key,
            settings.public_url,
        )

    # --- sign-up ---------------------------------------------------------------------------

    def signup_form(
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
            "regions": set(newsletter.regions),
            "consent": False,
        }
        return form_page(
            request,
            "subscribe.html",
            status,
            locale=newsletter.locale,
            newsletter=newsletter,
            values=values,
            errors=errors or [],
            again=again,
            honeypot=HONEYPOT_FIELD,
        )

    def show_signup(request: Request) -> Response:
        newsletter = newsletter_of(request)
        if newsletter is None:
            return not_found(request)
        return signup_form(request, newsletter)

    async def sign_up(request: Request) -> Response:
        newsletter = newsletter_of(request)
        if newsletter is None:
            return not_found(request)
        form = await request.form()
        values: dict[str, Any] = {
            "email": field_text(form.get("email")).strip()[:320],
            "name": " ".join(field_text(form.get("name")).split())[:MAX_NAME],
            "categories": {field_text(v) for v in form.getlist("categories") if isinstance(v, str)}
            & {c.key for c in newsletter.categories},
            "regions": {field_text(v) for v in form.getlist("regions") if isinstance(v, str)}
            & set(newsletter.regions),
            "consent": form.get("consent") == "yes",
        }
        if not genuine(request, form):
            # A form posted from elsewhere (the embeddable snippet, or a forged post):
            # shown again, filled in, for the reader to send from here. Consent is given
            # here, and interests the snippet leaves out are offered all ticked.
            values["categories"] = values["categories"] or {c.key for c in newsletter.categories}
            values["regions"] = values["regions"] or set(newsletter.regions)
            values["consent"] = False
            return signup_form(request, newsletter, values=values, again=True)
        sent = render(request, "signup_sent.html", locale=newsletter.locale, newsletter=newsletter)
        if form.get(HONEYPOT_FIELD):
            return sent  # a robot: the same answer, nothing done
        gettext = translations(newsletter.locale).gettext
        errors = []
        try:
            email = checked_address(values["email"], smtputf8=settings.smtp.smtputf8)
        except AddressError:
            errors.append(gettext("Please enter a valid email address."))
        if not values["categories"]:
            errors.append(gettext("Please choose at least one category."))
        if not values["regions"]:
            errors.append(gettext("Please choose at least one region."))
        if not values["consent"]:
            errors.append(gettext("Please agree to the consent statement."))
        if errors:
            return signup_form(request, newsletter, status=400, values=values, errors=errors)
        signup = NewSignup(
            newsletter=newsletter.id,
            email=email,
            name=values["name"],
            categories=frozenset(values["categories"]),
            regions=frozenset(values["regions"]),
            statement=newsletter.consent_statement,
            text_version=newsletter.consent_version,
            locale=newsletter.locale,
            ip=_client_ip(request),
            user_agent=(request.headers.get("user-agent") or "")[:1000] or None,
            # The form's own address: consent is given on this page (also after the
            # embeddable snippet), and a Referer or query string may carry anything.
            page_url=settings.public_url + request.url.path,
        )
        interval = timedelta(minutes=newsletter.confirm_interval_minutes)
        # Stored (mail queued) or not, because one was sent lately: the same answer.
        await run_in_threadpool(store.add_signup, signup, interval=interval)
        return sent

    # --- confirmation ----------------------------------------------------------------------

    def invalid_link(request: Request, locale: str | None = None) -> Response:
        return message(request, 400, locale or settings.locale, *_INVALID_LINK)

    def confirm_token(request: Request) -> tuple[int, NewsletterSettings] | None:
        token = request.path_params["token"]
        longest = max((n.confirm_days for n in settings.newsletters), default=1)
        try:
            signup_id, newsletter_id = read_confirm_token(
                settings.secret_key, token, longest * 86400
            )
            newsletter = settings.newsletter(newsletter_id)
            # Each newsletter's own validity, checked again now that it is known.
            read_confirm_token(settings.secret_key, token, newsletter.confirm_days * 86400)
        except (TokenError, ConfigError):
            return None
        return signup_id, newsletter

    def show_confirm(request: Request) -> Response:
        found = confirm_token(request)
        if found is None:
            return invalid_link(request)
        signup_id, newsletter = found
        pending = store.signup(signup_id)
        if pending is None or pending.newsletter != newsletter.id:
            return invalid_link(request, newsletter.locale)
        if pending.confirmed_at is not None:
            return message(request, 200, newsletter.locale, *_ALREADY_CONFIRMED)
        return form_page(request, "confirm.html", locale=newsletter.locale, newsletter=newsletter)

    async def confirm(request: Request) -> Response:
        found = confirm_token(request)
        if found is None:
            return invalid_link(request)
        signup_id, newsletter = found
        form = await request.form()
        if not genuine(request, form):
            return form_page(
                request,
                "confirm.html",
                400,
                locale=newsletter.locale,
                newsletter=newsletter,
                again=True,
            )
        pending = await run_in_threadpool(store.signup, signup_id)
        if pending is None or pending.newsletter != newsletter.id:
            return invalid_link(request, newsletter.locale)
        interests = merged_interests(
            settings, newsletter, set(pending.categories), set(pending.regions)
        )
        done = await run_in_threadpool(
            lambda: store.confirm_signup(
                signup_id,
                join_list=newsletter.join_list,
                interests=interests,
                ip=_client_ip(request),
            )
        )
        if done is None or done[0].subscriber_id is None:
            return invalid_link(request, newsletter.locale)
        confirmed, first = done
        if not first:
            # One token, one confirmation: a replay must not undo a later withdrawal.
            return message(request, 200, newsletter.locale, *_ALREADY_CONFIRMED)
        assert confirmed.subscriber_id is not None
        return render(
            request,
            "confirmed.html",
            locale=newsletter.locale,
            newsletter=newsletter,
            preferences_url=preferences_url(settings, newsletter.id, confirmed.subscriber_id),
        )

    # --- preference centre -----------------------------------------------------------------

    def reader_of(request: Request) -> tuple[Subscriber, str, NewsletterSettings] | None:
        try:
            sid, newsletter_id = read_token(
                settings.secret_key, PREFERENCES, request.path_params["token"]
            )
            newsletter = settings.newsletter(newsletter_id)
        except (TokenError, ConfigError):
            return None
        found = store.subscriber_by_id(sid)
        if found is None:
            return None
        return found[0], found[1], newsletter

    def token_locale(request: Request) -> str:
        # As for an unsubscribe link: the language of the newsletter a genuine token names,
        # whether or not its subscriber exists, so the answer tells nothing about them.
        try:
            _sid, newsletter_id = read_token(
                settings.secret_key, PREFERENCES, request.path_params["token"]
            )
        except TokenError:
            return settings.locale
        return page_locale(settings, newsletter_id)

    def receives(subscriber: Subscriber, status: str, newsletter: NewsletterSettings) -> bool:
        assert subscriber.id is not None
        return (
            status == "active"
            and bool(subscriber.lists & segment_lists(newsletter))
            and not store.unsubscribed(subscriber.id, newsletter.id)
            and not store.is_suppressed(subscriber.email, newsletter.id)
        )

    def choices(subscriber: Subscriber, status: str) -> list[Choice]:
        """The newsletters the page offers: those open to sign-ups and those the reader
        receives; a closed newsletter the reader does not get is never named."""
        suppressions = store.suppressions_of(subscriber.email)
        offered = []
        for newsletter in settings.newsletters:
            gets = receives(subscriber, status, newsletter)
            if not gets and not newsletter.signup:
                continue
            blocked = not gets and (
                status in BLOCKED_STATUSES
                or any(
                    s["scope"] in ("all", newsletter.id) and s["reason"] not in LIFTED_BY_THE_READER
                    for s in suppressions
                )
            )
            offered.append(Choice(newsletter, gets, blocked))
        return offered

    def preferences_page(
        request: Request,
        subscriber: Subscriber,
        status: str,
        newsletter: NewsletterSettings,
        *,
        saved: bool = False,
        http_status: int = 200,
    ) -> Response:
        own_categories = {c.key for c in newsletter.categories}
        chosen_categories = subscriber.categories & own_categories or own_categories
        chosen_regions = subscriber.regions & set(newsletter.regions) or set(newsletter.regions)
        return form_page(
            request,
            "preferences.html",
            http_status,
            locale=newsletter.locale,
            newsletter=newsletter,
            subscriber=subscriber,
            categories=chosen_categories,
            regions=chosen_regions,
            choices=choices(subscriber, status),
            saved=saved,
        )

    def show_preferences(request: Request) -> Response:
        found = reader_of(request)
        if found is None:
            return invalid_link(request, token_locale(request))
        return preferences_page(request, *found)

    async def change_preferences(request: Request) -> Response:
        found = await run_in_threadpool(reader_of, request)
        if found is None:
            return invalid_link(request, token_locale(request))
        subscriber, status, newsletter = found
        form = await request.form()
        if not genuine(request, form):
            return await run_in_threadpool(
                lambda: preferences_page(request, subscriber, status, newsletter, http_status=400)
            )
        action = form.get("action")
        handler = {
            "save": save_preferences,
            "unsubscribe": unsubscribe_one,
            "unsubscribe_all": unsubscribe_all,
            "export": export,
            "erase": ask_to_erase,
            "erase_confirmed": erase,
        }.get(action if isinstance(action, str) else "")
        if handler is None:
            return invalid_link(request, newsletter.locale)
        return await run_in_threadpool(handler, request, form, subscriber, newsletter)

    def save_preferences(
        request: Request, form: FormData, subscriber: Subscriber, newsletter: NewsletterSettings
    ) -> Response:
        assert subscriber.id is not None
        chosen_categories = {
            field_text(v) for v in form.getlist("categories") if isinstance(v, str)
        }
        chosen_regions = {field_text(v) for v in form.getlist("regions") if isinstance(v, str)}
        own = {c.key for c in newsletter.categories}
        interests = merged_interests(
            settings,
            newsletter,
            chosen_categories & own or own,
            chosen_regions & set(newsletter.regions) or set(newsletter.regions),
        )
        categories, regions = interests(subscriber.categories, subscriber.regions)
        name = " ".join(field_text(form.get("name")).split())[:MAX_NAME]
        store.set_interests(subscriber.id, name=name, categories=categories, regions=regions)
        wanted = {field_text(v) for v in form.getlist("newsletters") if isinstance(v, str)}
        found = store.subscriber_by_id(subscriber.id)
        assert found is not None
        offered = choices(*found)
        for choice in offered:
            if choice.receives and choice.newsletter.id not in wanted:
                store.unsubscribe(subscriber.id, choice.newsletter.id)
        joining = [c.newsletter for c in offered if c.joinable and c.newsletter.id in wanted]
        if joining:
            keep_withdrawn(subscriber, {n.id for n in joining})
        for other in joining:
            subscribe_from_preferences(request, subscriber, other)
        updated = store.subscriber_by_id(subscriber.id)
        assert updated is not None
        return preferences_page(request, *updated, newsletter, saved=True)

    def keep_withdrawn(subscriber: Subscriber, joining: set[str]) -> None:
        """Before joining lifts an "unsubscribe from all": every other newsletter the
        reader would get again without it is withdrawn from on its own, so that only
        what was chosen comes back."""
        assert subscriber.id is not None
        if not store.is_suppressed(subscriber.email):
            return
        scoped = {s["scope"] for s in store.suppressions_of(subscriber.email)}
        for other in settings.newsletters:
            if (
                other.id not in joining
                and other.id not in scoped
                and subscriber.lists & segment_lists(other)
                and not store.unsubscribed(subscriber.id, other.id)
            ):
                store.unsubscribe(subscriber.id, other.id)

    def subscribe_from_preferences(
        request: Request, subscriber: Subscriber, newsletter: NewsletterSettings
    ) -> None:
        # The link came to this mailbox: following it is a confirmed opt-in, kept as such.
        assert subscriber.id is not None
        now = datetime.now(UTC)
        store.join_list(subscriber.id, newsletter.join_list, now)
        consent_id = store.record_consent(
            subscriber.id,
            Consent(
                statement=newsletter.consent_statement,
                source="preferences",
                newsletter=newsletter.id,
                list_name=newsletter.join_list,
                text_version=newsletter.consent_version,
                created_at=now,
                ip=_client_ip(request),
                user_agent=(request.headers.get("user-agent") or "")[:1000] or None,
                page_url=PREFERENCES_PAGE,
                confirmed_at=now,
                confirm_ip=_client_ip(request),
            ),
        )
        store.lift(subscriber.email, consent_id, newsletter.id)

    def unsubscribe_one(
        request: Request, _form: FormData, subscriber: Subscriber, newsletter: NewsletterSettings
    ) -> Response:
        assert subscriber.id is not None
        store.unsubscribe(subscriber.id, newsletter.id)
        return render(
            request,
            "unsubscribed.html",
            locale=newsletter.locale,
            preferences=request.url.path,
        )

    def unsubscribe_all(
        request: Request, _form: FormData, subscriber: Subscriber, newsletter: NewsletterSettings
    ) -> Response:
        store.suppress(subscriber.email, "unsubscribed")
        return render(request, "unsubscribed.html", locale=newsletter.locale, everything=True)

    def export(
        _request: Request, _form: FormData, subscriber: Subscriber, newsletter: NewsletterSettings
    ) -> Response:
        document = store.personal_data(subscriber.email)
        # TRANSLATORS: the name of the downloaded file with the reader's data.
        filename = translations(newsletter.locale).gettext("my-data.json")
        body = json.dumps(document, ensure_ascii=False, indent=2) + "\n"
        return Response(
            body.encode("utf-8"),
            media_type="application/json; charset=utf-8",
            headers={"content-disposition": f'attachment; filename="{filename}"'},
        )

    def ask_to_erase(
        request: Request, _form: FormData, _subscriber: Subscriber, newsletter: NewsletterSettings
    ) -> Response:
        return form_page(request, "erase.html", locale=newsletter.locale, newsletter=newsletter)

    def erase(
        request: Request, _form: FormData, subscriber: Subscriber, newsletter: NewsletterSettings
    ) -> Response:
        store.erase(subscriber.email)
        return message(request, 200, newsletter.locale, *_ERASED)

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
