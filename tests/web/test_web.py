"""The one-click unsubscribe endpoint (RFC 8058), through the ASGI app in-process."""

from __future__ import annotations

import asyncio

import httpx

from digest.audience.tokens import UNSUBSCRIBE, make_token, unsubscribe_url
from digest.config import Settings
from digest.core.models import Subscriber
from digest.store import Store
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
        assert "nicht mehr" in done.text
    assert store.active_subscribers(newsletter=NL) == []
    # only this newsletter: the subscriber stays for any other
    assert [s.email for s in store.active_subscribers(newsletter="anderer")] == ["a@example.org"]


async def test_head_shows_and_changes_nothing(demo_settings: Settings, store: Store) -> None:
    sid = store.save_subscriber(Subscriber("h@example.org"), ["allgemein"])
    url = unsubscribe_url(demo_settings, NL, sid)
    async with _client(demo_settings, store) as client:
        response = await client.head(url)
    assert response.status_code == 200
    assert len(store.active_subscribers(newsletter=NL)) == 1


async def test_other_methods_are_refused_and_change_nothing(
    demo_settings: Settings, store: Store
) -> None:
    sid = store.save_subscriber(Subscriber("m@example.org"), ["allgemein"])
    url = unsubscribe_url(demo_settings, NL, sid)
    async with _client(demo_settings, store) as client:
        for method in ("PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND"):
            response = await client.request(method, url)
            assert response.status_code == 405, method
            assert set(response.headers["allow"].split(", ")) == {"GET", "HEAD", "POST"}
    assert len(store.active_subscribers(newsletter=NL)) == 1


async def test_multipart_body_and_a_second_click_are_fine(
    demo_settings: Settings, store: Store
) -> None:
    sid = store.save_subscriber(Subscriber("b@example.org"), ["allgemein"])
    url = unsubscribe_url(demo_settings, "wochenueberblick", sid)
    async with _client(demo_settings, store) as client:
        first = await client.post(url, files={"List-Unsubscribe": (None, "One-Click")})
        second = await client.post(url, data={"List-Unsubscribe": "One-Click"})
    assert first.status_code == second.status_code == 200
    assert first.content == second.content
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


async def test_pages_never_show_the_address(demo_settings: Settings, store: Store) -> None:
    sid = store.save_subscriber(Subscriber("geheim@example.org", "Gisela Geheim"), ["allgemein"])
    url = unsubscribe_url(demo_settings, NL, sid)
    async with _client(demo_settings, store) as client:
        pages = [await client.get(url), await client.post(url), await client.post(url)]
    for page in pages:
        assert page.status_code == 200
        assert "geheim@example.org" not in page.text and "Gisela" not in page.text
        assert "geheim" not in page.text.lower()


async def test_unknown_subscribers_look_like_known_ones(
    demo_settings: Settings, store: Store
) -> None:
    """Whoever holds a link learns nothing about who else is, or was, subscribed.

    The pages name the newsletter the signed token names, when it is configured, and
    nothing else: for a subscriber who does not exist they are the same, byte for byte.
    """
    known = store.save_subscriber(Subscriber("k@example.org"), ["allgemein"])
    pairs = {
        "unknown subscriber": (NL, known, known + 1000),
        "removed newsletter, unknown subscriber": ("eingestellt", known, known + 1000),
    }
    name = demo_settings.newsletter(NL).name
    async with _client(demo_settings, store) as client:
        for what, (newsletter, real, unknown) in pairs.items():
            for method in ("GET", "HEAD", "POST"):
                reference, answer = [
                    await client.request(method, unsubscribe_url(demo_settings, newsletter, sid))
                    for sid in (real, unknown)
                ]
                assert reference.status_code == answer.status_code == 200, (method, what)
                assert answer.content == reference.content, (method, what)
                assert _comparable(answer.headers) == _comparable(reference.headers), what
                if method != "HEAD":
                    # The newsletter being left is named when it is configured.
                    assert (name in answer.text) == (newsletter == NL), (method, what)
                    assert "k@example.org" not in answer.text
    assert store.active_subscribers(newsletter=NL) == []


def _comparable(headers: httpx.Headers) -> list[tuple[str, str]]:
    return sorted((k, v) for k, v in headers.multi_items() if k != "date")


async def test_token_pages_are_not_stored_by_caches(demo_settings: Settings, store: Store) -> None:
    sid = store.save_subscriber(Subscriber("n@example.org"), ["allgemein"])
    url = unsubscribe_url(demo_settings, NL, sid)
    async with _client(demo_settings, store) as client:
        answers = [
            await client.get(url),
            await client.post(url),
            await client.get("/unsubscribe/nonsense"),
        ]
    for answer in answers:
        assert answer.headers["cache-control"] == "no-store"


async def test_a_burst_of_one_click_posts_is_answered_once_each_is_recorded(
    demo_settings: Settings, store: Store
) -> None:
    """Concurrent POSTs are written together (digest.web.withdrawals); one that cannot
    be written (an id no database column holds) gets the error page alone."""
    ids = [store.save_subscriber(Subscriber(f"r{n}@example.org"), ["allgemein"]) for n in range(60)]
    urls = [unsubscribe_url(demo_settings, NL, sid) for sid in ids]
    unwritable = unsubscribe_url(demo_settings, NL, 2**70)
    urls.insert(30, unwritable)
    transport = httpx.ASGITransport(
        app=create_app(demo_settings, store, rate_limit="1000/minute"),
        raise_app_exceptions=False,
    )
    async with httpx.AsyncClient(transport=transport, base_url=demo_settings.public_url) as client:
        answers = await asyncio.gather(*(client.post(url) for url in urls))
    statuses = {url: answer.status_code for url, answer in zip(urls, answers, strict=True)}
    assert statuses.pop(unwritable) == 500
    assert set(statuses.values()) == {200}
    assert store.active_subscribers(newsletter=NL) == []
    assert all(store.unsubscribed(sid, NL) for sid in ids)
