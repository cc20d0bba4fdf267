"""The region question of the sign-up and preference pages, and the consent text's language.

Through the ASGI app: a newsletter with regional content (the demo: a segment that
receives only Bayern) asks "all regions" or single ones; a town's newsletter, whose
config names no regions, asks nothing about them. What is chosen is what the reader
is subscribed with once confirmed.
"""

from __future__ import annotations

import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from digest.audience.tokens import make_confirm_token, preferences_url
from digest.config import Settings, parse_settings
from digest.core.models import Subscriber
from digest.store import Store
from digest.web.app import create_app
from tests.audience.test_signup import _client, confirm, csrf_of, signup_ids

ROOT = Path(__file__).resolve().parents[2]
NL = "wochenueberblick"
TOWN = "stadtblatt"
GERMAN_CONSENT = (
    "Ja, ich möchte den Newsletter „{name}“ per E-Mail erhalten. Meine Einwilligung kann "
    "ich jederzeit widerrufen, über den Abmeldelink in jeder Ausgabe oder die "
    "Einstellungsseite."
)


@pytest.fixture
def settings(demo_settings: Settings) -> Settings:
    """The demo and a town's newsletter without regions, both read from config."""
    data = tomllib.loads((ROOT / "config.toml").read_text(encoding="utf-8"))
    [demo] = data["newsletters"]
    town = {
        **demo,
        "id": TOWN,
        "name": "Stadtblatt Musterstadt",
        "list_id": "stadtblatt.kommune-digital.example",
        "segments": [{"name": "alle", "lists": ["stadtblatt"]}],
    }
    del town["regions"]
    data["newsletters"] = [demo, town]
    parsed = parse_settings(data, environ={"DIGEST_STORE_URL": demo_settings.store.url})
    return replace(parsed, outbox=demo_settings.outbox)


async def _sign_up(
    client: httpx.AsyncClient, newsletter: str, address: str, **fields: Any
) -> httpx.Response:
    path = f"/subscribe/{newsletter}"
    form = await client.get(path)
    data: dict[str, Any] = {
        "csrf": csrf_of(form),
        "email": address,
        "categories": ["politik", "verwaltung"],
        "consent": "yes",
    }
    data.update(fields)
    return await client.post(path, data=data)


async def _confirm_last(client: httpx.AsyncClient, settings: Settings, newsletter: str) -> None:
    signup_id = signup_ids(store_of(client))[-1]
    token = make_confirm_token(settings.secret_key, signup_id, newsletter)
    assert (await confirm(client, f"/confirm/{token}")).status_code == 200


def store_of(client: httpx.AsyncClient) -> Store:
    transport = client._transport
    assert isinstance(transport, httpx.ASGITransport)
    store: Store = transport.app.state.store  # type: ignore[attr-defined]
    return store


def test_regional_content_is_read_from_the_config(settings: Settings) -> None:
    assert settings.newsletter(NL).asks_regions  # the segment "bayern"
    assert not settings.newsletter(TOWN).asks_regions
    data = tomllib.loads((ROOT / "config.toml").read_text(encoding="utf-8"))
    [demo] = data["newsletters"]
    demo["segments"] = [{"name": "alle", "lists": ["allgemein"]}]
    assert not parse_settings(data, environ={}).newsletters[0].asks_regions
    demo["regions"] = ["Nord", "Süd"]  # named regions: readers choose among them
    assert parse_settings(data, environ={}).newsletters[0].asks_regions


async def test_a_town_s_newsletter_asks_nothing_about_regions(
    settings: Settings, store: Store
) -> None:
    # A reader of the regional newsletter who chose Bayern there.
    store.save_subscriber(
        Subscriber("buerger@example.org", regions=frozenset({"Bayern"})), ["allgemein"]
    )
    async with _client(create_app(settings, store), settings) as client:
        page = await client.get(f"/subscribe/{TOWN}")
        assert page.status_code == 200
        for absent in ("region_scope", 'name="regions"', "Regionen", "Bayern"):
            assert absent not in page.text, absent
        answer = await _sign_up(client, TOWN, "buerger@example.org")
        assert answer.status_code == 200 and "Bestätigungslink" in answer.text
        assert "Region" not in answer.text
        [signup_id] = signup_ids(store)
        pending = store.signup(signup_id)
        assert pending is not None and pending.regions == frozenset()
        await _confirm_last(client, settings, TOWN)
    subscriber = store.subscriber_by_email("buerger@example.org")
    assert subscriber is not None
    assert "stadtblatt" in subscriber.lists
    assert subscriber.regions == {"Bayern"}  # the other newsletter's choice stays


