"""Running the web app in production: whom it believes about the client's address behind
a reverse proxy, the readiness probe, and the Prometheus metrics."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import httpx
from sqlalchemy import select

from digest.config import Settings
from digest.store import Store
from digest.store import schema as t
from digest.web.app import create_app

NL = "wochenueberblick"
SIGNUP = f"/subscribe/{NL}"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def _client(app: Any, settings: Settings, ip: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=(ip, 50000))
    return httpx.AsyncClient(transport=transport, base_url=settings.public_url)


def _with_web(settings: Settings, **web: Any) -> Settings:
    return replace(settings, web=replace(settings.web, **web))


async def _sign_up(client: httpx.AsyncClient, address: str, forwarded_for: str) -> None:
    headers = {"x-forwarded-for": forwarded_for}
    form = await client.get(SIGNUP, headers=headers)
    found = CSRF.search(form.text)
    assert found, form.text
    data = {
        "csrf": found[1],
        "email": address,
        "name": "Anna Beispiel",
        "categories": ["verwaltung"],
        "regions": ["Bayern"],
        "consent": "yes",
        "website": "",
    }
    answer = await client.post(SIGNUP, data=data, headers=headers)
    assert answer.status_code == 200, answer.text


def _signup_ip(store: Store, address: str) -> str | None:
    with store.engine.connect() as conn:
        ip: str | None = conn.execute(
            select(t.signups.c.ip).where(t.signups.c.email == address)
        ).scalar_one()
    return ip


# --- trusted proxies -------------------------------------------------------------------------


async def test_the_consent_proof_names_the_client_a_trusted_proxy_forwards(
    demo_settings: Settings, store: Store
) -> None:
    app = create_app(demo_settings, store)
    async with _client(app, demo_settings, ip="127.0.0.1") as proxy:
        await _sign_up(proxy, "a@example.org", "198.51.100.7")
        # A client may send its own X-Forwarded-For; the proxy appends the address it saw.
        await _sign_up(proxy, "b@example.org", "10.9.9.9, 198.51.100.8")
    async with _client(app, demo_settings, ip="::1") as proxy6:
        await _sign_up(proxy6, "c@example.org", "2001:db8::7")
    assert _signup_ip(store, "a@example.org") == "198.51.100.7"
    assert _signup_ip(store, "b@example.org") == "198.51.100.8"
    assert _signup_ip(store, "c@example.org") == "2001:db8::7"


async def test_x_forwarded_for_from_anyone_else_is_ignored(
    demo_settings: Settings, store: Store
) -> None:
    app = create_app(demo_settings, store)
    async with _client(app, demo_settings, ip="203.0.113.5") as direct:
        await _sign_up(direct, "a@example.org", "198.51.100.7")
    assert _signup_ip(store, "a@example.org") == "203.0.113.5"


async def test_a_trusted_network_counts_and_loopback_is_then_no_proxy(
    demo_settings: Settings, store: Store
) -> None:
    settings = _with_web(demo_settings, trusted_proxies=("10.20.0.0/16",))
    app = create_app(settings, store)
    # A proxy in the DMZ behind another one of the same network: the rightmost address
    # that is not a trusted proxy is the client.
    async with _client(app, settings, ip="10.20.3.4") as dmz:
        await _sign_up(dmz, "a@example.org", "198.51.100.7, 10.20.9.9")
    async with _client(app, settings, ip="127.0.0.1") as local:
        await _sign_up(local, "b@example.org", "198.51.100.8")
    assert _signup_ip(store, "a@example.org") == "198.51.100.7"
    assert _signup_ip(store, "b@example.org") == "127.0.0.1"


async def test_the_rate_limit_counts_forwarded_clients_apart_only_from_a_trusted_proxy(
    demo_settings: Settings, store: Store
) -> None:
    app = create_app(demo_settings, store, rate_limit="1/minute")
    async with _client(app, demo_settings, ip="127.0.0.1") as proxy:
        answers = [
            (
                await proxy.get("/unsubscribe/x", headers={"x-forwarded-for": f"198.51.100.{n}"})
            ).status_code
            for n in range(1, 4)
        ]
        again = await proxy.get("/unsubscribe/x", headers={"x-forwarded-for": "198.51.100.1"})
    assert answers == [400] * 3 and again.status_code == 429
    async with _client(app, demo_settings, ip="203.0.113.5") as direct:
        answers = [
            (
                await direct.get("/unsubscribe/x", headers={"x-forwarded-for": f"192.0.2.{n}"})
            ).status_code
            for n in range(1, 3)
        ]
    assert answers == [400, 429]
