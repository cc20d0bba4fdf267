"""Rules that hold for every route of the web app, not only for the ones there today."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import MetaData, select, text
from starlette.routing import Mount, Route

from digest.audience.tokens import CONFIRM, make_confirm_token, make_token, unsubscribe_url
from digest.config import Settings
from digest.core.models import Subscriber
from digest.store import Store
from digest.store.signups import NewSignup
from digest.web.app import create_app
from digest.web.security import WITHDRAWAL_FACTOR

NL = "wochenueberblick"
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
#: An issue never sent: its archive page is a 404, which changes nothing either.
NOT_SENT_WEEK = "2025-W05"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH", "TRACE", "PROPFIND")


def _client(app: Any, settings: Settings, ip: str = "127.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=(ip, 50000))
    return httpx.AsyncClient(transport=transport, base_url=settings.public_url)


def _snapshot(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    metadata = MetaData()
    metadata.reflect(store.engine)
    with store.engine.connect() as conn:
        return {
            name: sorted((tuple(row) for row in conn.execute(select(table))), key=repr)
            for name, table in metadata.tables.items()
        }


def _example_paths(
    app: Any, settings: Settings, subscriber_id: int, signup_id: int = 1
) -> list[str]:
    """One concrete path per route: token routes get a valid token of their own purpose."""
    paths = []
    for route in app.routes:
        if isinstance(route, Mount):
            paths.append(route.path + "/site.css")
            continue
        assert isinstance(route, Route)
        purpose = route.path.strip("/").split("/")[0]
        if purpose == CONFIRM:
            token = make_confirm_token(settings.secret_key, signup_id, NL)
        else:
            token = make_token(settings.secret_key, purpose, subscriber_id, NL)
        paths.append(
            route.path.replace("{token}", token)
            .replace("{newsletter}", NL)
            .replace("{week}", NOT_SENT_WEEK)
            .replace("{id:int}", str(subscriber_id))
        )
        assert "{" not in paths[-1], f"no example value for the parameters of {route.path}"
    return paths


def test_only_post_is_ever_routed_besides_showing(demo_settings: Settings, store: Store) -> None:
    app = create_app(demo_settings, store)
    for route in app.routes:
        if isinstance(route, Route):
            assert route.methods is not None and route.methods <= {"GET", "HEAD", "POST"}


async def test_no_method_but_post_changes_the_store_on_any_route(
    demo_settings: Settings, store: Store
) -> None:
    sid = store.save_subscriber(Subscriber("walk@example.org"), ["allgemein"])
    pending = store.add_signup(
        NewSignup(NL, "pending@example.org", "", frozenset(), frozenset(), "Ja.", "1"),
        interval=timedelta(minutes=10),
    )
    assert pending is not None
    app = create_app(demo_settings, store)
    before = _snapshot(store)
    paths = _example_paths(app, demo_settings, sid, pending)
    for prefix in ("/unsubscribe/", "/subscribe/", "/confirm/", "/preferences/", "/archive/"):
        assert any(p.startswith(prefix) for p in paths), prefix
    async with _client(app, demo_settings) as client:
        for path in paths:
            for method in SAFE_METHODS:
                response = await client.request(method, path)
                if path.startswith("/admin/"):
                    # The editors' area sends a visitor without a session to its login form.
                    expected: tuple[int, ...] = (200, 303, 405)
                elif NOT_SENT_WEEK in path or path.startswith("/r/"):
                    expected = (404, 405)  # no such issue (a counted link: no such token)
                else:
                    expected = (200, 405)
                assert response.status_code in expected, (method, path)
                assert _snapshot(store) == before, f"{method} {path} changed the store"


async def _every_kind_of_answer(demo_settings: Settings, store: Store) -> dict[str, httpx.Response]:
    sid = store.save_subscriber(Subscriber("h@example.org"), ["allgemein"])
    url = unsubscribe_url(demo_settings, NL, sid)
    app = create_app(demo_settings, store, rate_limit="3/minute")
    answers = {}
    async with _client(app, demo_settings) as client:
        answers["health"] = await client.get("/healthz")
        answers["static"] = await client.get("/static/site.css")
        answers["not found"] = await client.get("/nirgendwo")
        answers["question"] = await client.get(url)
        answers["method not allowed"] = await client.put(url)
        answers["invalid link"] = await client.get("/unsubscribe/nonsense")
        answers["too many"] = await client.get(url)
    with store.engine.begin() as conn:
        conn.execute(text("DROP TABLE unsubscriptions"))
    async with _client(app, demo_settings, ip="192.0.2.1") as client:
        answers["server error"] = await client.post(url)
    return answers


async def test_security_headers_on_every_answer(demo_settings: Settings, store: Store) -> None:
    answers = await _every_kind_of_answer(demo_settings, store)
    statuses = {what: answer.status_code for what, answer in answers.items()}
    assert statuses == {
        "health": 200,
        "static": 200,
        "not found": 404,
        "question": 200,
        "method not allowed": 405,
        "invalid link": 400,
        "too many": 429,
        "server error": 500,
    }
    for what, answer in answers.items():
        assert answer.headers["content-security-policy"] == CSP, what
        assert answer.headers["referrer-policy"] == "same-origin", what
        assert answer.headers["x-content-type-options"] == "nosniff", what
        assert "server" not in answer.headers, what
        if what != "static":
            assert answer.headers["cache-control"] == "no-store", what


async def test_pages_are_german_and_need_nothing_inline(
    demo_settings: Settings, store: Store
) -> None:
    answers = await _every_kind_of_answer(demo_settings, store)
    assert answers["static"].headers["content-type"].startswith("text/css")
    for what, answer in answers.items():
        if what in ("health", "static"):
            continue
        page = answer.text
        assert answer.headers["content-type"] == "text/html; charset=utf-8", what
        assert '<html lang="de">' in page, what
        assert "<style" not in page and "<script" not in page, what
        assert not re.search(r"\s(style|on\w+)=", page), what
        assert '<link rel="stylesheet" href="/static/site.css">' in page, what
        assert "Traceback" not in page and "Exception" not in page, what


async def test_token_routes_are_rate_limited_per_address(
    demo_settings: Settings, store: Store
) -> None:
    sid = store.save_subscriber(Subscriber("r@example.org"), ["allgemein"])
    url = unsubscribe_url(demo_settings, NL, sid)
    forged = url[:-4] + "AAAA"
    app = create_app(demo_settings, store, rate_limit="3/minute")
    async with _client(app, demo_settings, ip="198.51.100.7") as client:
        assert [(await client.get(url)).status_code for _ in range(3)] == [200] * 3
        refused = await client.get(url)
        assert (await client.post(forged)).status_code == 429
        assert (await client.get("/unsubscribe/nonsense")).status_code == 429
        assert (await client.get("/unsubscribe/anything/else")).status_code == 429
        assert (await client.get("/healthz")).status_code == 200  # not a token route
    assert refused.status_code == 429
    assert 0 < int(refused.headers["retry-after"]) <= 60
    assert "Zu viele Anfragen" in refused.text
    assert len(store.active_subscribers(newsletter=NL)) == 1
    async with _client(app, demo_settings, ip="198.51.100.8") as other:
        assert (await other.get(url)).status_code == 200
    assert len(store.active_subscribers(newsletter=NL)) == 1  # other addresses, own budgets


async def test_a_genuine_withdrawal_has_a_budget_of_its_own(
    demo_settings: Settings, store: Store
) -> None:
    """A mail provider posts many readers' one-click unsubscribes from one address.

    A refused one would leave that reader subscribed, so validly signed one-click POSTs
    are counted apart, with a budget WITHDRAWAL_FACTOR times as large; it is still finite.
    """
    ids = [
        store.save_subscriber(Subscriber(f"r{n}@example.org"), ["allgemein"])
        for n in range(WITHDRAWAL_FACTOR + 1)
    ]
    app = create_app(demo_settings, store, rate_limit="1/minute")
    async with _client(app, demo_settings, ip="198.51.100.9") as provider:
        assert (await provider.get("/unsubscribe/nonsense")).status_code == 400
        assert (await provider.get("/unsubscribe/nonsense")).status_code == 429
        answers = [
            (await provider.post(unsubscribe_url(demo_settings, NL, sid))).status_code
            for sid in ids
        ]
    assert answers == [200] * WITHDRAWAL_FACTOR + [429]
    [left] = store.active_subscribers(newsletter=NL)
    assert left.id == ids[-1]


async def test_an_ipv6_network_shares_one_budget(demo_settings: Settings, store: Store) -> None:
    """One host usually has a whole /64; counting each of its addresses would not limit it."""
    app = create_app(demo_settings, store, rate_limit="2/minute")
    for ip in ("2001:db8:1:2::1", "2001:db8:1:2::2"):
        async with _client(app, demo_settings, ip=ip) as client:
            assert (await client.get("/unsubscribe/x")).status_code == 400
    async with _client(app, demo_settings, ip="2001:db8:1:2:ffff::3") as client:
        assert (await client.get("/unsubscribe/x")).status_code == 429
    async with _client(app, demo_settings, ip="2001:db8:1:3::1") as client:
        assert (await client.get("/unsubscribe/x")).status_code == 400


@pytest.mark.parametrize("limit", ["0/minute", "many", "3/fortnight"])
def test_a_nonsense_rate_limit_is_refused(
    demo_settings: Settings, store: Store, limit: str
) -> None:
    with pytest.raises(ValueError):
        create_app(demo_settings, store, rate_limit=limit)


def test_serve_help_names_where_the_rate_limit_comes_from() -> None:
    from click.testing import CliRunner

    from digest.cli import cli

    result = CliRunner().invoke(cli, ["serve", "--help"])
    assert result.exit_code == 0 and "[default: web.rate_limit of the config]" in result.output


async def test_origin_null_is_another_site_on_every_form(
    demo_settings: Settings, store: Store
) -> None:
    """A sandboxed frame or a page of another site under ``no-referrer`` sends ``Origin:
    null``; our own pages send their origin. So ``null`` is refused like a foreign one,
    even with a CSRF token, which anyone can fetch from the form without logging in."""
    from digest.issue.editors import add_editor
    from digest.web.admin import SESSION_COOKIE

    add_editor(store, "erika", "erika@example.org", "correct horse battery")
    sid = store.save_subscriber(Subscriber("null@example.org"), ["allgemein"])
    pending = store.add_signup(
        NewSignup(NL, "pending@example.org", "", frozenset(), frozenset(), "Ja.", "1"),
        interval=timedelta(minutes=10),
    )
    assert pending is not None
    forms = {
        "/admin/login": {"name": "erika", "password": "correct horse battery"},
        f"/subscribe/{NL}": {
            "email": "opfer@example.org",
            "categories": "politik",
            "regions": "Bayern",
            "consent": "yes",
        },
        f"/confirm/{make_confirm_token(demo_settings.secret_key, pending, NL)}": {},
        f"/preferences/{make_token(demo_settings.secret_key, 'preferences', sid, NL)}": {
            "action": "unsubscribe_all"
        },
    }
    before = _snapshot(store)
    async with _client(create_app(demo_settings, store, login_delay=0), demo_settings) as client:
        for path, data in forms.items():
            page = await client.get(path)
            token = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert token, path
            answer = await client.post(
                path, data={"csrf": token[1], **data}, headers={"origin": "null"}
            )
            assert answer.status_code in (200, 400), path
            assert SESSION_COOKIE not in answer.headers.get("set-cookie", ""), path
            assert _snapshot(store) == before, path
