"""Rate limits and the login throttle across several replicas of the web app: counted in
``web.rate_limit_storage``, two apps on one Redis share each client's budget; in memory
each app counts on its own. Two apps in-process, through httpx's ASGI transport."""

from __future__ import annotations

import os
import re
import secrets
import socket
from dataclasses import replace
from urllib.parse import urlsplit

import httpx
import pytest
from starlette.applications import Starlette

from digest.config import Settings
from digest.issue.editors import add_editor
from digest.store import Store
from digest.web.app import create_app

REDIS_URL = os.environ.get("DIGEST_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
PASSWORD = "correct horse battery"


def redis_storage() -> str:
    """The test Redis as a storage URI; the test is skipped without the redis package or
    a server that answers."""
    pytest.importorskip("redis", reason="shared rate limits on Redis need the redis package")
    location = urlsplit(REDIS_URL)
    try:
        socket.create_connection((location.hostname, location.port or 6379), timeout=1).close()
    except OSError as exc:
        pytest.skip(f"no Redis server answers at {location.hostname}:{location.port}: {exc}")
    return REDIS_URL


def replicas(settings: Settings, store: Store) -> tuple[Starlette, Starlette]:
    """Two replicas of `digest serve`'s app on one store, as behind one proxy."""
    return create_app(settings, store, login_delay=0), create_app(settings, store, login_delay=0)


def client(app: Starlette, settings: Settings, address: str) -> httpx.AsyncClient:
    # From the proxy on loopback (a trusted proxy), for the client it names: a new
    # address in every run, so that counts a shared storage keeps from an earlier run
    # (until their window ends) count for no one here.
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url=settings.public_url,
        headers={"x-forwarded-for": address},
    )


def new_address() -> str:
    """An IPv6 address (of the documentation prefix) in a /64 no earlier run used."""
    return f"2001:db8:{secrets.randbelow(65536):x}:{secrets.randbelow(65536):x}::7"


async def token_answers(
    settings: Settings, store: Store, budget: int
) -> tuple[list[int], int, int]:
    """``budget`` token requests to the first replica, then one to the second from the
    same client and one from another client: their statuses."""
    first, second = replicas(settings, store)
    address = new_address()
    async with client(first, settings, address) as http:
        spent = [(await http.get("/unsubscribe/nonsense")).status_code for _ in range(budget)]
    async with client(second, settings, address) as http:
        same = (await http.get("/unsubscribe/nonsense")).status_code
    async with client(second, settings, new_address()) as http:
        other = (await http.get("/unsubscribe/nonsense")).status_code
    return spent, same, other


async def test_replicas_on_redis_share_a_clients_budget(
    demo_settings: Settings, store: Store
) -> None:
    web = replace(demo_settings.web, rate_limit="3/minute", rate_limit_storage=redis_storage())
    spent, same, other = await token_answers(replace(demo_settings, web=web), store, 3)
    assert spent == [400, 400, 400]  # an invalid link: answered, and counted
    assert same == 429  # the fourth request, to the other replica
    assert other == 400  # another client's budget is its own


async def test_replicas_counting_in_memory_count_on_their_own(
    demo_settings: Settings, store: Store
) -> None:
    web = replace(demo_settings.web, rate_limit="3/minute")
    assert web.rate_limit_storage == "memory://"
    spent, same, other = await token_answers(replace(demo_settings, web=web), store, 3)
    assert spent == [400, 400, 400]
    assert same == other == 400


async def log_in(http: httpx.AsyncClient, name: str, password: str) -> int:
    form = await http.get("/admin/login")
    token = CSRF.search(form.text)
    assert token, form.text
    answer = await http.post(
        "/admin/login",
        data={"csrf": token[1], "name": name, "password": password, "next": "/admin/"},
    )
    return answer.status_code


async def test_failed_logins_on_one_replica_count_on_the_other(
    demo_settings: Settings, store: Store
) -> None:
    storage = redis_storage()
    settings = replace(
        demo_settings,
        web=replace(demo_settings.web, rate_limit_storage=storage),
        admin=replace(demo_settings.admin, login_attempts=2),
    )
    # A name no earlier run used: a shared storage keeps an account's failures.
    name = f"erika-{secrets.token_hex(6)}"
    add_editor(store, name, "erika@example.org", PASSWORD)
    first, second = replicas(settings, store)
    address = new_address()
    async with client(first, settings, address) as http:
        failed = [await log_in(http, name, f"wrong {n}") for n in range(2)]
    async with client(second, settings, address) as http:
        late = await log_in(http, name, PASSWORD)  # the right password, but too late
    assert failed == [401, 401]
    assert late == 429
