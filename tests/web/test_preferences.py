"""The preference centre: the signed link is the key; every change is a CSRF-checked POST."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import httpx
import pytest

from digest.audience.requests import export_document
from digest.audience.tokens import make_token, preferences_url, unsubscribe_url
from digest.config import SegmentSettings, Settings
from digest.core.models import Subscriber
from digest.store import Store
from digest.web.app import create_app
from tests.audience.test_signup import CSRF, _client, csrf_of, sign_up, snapshot

NL = "wochenueberblick"
OTHER = "zweiter"


@pytest.fixture
def settings(demo_settings: Settings) -> Settings:
    """The demo with a second newsletter of the same publisher, on its own list."""
    first = demo_settings.newsletter(NL)
    second = replace(
        first,
        id=OTHER,
        name="Kommune Digital – Zweiter",
        list_id="zweiter.kommune-digital.example",
        segments=(SegmentSettings("alle", ("zweiter",)),),
    )
    return replace(demo_settings, newsletters=(first, second))


def _subscriber(store: Store) -> int:
    return store.save_subscriber(
        Subscriber("leser@example.org", "Lea Leser", categories=frozenset({"politik"})),
        ["allgemein"],
    )


async def post(client: httpx.AsyncClient, url: str, **data: Any) -> httpx.Response:
    shown = await client.get(url)
    return await client.post(url, data={"csrf": csrf_of(shown), **data})


async def test_the_page_shows_the_reader_s_choices_and_changes_nothing(
    settings: Settings, store: Store
) -> None:
    sid = _subscriber(store)
    url = preferences_url(settings, NL, sid)
    before = snapshot(store)
    async with _client(create_app(settings, store), settings) as client:
        page = await client.get(url)
        head = await client.head(url)
    assert page.status_code == head.status_code == 200
    assert 'value="Lea Leser"' in page.text
    assert 'value="politik" checked' in page.text
    assert 'value="verwaltung" checked' not in page.text
    assert f'value="{NL}" checked' in page.text and f'value="{OTHER}">' in page.text
    assert "leser@example.org" not in page.text
    assert snapshot(store) == before


async def test_saving_changes_name_interests_and_newsletters(
    settings: Settings, store: Store
) -> None:
    sid = _subscriber(store)
    url = preferences_url(settings, NL, sid)
    async with _client(create_app(settings, store), settings) as client:
        answer = await post(
            client,
            url,
            action="save",
            name="Lea Neu",
            categories=["verwaltung", "sicherheit"],
            regions=["Bayern"],
            newsletters=[OTHER],
        )
    assert answer.status_code == 200 and "gespeichert" in answer.text
    found = store.subscriber_by_id(sid)
    assert found is not None
    subscriber, status = found
    assert subscriber.name == "Lea Neu" and status == "active"
    assert subscriber.categories == {"verwaltung", "sicherheit"}
    assert subscriber.regions == {"Bayern"}
    assert [s.email for s in store.active_subscribers(newsletter=NL)] == []
    assert store.unsubscribed(sid, NL)
    others = store.active_subscribers(["zweiter"], newsletter=OTHER)
    assert [s.email for s in others] == ["leser@example.org"]
    document = store.personal_data("leser@example.org")
    assert document is not None
    assert [c["source"] for c in document["consents"]] == ["preferences"]


async def test_unsubscribe_from_this_one_and_from_all(settings: Settings, store: Store) -> None:
    sid = _subscriber(store)
    store.join_list(sid, "zweiter")
    app = create_app(settings, store)
    async with _client(app, settings) as client:
        one = await post(client, preferences_url(settings, NL, sid), action="unsubscribe")
        assert one.status_code == 200 and "nicht mehr" in one.text
        assert store.active_subscribers(newsletter=NL) == []
        assert len(store.active_subscribers(["zweiter"], newsletter=OTHER)) == 1
        every = await post(client, preferences_url(settings, OTHER, sid), action="unsubscribe_all")
    assert every.status_code == 200 and "allen" in every.text
    assert store.is_suppressed("leser@example.org")
    assert store.active_subscribers(newsletter=OTHER) == []


async def test_export_is_the_document_of_the_cli(settings: Settings, store: Store) -> None:
    sid = _subscriber(store)
    async with _client(create_app(settings, store), settings) as client:
        answer = await post(client, preferences_url(settings, NL, sid), action="export")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/json")
    assert "attachment" in answer.headers["content-disposition"]
    document = json.loads(answer.content)
    assert document == export_document(store, "leser@example.org")
    assert document == {**(store.personal_data("leser@example.org") or {}), "audit": []}


async def test_erase_asks_first_and_then_the_link_is_dead(settings: Settings, store: Store) -> None:
    sid = _subscriber(store)
    url = preferences_url(settings, NL, sid)
    unknown = preferences_url(settings, NL, sid + 1000)
    async with _client(create_app(settings, store), settings) as client:
        before = snapshot(store)
        asked = await post(client, url, action="erase")
        assert asked.status_code == 200 and 'value="erase_confirmed"' in asked.text
        assert snapshot(store) == before
        done = await client.post(url, data={"csrf": csrf_of(asked), "action": "erase_confirmed"})
        assert done.status_code == 200 and "gelöscht" in done.text
        after = [await client.get(url), await client.get(unknown)]
    assert store.subscriber_by_email("leser@example.org") is None
    assert store.is_suppressed("leser@example.org")
    assert after[0].status_code == after[1].status_code == 400
    assert after[0].content == after[1].content


async def test_bad_tokens_and_missing_csrf_change_nothing(settings: Settings, store: Store) -> None:
    sid = _subscriber(store)
    key = settings.secret_key
    good = make_token(key, "preferences", sid, NL)
    before = snapshot(store)
    async with _client(create_app(settings, store), settings) as client:
        refused = []
        for token in (
            make_token("another-secret-key-123", "preferences", sid, NL),
            good[:-3],
            make_token(key, "unsubscribe", sid, NL),
            make_token(key, "preferences", sid, "eingestellt"),
        ):
            refused.append(await client.post(f"/preferences/{token}", data={"action": "erase"}))
        no_csrf = await client.post(f"/preferences/{good}", data={"action": "unsubscribe_all"})
        wrong_csrf = await client.post(
            f"/preferences/{good}",
            data={"action": "unsubscribe_all", "csrf": "x"},
            headers={"origin": "https://evil.example"},
        )
    assert {r.status_code for r in refused} == {400}
    assert len({r.content for r in refused}) == 1
    assert no_csrf.status_code == wrong_csrf.status_code == 400
    assert CSRF.search(no_csrf.text)  # the form again, to send from here
    assert snapshot(store) == before


async def test_the_unsubscribe_page_leads_to_the_preferences(
    settings: Settings, store: Store
) -> None:
    sid = _subscriber(store)
    url = unsubscribe_url(settings, NL, sid)
    async with _client(create_app(settings, store), settings) as client:
        page = await client.get(url)
        assert 'href="?einstellungen"' in page.text
        onward = await client.get(url + "?einstellungen")
    assert onward.status_code == 303
    assert onward.headers["location"] == preferences_url(settings, NL, sid)


@pytest.mark.parametrize("reason", ["complaint", "hard_bounce"])
async def test_saving_never_lifts_a_complaint_or_a_hard_bounce(
    settings: Settings, store: Store, reason: str
) -> None:
    sid = _subscriber(store)
    store.suppress("leser@example.org", reason)
    [status_before] = [s for _sub, s in store.subscriber_rows()]
    url = preferences_url(settings, NL, sid)
    async with _client(create_app(settings, store), settings) as client:
        page = await client.get(url)
        answer = await post(client, url, action="save", name="Lea", newsletters=[NL, OTHER])
    assert status_before in ("complained", "bounced")
    assert answer.status_code == 200
    assert store.is_suppressed("leser@example.org", NL)
    assert store.is_suppressed("leser@example.org", OTHER)
    found = store.subscriber_by_id(sid)
    assert found is not None and found[1] == status_before
    assert store.active_subscribers(newsletter=NL) == []
    document = store.personal_data("leser@example.org")
    assert document is not None and document["consents"] == []
    for shown in (page, answer):
        assert f'value="{NL}" disabled' in shown.text
        assert "nicht hier auswählen" in shown.text
        assert f'href="../subscribe/{NL}"' in shown.text


async def test_a_complaint_for_one_newsletter_blocks_only_that_one(
    settings: Settings, store: Store
) -> None:
    sid = _subscriber(store)
    store.suppress("leser@example.org", "complaint", NL)
    url = preferences_url(settings, NL, sid)
    async with _client(create_app(settings, store), settings) as client:
        await post(client, url, action="save", newsletters=[NL, OTHER])
    assert store.is_suppressed("leser@example.org", NL)
    assert store.active_subscribers(newsletter=NL) == []
    others = store.active_subscribers(["zweiter"], newsletter=OTHER)
    assert [s.email for s in others] == ["leser@example.org"]


@pytest.fixture
def closed(settings: Settings) -> Settings:
    """The second newsletter takes no sign-ups."""
    first, second = settings.newsletters
    return replace(settings, newsletters=(first, replace(second, signup=False)))


async def test_a_closed_newsletter_is_neither_shown_nor_joined(
    closed: Settings, store: Store
) -> None:
    sid = _subscriber(store)
    url = preferences_url(closed, NL, sid)
    async with _client(create_app(closed, store), closed) as client:
        page = await client.get(url)
        answer = await post(client, url, action="save", newsletters=[NL, OTHER])
    for shown in (page, answer):
        assert OTHER not in shown.text and "Zweiter" not in shown.text
    assert store.active_subscribers(["zweiter"], newsletter=OTHER) == []
    found = store.subscriber_by_id(sid)
    assert found is not None and "zweiter" not in found[0].lists
    document = store.personal_data("leser@example.org")
    assert document is not None and document["consents"] == []


async def test_a_reader_of_a_closed_newsletter_sees_it_and_may_leave_it(
    closed: Settings, store: Store
) -> None:
    sid = _subscriber(store)
    store.join_list(sid, "zweiter")
    url = preferences_url(closed, NL, sid)
    async with _client(create_app(closed, store), closed) as client:
        page = await client.get(url)
        assert f'value="{OTHER}" checked' in page.text
        await post(client, url, action="save", newsletters=[NL])
        left = await client.get(url)
    assert store.active_subscribers(["zweiter"], newsletter=OTHER) == []
    assert OTHER not in left.text  # gone, and closed: not offered again


async def test_rejoining_one_after_unsubscribing_from_all_brings_back_only_that_one(
    settings: Settings, store: Store
) -> None:
    sid = _subscriber(store)
    store.join_list(sid, "zweiter")
    url = preferences_url(settings, NL, sid)
    async with _client(create_app(settings, store), settings) as client:
        await post(client, url, action="unsubscribe_all")
        assert store.active_subscribers(newsletter=NL) == []
        await post(client, url, action="save", newsletters=[OTHER])
    others = store.active_subscribers(["zweiter"], newsletter=OTHER)
    assert [s.email for s in others] == ["leser@example.org"]
    assert store.active_subscribers(newsletter=NL) == []


async def test_the_consent_proof_holds_the_route_not_the_link(
    settings: Settings, store: Store
) -> None:
    sid = _subscriber(store)
    url = preferences_url(settings, NL, sid)
    token = url.rsplit("/", 1)[1]
    async with _client(create_app(settings, store), settings) as client:
        await post(client, url, action="save", newsletters=[NL, OTHER])
        exported = await post(client, url, action="export")
    [consent] = exported.json()["consents"]
    assert consent["source"] == "preferences" and consent["page_url"] == "/preferences/"
    assert token not in exported.text


async def test_nul_characters_in_a_reader_s_form_are_no_error(
    settings: Settings, store: Store
) -> None:
    """PostgreSQL cannot store a NUL character: one in a typed name is dropped, not a 500."""
    sid = _subscriber(store)
    url = preferences_url(settings, NL, sid)
    async with _client(create_app(settings, store), settings) as client:
        saved = await post(
            client, url, action="save", name="Lea\x00 Neu", categories=["politik\x00"]
        )
        signed_up = await sign_up(client, "neu@example.org", name="Nina\x00 Neu")
    assert saved.status_code == 200 and "gespeichert" in saved.text
    found = store.subscriber_by_id(sid)
    assert found is not None and found[0].name == "Lea Neu"
    assert found[0].categories == {"politik"}
    assert signed_up.status_code == 200
    document = store.personal_data("neu@example.org")
    assert document is not None and "\x00" not in json.dumps(document)
