"""The preference centre: a reader's interests, newsletters, withdrawal, export and erasure.

The signed link is the key; every change is a CSRF-checked POST. The pages speak the
reader's own locale (as stored; else the newsletter's). The page of an unknown or erased
subscriber looks like any invalid link, in the language a genuine token names (the
reader's locale it carries, else its newsletter's), so that the answer tells nothing
about them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

from digest.audience.requests import export_document, export_json
from digest.audience.segments import segment_lists
from digest.audience.signup import merged_interests
from digest.audience.tokens import PREFERENCES, TokenError, read_token, read_token_locale
from digest.config import NewsletterSettings, Settings
from digest.core.errors import ConfigError
from digest.core.i18n import N_, reader_locale, translations
from digest.core.models import Subscriber
from digest.store import Store
from digest.store.privacy import Consent
from digest.web.forms import field_text
from digest.web.pages import message_page, render, settings_of, store_of
from digest.web.reader_pages import (
    ALL_REGIONS,
    SOME_REGIONS,
    chosen_regions,
    client_ip,
    form_page,
    genuine,
    invalid_link,
    reader_name,
    user_agent,
)
from digest.web.routing import page_locale

__all__ = ["Choice", "change_preferences", "show_preferences"]

#: The suppressions a reader may lift on their preference page: their own withdrawal.
#: A complaint, a hard or soft bounce or the operator's decision is lifted only by a new
#: sign-up with its own double opt-in.
LIFTED_BY_THE_READER = frozenset({"unsubscribed"})
#: Statuses such a suppression for every newsletter leaves behind.
BLOCKED_STATUSES = frozenset({"bounced", "complained", "suppressed"})
#: What the consent proof of a choice on the preference page names as its page: the
#: route, never the link itself (its token opens the reader's data).
PREFERENCES_PAGE = "/preferences/"

# Message ids, translated when a page is shown.
_ERASED = (
    N_("Data erased"),
    N_("Your data has been erased. You will no longer receive any emails from us."),
)

Action = Callable[[Request, FormData, Subscriber, NewsletterSettings], Response]


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


def _reader_of(request: Request) -> tuple[Subscriber, str, NewsletterSettings] | None:
    settings = settings_of(request)
    try:
        sid, newsletter_id = read_token(
            settings.secret_key, PREFERENCES, request.path_params["token"]
        )
        newsletter = settings.newsletter(newsletter_id)
    except (TokenError, ConfigError):
        return None
    found = store_of(request).subscriber_by_id(sid)
    if found is None:
        return None
    return found[0], found[1], newsletter


def _token_locale(request: Request) -> str:
    # As for an unsubscribe link: the language a genuine token names, whether or not
    # its subscriber exists, so the answer tells nothing about them.
    settings = settings_of(request)
    try:
        _sid, newsletter_id, locale = read_token_locale(
            settings.secret_key, PREFERENCES, request.path_params["token"]
        )
    except TokenError:
        return settings.locale
    return page_locale(settings, newsletter_id, locale)


def _locale(subscriber: Subscriber, newsletter: NewsletterSettings) -> str:
    """The language of the reader's pages: their own locale, else the newsletter's."""
    return reader_locale(subscriber.locale, newsletter.locale)


def _receives(
    store: Store, subscriber: Subscriber, status: str, newsletter: NewsletterSettings
) -> bool:
    assert subscriber.id is not None
    return (
        status == "active"
        and bool(subscriber.lists & segment_lists(newsletter))
        and not store.unsubscribed(subscriber.id, newsletter.id)
        and not store.is_suppressed(subscriber.email, newsletter.id)
    )


def _choices(settings: Settings, store: Store, subscriber: Subscriber, status: str) -> list[Choice]:
    """The newsletters the page offers: those open to sign-ups and those the reader
    receives; a closed newsletter the reader does not get is never named."""
    suppressions = store.suppressions_of(subscriber.email)
    offered = []
    for newsletter in settings.newsletters:
        gets = _receives(store, subscriber, status, newsletter)
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


def _preferences_page(
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
    own_regions = set(newsletter.regions)
    chosen_regions = subscriber.regions & own_regions
    some = bool(chosen_regions) and chosen_regions != own_regions
    return form_page(
        request,
        "preferences.html",
        http_status,
        locale=_locale(subscriber, newsletter),
        newsletter=newsletter,
        subscriber=subscriber,
        categories=chosen_categories,
        region_scope=SOME_REGIONS if some else ALL_REGIONS,
        regions=chosen_regions if some else set(),
        choices=_choices(settings_of(request), store_of(request), subscriber, status),
        saved=saved,
    )


def show_preferences(request: Request) -> Response:
    """``GET /preferences/{token}``: the reader's preference page."""
    found = _reader_of(request)
    if found is None:
        return invalid_link(request, _token_locale(request))
    return _preferences_page(request, *found)


