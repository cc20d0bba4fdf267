"""Running the web app in production: whom it believes about the client's address behind
a reverse proxy, the readiness probe, and the Prometheus metrics."""

from __future__ import annotations

import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, make_url, select, text

from digest.config import Settings, StoreSettings
from digest.core.models import DeliveryState
from digest.delivery.transport import SmtpPool
from digest.ops import jobs
from digest.ops.demo import import_demo_lists
from digest.store import Store
from digest.store import schema as t
from digest.web.app import create_app
from tests.conftest import POSTGRES_URL, TEST_SECRET_KEY
from tests.smtp_server import RecordingServer

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


async def test_the_login_throttle_counts_forwarded_clients_apart_only_from_a_trusted_proxy(
    demo_settings: Settings, store: Store
) -> None:
    # Four failed logins per address (four times admin.login_attempts), each with a name
    # of its own so that the count per account never stops one.
    settings = replace(demo_settings, admin=replace(demo_settings.admin, login_attempts=1))
    app = create_app(settings, store, login_delay=0)

    async def five_failed(peer: str) -> list[int]:
        async with _client(app, settings, peer) as http:
            form = await http.get("/admin/login")
            found = CSRF.search(form.text)
            assert found, form.text
            return [
                (
                    await http.post(
                        "/admin/login",
                        data={"csrf": found[1], "name": f"{peer}-{n}", "password": "falsch"},
                        headers={"x-forwarded-for": f"198.51.100.{n}"},
                    )
                ).status_code
                for n in range(5)
            ]

    assert await five_failed("127.0.0.1") == [401] * 5
    assert await five_failed("203.0.113.5") == [401] * 4 + [429]


# --- readiness ---------------------------------------------------------------------------------


async def test_readyz_answers_while_the_store_does(demo_settings: Settings, store: Store) -> None:
    async with _client(create_app(demo_settings, store), demo_settings, "127.0.0.1") as client:
        ready = await client.get("/readyz")
    assert (ready.status_code, ready.text) == (200, "ready")


def _gone_sqlite(tmp_path: Path) -> Iterator[Store]:
    folder = tmp_path / "data"
    folder.mkdir()
    store = Store.open(f"sqlite:///{folder / 'digest.db'}", secret_key=TEST_SECRET_KEY)
    store.close()
    shutil.rmtree(folder)  # the volume with the database is gone
    yield store
    store.close()


def _gone_postgresql() -> Iterator[Store]:
    assert POSTGRES_URL
    name = f"digest_gone_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(POSTGRES_URL).set(database=name)
    store = Store.open(url.render_as_string(hide_password=False), secret_key=TEST_SECRET_KEY)
    with admin.connect() as conn:  # also ends the store's open connections
        conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()
    yield store
    store.close()