@pytest.mark.parametrize(
    ("fields", "regions"),
    [
        ({"region_scope": "all"}, set()),  # every region: stored as "everything"
        ({"region_scope": "some", "regions": ["Bayern"]}, {"Bayern"}),
        ({"region_scope": "some", "regions": ["Bayern", "Hessen"]}, {"Bayern", "Hessen"}),
        # Ticks left behind while "all regions" is chosen do not narrow anything.
        ({"region_scope": "all", "regions": ["Bayern"]}, set()),
    ],
)
async def test_all_regions_or_single_ones_is_what_the_reader_gets(
    settings: Settings, store: Store, fields: dict[str, Any], regions: set[str]
) -> None:
    async with _client(create_app(settings, store), settings) as client:
        page = await client.get(f"/subscribe/{NL}")
        assert 'name="region_scope" value="all" checked' in page.text
        assert 'value="Bayern" checked' not in page.text  # nothing to untick
        answer = await _sign_up(client, NL, "leserin@example.org", **fields)
        assert answer.status_code == 200, answer.text
        await _confirm_last(client, settings, NL)
    [reader] = store.active_subscribers(newsletter=NL)
    assert reader.regions == regions


async def test_single_regions_without_a_tick_are_explained(
    settings: Settings, store: Store
) -> None:
    async with _client(create_app(settings, store), settings) as client:
        answer = await _sign_up(client, NL, "leser@example.org", region_scope="some")
    assert answer.status_code == 400
    assert "Bitte wählen Sie mindestens eine Region." in answer.text
    assert 'name="region_scope" value="some" checked' in answer.text  # the choice kept
    assert store.queued_mail() == []


@pytest.mark.parametrize(
    ("locale", "expected"),
    [
        ("de_DE", GERMAN_CONSENT),
        (
            "en_GB",
            "Yes, I would like to receive the newsletter “{name}” by email. I can withdraw "
            "my consent at any time, through the unsubscribe link in every issue or on the "
            "preferences page.",
        ),
    ],
)
async def test_the_default_consent_text_follows_the_page_s_language(
    settings: Settings, store: Store, locale: str, expected: str
) -> None:
    newsletter = replace(settings.newsletter(NL), locale=locale)
    settings = replace(settings, newsletters=(newsletter,))
    statement = expected.format(name=newsletter.name)
    async with _client(create_app(settings, store), settings) as client:
        page = await client.get(f"/subscribe/{NL}")
        assert f'<html lang="{locale[:2]}">' in page.text
        assert f'<label for="consent">{statement}</label>' in page.text
        await _sign_up(client, NL, "einwilligung@example.org", region_scope="all")
        await _confirm_last(client, settings, NL)
    document = store.personal_data("einwilligung@example.org")
    assert document is not None
    [consent] = document["consents"]
    assert consent["statement"] == statement


async def test_preferences_ask_the_same_question(settings: Settings, store: Store) -> None:
    sid = store.save_subscriber(
        Subscriber("praeferenz@example.org", regions=frozenset({"Bayern"})),
        ["allgemein", "stadtblatt"],
    )
    async with _client(create_app(settings, store), settings) as client:
        town = await client.get(preferences_url(settings, TOWN, sid))
        assert "region_scope" not in town.text and 'name="regions"' not in town.text
        url = preferences_url(settings, NL, sid)
        page = await client.get(url)
        assert 'name="region_scope" value="some" checked' in page.text
        assert 'name="regions" value="Bayern" checked' in page.text
        assert 'name="regions" value="Hessen">' in page.text
        saved = await client.post(
            url,
            data={
                "csrf": csrf_of(page),
                "action": "save",
                "newsletters": [NL, TOWN],
                "region_scope": "all",
                "regions": ["Bayern"],
            },
        )
        assert saved.status_code == 200
        assert 'name="region_scope" value="all" checked' in saved.text
    subscriber = store.subscriber_by_email("praeferenz@example.org")
    assert subscriber is not None and subscriber.regions == frozenset()