async def change_preferences(request: Request) -> Response:
    """``POST /preferences/{token}``: the action the form's button names."""
    found = await run_in_threadpool(_reader_of, request)
    if found is None:
        return invalid_link(request, _token_locale(request))
    subscriber, status, newsletter = found
    form = await request.form()
    if not genuine(request, form):
        return await run_in_threadpool(
            lambda: _preferences_page(request, subscriber, status, newsletter, http_status=400)
        )
    action = form.get("action")
    handler = _ACTIONS.get(action if isinstance(action, str) else "")
    if handler is None:
        return invalid_link(request, _locale(subscriber, newsletter))
    return await run_in_threadpool(handler, request, form, subscriber, newsletter)


def _save_preferences(
    request: Request, form: FormData, subscriber: Subscriber, newsletter: NewsletterSettings
) -> Response:
    assert subscriber.id is not None
    settings, store = settings_of(request), store_of(request)
    chosen_categories = {field_text(v) for v in form.getlist("categories") if isinstance(v, str)}
    _scope, chosen = chosen_regions(form, newsletter)
    own = {c.key for c in newsletter.categories}
    interests = merged_interests(
        settings,
        newsletter,
        chosen_categories & own or own,
        # "Only selected regions" with none ticked: all of them, as without a choice.
        chosen or set(newsletter.regions),
    )
    categories, regions = interests(subscriber.categories, subscriber.regions)
    name = reader_name(form.get("name"))
    store.set_interests(subscriber.id, name=name, categories=categories, regions=regions)
    wanted = {field_text(v) for v in form.getlist("newsletters") if isinstance(v, str)}
    found = store.subscriber_by_id(subscriber.id)
    assert found is not None
    offered = _choices(settings, store, *found)
    for choice in offered:
        if choice.receives and choice.newsletter.id not in wanted:
            store.unsubscribe(subscriber.id, choice.newsletter.id)
    joining = [c.newsletter for c in offered if c.joinable and c.newsletter.id in wanted]
    if joining:
        _keep_withdrawn(settings, store, subscriber, {n.id for n in joining})
    for other in joining:
        _subscribe_from_preferences(request, store, subscriber, other)
    updated = store.subscriber_by_id(subscriber.id)
    assert updated is not None
    return _preferences_page(request, *updated, newsletter, saved=True)


def _keep_withdrawn(
    settings: Settings, store: Store, subscriber: Subscriber, joining: set[str]
) -> None:
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


def _subscribe_from_preferences(
    request: Request, store: Store, subscriber: Subscriber, newsletter: NewsletterSettings
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
            ip=client_ip(request),
            user_agent=user_agent(request),
            page_url=PREFERENCES_PAGE,
            confirmed_at=now,
            confirm_ip=client_ip(request),
        ),
    )
    store.lift(subscriber.email, consent_id, newsletter.id)


def _unsubscribe_one(
    request: Request, _form: FormData, subscriber: Subscriber, newsletter: NewsletterSettings
) -> Response:
    assert subscriber.id is not None
    store_of(request).unsubscribe(subscriber.id, newsletter.id)
    return render(
        request,
        "unsubscribed.html",
        locale=_locale(subscriber, newsletter),
        newsletter_name=newsletter.name,
        preferences=request.url.path,
    )


def _unsubscribe_all(
    request: Request, _form: FormData, subscriber: Subscriber, newsletter: NewsletterSettings
) -> Response:
    store_of(request).suppress(subscriber.email, "unsubscribed")
    locale = _locale(subscriber, newsletter)
    return render(request, "unsubscribed.html", locale=locale, everything=True)


def _export(
    request: Request, _form: FormData, subscriber: Subscriber, newsletter: NewsletterSettings
) -> Response:
    # The document of `digest subscribers export`, with the audit log's entries about them.
    document = export_document(store_of(request), subscriber.email)
    # TRANSLATORS: the name of the downloaded file with the reader's data.
    filename = translations(_locale(subscriber, newsletter)).gettext("my-data.json")
    body = export_json(document or {})
    return Response(
        body.encode("utf-8"),
        media_type="application/json; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{filename}"'},
    )


def _ask_to_erase(
    request: Request, _form: FormData, subscriber: Subscriber, newsletter: NewsletterSettings
) -> Response:
    locale = _locale(subscriber, newsletter)
    return form_page(request, "erase.html", locale=locale, newsletter=newsletter)


def _erase(
    request: Request, _form: FormData, subscriber: Subscriber, newsletter: NewsletterSettings
) -> Response:
    store_of(request).erase(subscriber.email)
    return message_page(request, 200, _locale(subscriber, newsletter), *_ERASED)


#: What each button of the preference form (its ``action``) does.
_ACTIONS: dict[str, Action] = {
    "save": _save_preferences,
    "unsubscribe": _unsubscribe_one,
    "unsubscribe_all": _unsubscribe_all,
    "export": _export,
    "erase": _ask_to_erase,
    "erase_confirmed": _erase,
}