@pytest.fixture(params=["sqlite", "postgresql"] if POSTGRES_URL else ["sqlite"])
def gone_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A store opened and migrated whose database then went away."""
    yield from _gone_sqlite(tmp_path) if request.param == "sqlite" else _gone_postgresql()


async def test_readyz_is_503_when_the_database_is_gone_and_healthz_stays_200(
    demo_settings: Settings, gone_store: Store
) -> None:
    app = create_app(demo_settings, gone_store)
    async with _client(app, demo_settings, "127.0.0.1") as client:
        ready = await client.get("/readyz")
        again = await client.get("/readyz")
        alive = await client.get("/healthz")
    assert (ready.status_code, again.status_code, alive.status_code) == (503, 503, 200)
    assert ready.headers["cache-control"] == "no-store"
    assert "nosniff" in ready.headers["x-content-type-options"]


# --- metrics -------------------------------------------------------------------------------------

WEEK = "2025-W05"
NOW = datetime(2025, 2, 3, 6, 0, tzinfo=UTC)
UNKNOWN = "anna.schulze@example.com"


def _families(answer: httpx.Response) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return {
        family.name: {
            tuple(sorted(sample.labels.items())): sample.value for sample in family.samples
        }
        for family in text_string_to_metric_families(answer.text)
    }


async def _scrape(app: Any, settings: Settings, ip: str, **headers: str) -> httpx.Response:
    async with _client(app, settings, ip) as client:
        return await client.get("/metrics", headers=headers)


@pytest.mark.smtp_server(refuse={UNKNOWN: "550 5.1.1 User unknown"})
async def test_metrics_after_a_send_are_the_store_s_figures(
    demo_settings: Settings, store_url: str, smtp_server: RecordingServer
) -> None:
    settings = replace(
        _with_web(demo_settings, metrics=True),
        store=StoreSettings(store_url),
        smtp=smtp_server.settings(),
    )
    store = jobs.open_store(settings)
    newsletter = settings.newsletter(NL)
    assert not any(r.errors for r in import_demo_lists(settings, store, newsletter))
    await jobs.collect(settings, store, NL, now=NOW)
    pool = SmtpPool(settings.smtp)
    try:
        report = await jobs.send(settings, store, newsletter, WEEK, pool, now=NOW)
    finally:
        await pool.close()
    assert report is not None and (report.sent, report.failed) == (len(smtp_server.messages), 1)
    issue = store.get_issue(NL, WEEK)
    assert issue is not None
    rows = store.deliveries(issue.id)
    complained = next(row for row in rows if row.state == DeliveryState.SENT)
    store.record_bounce(
        complained.id,
        "complaint",
        status=None,
        diagnostic=None,
        now=NOW + timedelta(hours=2),
        soft_limit=3,
        soft_since=NOW,
    )
    app = create_app(settings, store)
    async with _client(app, settings, "127.0.0.1") as reader:
        await _sign_up(reader, "neu@example.org", "198.51.100.7")
    try:
        families = _families(await _scrape(app, settings, "127.0.0.1"))
    finally:
        store.close()

    nl = ("newsletter", NL)
    assert families["digest_deliveries"] == {
        (("issue", WEEK), nl, ("state", "failed")): 1,
        (("issue", WEEK), nl, ("state", "sent")): report.sent,
    }
    assert len(rows) == report.sent + 1
    # The refused address and the complainant are no longer active.
    assert families["digest_subscribers"] == {
        (("status", "active"),): len(rows) - 2,
        (("status", "bounced"),): 1,
        (("status", "complained"),): 1,
    }
    assert families["digest_complaints"] == {(nl,): 1}
    assert families["digest_mail_queued"] == {(("kind", "confirm"), nl): 1}
    assert families["digest_mail_given_up"] == {}
    collected = families["digest_source_last_collect_timestamp_seconds"]
    assert sorted(source.name for source in newsletter.sources) == sorted(
        dict(labels)["source"] for labels in collected
    )
    assert set(collected.values()) == {NOW.timestamp()}
    assert set(families["digest_source_collect_failing"].values()) == {0}


async def test_metrics_are_off_by_default(demo_settings: Settings, store: Store) -> None:
    app = create_app(demo_settings, store)
    refused = await _scrape(app, demo_settings, "127.0.0.1")
    async with _client(app, demo_settings, "127.0.0.1") as client:
        nothing = await client.get("/gibt-es-nicht")
    assert refused.status_code == 404 and refused.text == nothing.text


async def test_metrics_are_answered_to_metrics_from_only(
    demo_settings: Settings, store: Store
) -> None:
    settings = _with_web(demo_settings, metrics=True)
    app = create_app(settings, store)
    allowed = await _scrape(app, settings, "::1")
    assert "digest_deliveries" in _families(allowed)
    assert allowed.headers["x-content-type-options"] == "nosniff"
    assert allowed.headers["cache-control"] == "no-store"
    assert (await _scrape(app, settings, "203.0.113.5")).status_code == 404
    # Behind the proxy, the client it names is the one that asks.
    forwarded = await _scrape(app, settings, "127.0.0.1", **{"x-forwarded-for": "203.0.113.5"})
    assert forwarded.status_code == 404

    settings = _with_web(settings, metrics_from=("10.30.0.0/16",))
    app = create_app(settings, store)
    assert "digest_subscribers" in _families(await _scrape(app, settings, "10.30.1.2"))
    for ip in ("127.0.0.1", "10.31.0.1"):
        refused = await _scrape(app, settings, ip)
        assert refused.status_code == 404 and "digest_" not in refused.text
        assert refused.headers["cache-control"] == "no-store"
