"""The one-click unsubscribe endpoint (RFC 8058), through the ASGI app in-process."""

from __future__ import annotations

import httpx

from digest.config import Settings
from digest.models import Subscriber
from digest.store import Store
from digest.tokens import UNSUBSCRIBE, make_token, unsubscribe_url
from digest.web.app import create_app

NL = "wochenueberblick"


def _client(settings: Settings, store: Store) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(settings, store))
    return httpx.AsyncClient(transport=transport, base_url=settings.public_url)


async def test_one_click_post_unsubscribes_without_redirect(
    demo_settings: Settings, store: Store
) -> None:
    sid = store.save_subscriber(Subscriber("a@example.org", "Anna"), ["allgemein"])
    url = unsubscribe_url(demo_settings, "wochenueberblick", sid)
    async with _client(demo_settings, store) as client:
        page = await client.get(url)
        assert page.status_code == 200 and 'method="post"' in page.text
        assert len(store.active_subscribers(newsletter=NL)) == 1  # GET changes nothing
        done = await client.post(url, data={"List-Unsubscribe": "One-Click"})
        assert done.status_code == 200 and not done.is_redirect
        assert "a@example.org" in done.text
    assert store.active_subscribers(newsletter=NL) == []
    # only this newsletter: the subscriber stays for any other
    assert [s.email for s in store.active_subscribers(newsletter="anderer")] == ["a@example.org"]


async def test_multipart_body_and_a_second_click_are_fine(
    demo_settings: Settings, store: Store
) -> None:
    sid = store.save_subscriber(Subscriber("b@example.org"), ["allgemein"])
    url = unsubscribe_url(demo_settings, "wochenueberblick", sid)
    async with _client(demo_settings, store) as client:
        first = await client.post(url, files={"List-Unsubscribe": (None, "One-Click")})
        second = await client.post(url, data={"List-Unsubscribe": "One-Click"})
    assert first.status_code == second.status_code == 200
    assert store.active_subscribers(newsletter=NL) == []


async def test_forged_or_foreign_tokens_are_refused(demo_settings: Settings, store: Store) -> None:
    sid = store.save_subscriber(Subscriber("c@example.org"), ["allgemein"])
    good = make_token(demo_settings.secret_key, UNSUBSCRIBE, sid, "wochenueberblick")
    forged = make_token("another-key", UNSUBSCRIBE, sid, "wochenueberblick")
    preferences = make_token(demo_settings.secret_key, "preferences", sid, "wochenueberblick")
    async with _client(demo_settings, store) as client:
        for token in (forged, preferences, good[:-3] + "abc", "nonsense"):
            response = await client.post(f"/unsubscribe/{token}")
            assert response.status_code == 400
    assert len(store.active_subscribers(newsletter=NL)) == 1
