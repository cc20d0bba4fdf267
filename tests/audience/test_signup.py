"""Sign-up and double opt-in through the ASGI app, with the confirmation mail over real SMTP."""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
import socket
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import MetaData, select

from digest.audience.tokens import (
    make_confirm_token,
    make_token,
    read_confirm_token,
)
from digest.config import Settings, WebSettings
from digest.core.models import Subscriber
from digest.ops.mail_queue import retry_delay, send_due_mail
from digest.store import Store
from digest.store.signups import NewSignup
from digest.web.app import create_app
from digest.web.forms import csrf_token
from tests.html_tree import background_colour, contrast, parse, text_colour
from tests.smtp_server import RecordingServer

NL = "wochenueberblick"
SIGNUP = f"/subscribe/{NL}"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def _client(app: Any, settings: Settings, ip: str = "127.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(ip, 50000))
    return httpx.AsyncClient(transport=transport, base_url=settings.public_url)


def csrf_of(page: httpx.Response) -> str:
    found = CSRF.search(page.text)
    assert found, page.text
    return found[1]


def masked(page: httpx.Response) -> str:
    return CSRF.sub('name="csrf" value="…"', page.text)


async def sign_up(client: httpx.AsyncClient, address: str, **fields: Any) -> httpx.Response:
    form = await client.get(SIGNUP)
    data: dict[str, Any] = {
        "csrf": csrf_of(form),
        "email": address,
        "name": "Anna Beispiel",
        "categories": ["verwaltung", "politik"],
        "regions": ["Bayern", "Berlin"],
        "consent": "yes",
        "website": "",
    }
    data.update(fields)
    return await client.post(SIGNUP, data=data, headers={"user-agent": "Testbrowser/1.0"})


def snapshot(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    metadata = MetaData()
    metadata.reflect(store.engine)
    with store.engine.connect() as conn:
        return {
            name: sorted((tuple(row) for row in conn.execute(select(table))), key=repr)
            for name, table in metadata.tables.items()
            if name != "alembic_version"
        }


def signup_ids(store: Store) -> list[int]:
    return [row["signup_id"] for row in store.queued_mail()]


async def confirm(client: httpx.AsyncClient, url: str) -> httpx.Response:
    shown = await client.get(url)
    assert shown.status_code == 200
    return await client.post(url, data={"csrf": csrf_of(shown)})


async def test_the_form_offers_every_category_ticked_and_all_regions(
    demo_settings: Settings, store: Store
) -> None:
    newsletter = demo_settings.newsletter(NL)
    async with _client(create_app(demo_settings, store), demo_settings) as client:
        page = await client.get(SIGNUP)
        unknown = await client.get("/subscribe/gibt-es-nicht")
    assert page.status_code == 200 and unknown.status_code == 404
    for category in newsletter.categories:
        assert f'value="{category.key}" checked' in page.text
    # "All regions" chosen; a single region is one tick after choosing "only selected".
    assert 'name="region_scope" value="all" checked' in page.text
    assert 'name="region_scope" value="some">' in page.text
    for region in newsletter.regions:
        assert f'name="regions" value="{region}">' in page.text
    assert "jederzeit widerrufen" in page.text and newsletter.name in page.text
    assert 'class="trap"' in page.text and 'name="website"' in page.text


async def test_a_sign_up_is_stored_and_its_mail_queued_but_nobody_subscribed(
    demo_settings: Settings, store: Store
) -> None:
    async with _client(create_app(demo_settings, store), demo_settings) as client:
        answer = await sign_up(client, "neu@example.org")
    assert answer.status_code == 200 and "Bestätigungslink" in answer.text
    assert "neu@example.org" not in answer.text
    [queued] = store.queued_mail()
    assert queued["kind"] == "confirm" and queued["sent_at"] is None
    signup = store.signup(queued["signup_id"])
    assert signup is not None and signup.confirmed_at is None
    assert signup.categories == {"verwaltung", "politik"} and signup.regions == {"Bayern", "Berlin"}
    assert store.subscriber_by_email("neu@example.org") is None
    assert store.active_subscribers(newsletter=NL) == []


async def test_the_answer_is_the_same_for_every_kind_of_address(
    demo_settings: Settings, store: Store
) -> None:
    store.save_subscriber(Subscriber("dabei@example.org"), ["allgemein"])
    store.suppress("gesperrt@example.org", "hard_bounce")
    app = create_app(demo_settings, store)
    async with _client(app, demo_settings) as client:
        await sign_up(client, "wartet@example.org")
        answers = {
            what: await sign_up(client, address)
            for what, address in {
                "new": "neu@example.org",
                "pending": "wartet@example.org",
                "subscribed": "dabei@example.org",
                "suppressed": "gesperrt@example.org",
                "robot": "robot@example.org",
            }.items()
            if what != "robot"
        }
        answers["robot"] = await sign_up(client, "robot@example.org", website="http://spam")
    reference = answers.pop("new")
    for what, answer in answers.items():
        assert answer.status_code == reference.status_code == 200, what
        assert masked(answer) == masked(reference), what
    # pending got no second mail within the interval; the robot got none at all
    assert len(store.queued_mail()) == 4


async def test_one_confirmation_per_address_and_interval(
    demo_settings: Settings, store: Store
) -> None:
    start = datetime(2025, 3, 1, 12, tzinfo=UTC)
    signup = NewSignup(NL, "einmal@example.org", "", frozenset(), frozenset(), "Ja.", "1")
    interval = timedelta(minutes=10)
    assert store.add_signup(signup, interval=interval, now=start) is not None
    again = replace(signup, email="EINMAL@example.org")
    assert store.add_signup(again, interval=interval, now=start + timedelta(minutes=9)) is None
    assert store.add_signup(again, interval=interval, now=start + timedelta(minutes=11))
    assert len(store.queued_mail()) == 2


@pytest.mark.parametrize("token", ["missing", "forged", "other path", "foreign origin"])
async def test_a_form_without_a_genuine_token_is_shown_again_and_does_nothing(
    demo_settings: Settings, store: Store, token: str
) -> None:

    values = {
        "missing": None,
        "forged": csrf_token("another-secret-key-123", SIGNUP),
        "other path": csrf_token(demo_settings.secret_key, "/subscribe/anderer"),
        "foreign origin": csrf_token(demo_settings.secret_key, SIGNUP),
    }
    headers = {"origin": "https://evil.example"} if token == "foreign origin" else {}
    data = {"email": "opfer@example.org", "categories": "politik", "regions": "Bayern"}
    if values[token]:
        data["csrf"] = values[token]
    data["consent"] = "yes"
    async with _client(create_app(demo_settings, store), demo_settings) as client:
        answer = await client.post(SIGNUP, data=data, headers=headers)
    assert answer.status_code == 200
    assert "von dieser Seite aus ab" in answer.text
    assert 'value="opfer@example.org"' in answer.text  # filled in, for the reader to send
    assert store.queued_mail() == []


async def test_invalid_input_is_explained_without_storing(
    demo_settings: Settings, store: Store
) -> None:
    async with _client(create_app(demo_settings, store), demo_settings) as client:
        answer = await sign_up(client, "kein-at-zeichen", consent="", categories=[])
    assert answer.status_code == 400
    assert 'role="alert"' in answer.text
    for text in ("gültige E-Mail-Adresse", "mindestens eine Rubrik", "Einwilligungserklärung"):
        assert text in answer.text
    assert store.queued_mail() == []


async def test_sign_ups_are_rate_limited_per_address(demo_settings: Settings, store: Store) -> None:
    settings = replace(demo_settings, web=WebSettings(signup_rate_limit="2/minute"))
    app = create_app(settings, store)  # the limit of the [web] settings
    async with _client(app, demo_settings, ip="198.51.100.9") as client:
        statuses = [(await sign_up(client, f"r{i}@example.org")).status_code for i in range(3)]
        assert (await client.get(SIGNUP)).status_code == 200  # showing the form is free
    assert statuses == [200, 200, 429]
    async with _client(app, demo_settings, ip="198.51.100.10") as other:
        assert (await sign_up(other, "r9@example.org")).status_code == 200


async def test_confirm_get_changes_nothing_and_post_subscribes_once(
    demo_settings: Settings, store: Store
) -> None:
    app = create_app(demo_settings, store)
    async with _client(app, demo_settings, ip="203.0.113.5") as client:
        await sign_up(client, "bestaetigt@example.org")
        [signup_id] = signup_ids(store)
        url = f"/confirm/{make_confirm_token(demo_settings.secret_key, signup_id, NL)}"
        before = snapshot(store)
        for method in ("GET", "HEAD"):
            assert (await client.request(method, url)).status_code == 200
        shown = await client.get(url)
        assert 'method="post"' in shown.text and "Anmeldung bestätigen" in shown.text
        assert snapshot(store) == before
        done = await confirm(client, url)
        after = snapshot(store)
        again = await client.post(url, data={"csrf": csrf_token(demo_settings.secret_key, url)})
        assert snapshot(store) == after
    assert done.status_code == again.status_code == 200
    assert "ist bestätigt" in done.text and "Bereits bestätigt" in again.text
    [active] = store.active_subscribers(newsletter=NL)
    assert active.email == "bestaetigt@example.org" and active.name == "Anna Beispiel"
    assert "allgemein" in active.lists
    document = store.personal_data("bestaetigt@example.org")
    assert document is not None
    [consent] = document["consents"]
    assert consent["source"] == "signup" and consent["newsletter"] == NL
    assert consent["statement"] == demo_settings.newsletter(NL).consent_statement
    assert consent["text_version"] == "1"
    assert consent["ip"] == consent["confirm_ip"] == "203.0.113.5"
    assert consent["user_agent"] == "Testbrowser/1.0"
    assert consent["page_url"] and consent["signed_up_at"] and consent["confirmed_at"]
    [signup] = document["signups"]
    assert signup["newsletter"] == NL and signup["confirmed_at"] == consent["confirmed_at"]


async def test_confirming_lifts_a_suppression(demo_settings: Settings, store: Store) -> None:
    store.suppress("zurueck@example.org", "unsubscribed")
    async with _client(create_app(demo_settings, store), demo_settings) as client:
        await sign_up(client, "zurueck@example.org")
        assert store.is_suppressed("zurueck@example.org", NL)
        [signup_id] = signup_ids(store)
        url = f"/confirm/{make_confirm_token(demo_settings.secret_key, signup_id, NL)}"
        assert (await confirm(client, url)).status_code == 200
    assert not store.is_suppressed("zurueck@example.org", NL)
    assert [s.email for s in store.active_subscribers(newsletter=NL)] == ["zurueck@example.org"]


async def test_a_replayed_confirmation_does_not_undo_unsubscribing_from_all(
    demo_settings: Settings, store: Store
) -> None:
    app = create_app(demo_settings, store)
    async with _client(app, demo_settings) as client:
        await sign_up(client, "widerruf@example.org")
        [signup_id] = signup_ids(store)
        url = f"/confirm/{make_confirm_token(demo_settings.secret_key, signup_id, NL)}"
        done = await confirm(client, url)
        preferences = re.search(r'href="(http://[^"]+/preferences/[^"]+)"', done.text)
        assert preferences, done.text
        shown = await client.get(preferences[1])
        gone = await client.post(
            preferences[1], data={"csrf": csrf_of(shown), "action": "unsubscribe_all"}
        )
        assert gone.status_code == 200
        withdrawn = snapshot(store)
        shown_again = await client.get(url)
        # the form as it was shown before the first confirmation
        replayed = await client.post(url, data={"csrf": csrf_token(demo_settings.secret_key, url)})
    assert shown_again.status_code == replayed.status_code == 200
    assert "Bereits bestätigt" in shown_again.text and "Bereits bestätigt" in replayed.text
    assert 'method="post"' not in shown_again.text
    assert snapshot(store) == withdrawn
    assert store.is_suppressed("widerruf@example.org", NL)
    assert store.active_subscribers(newsletter=NL) == []
    document = store.personal_data("widerruf@example.org")
    assert document is not None and len(document["consents"]) == 1


async def test_bad_confirm_tokens_are_refused(
    demo_settings: Settings, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with _client(create_app(demo_settings, store), demo_settings) as client:
        await sign_up(client, "token@example.org")
        [sid] = signup_ids(store)
        key = demo_settings.secret_key
        good = make_confirm_token(key, sid, NL)
        tokens = {
            "forged": make_confirm_token("another-secret-key-123", sid, NL),
            "truncated": good[:-4],
            "wrong purpose": make_token(key, "preferences", sid, NL),
            "other newsletter": make_confirm_token(key, sid, "anderer"),
            "unknown sign-up": make_confirm_token(key, sid + 100, NL),
        }
        answers = {}
        for what, token in tokens.items():
            url = f"/confirm/{token}"
            shown = await client.get(url)
            csrf = CSRF.search(shown.text)
            answers[what] = await client.post(url, data={"csrf": csrf[1] if csrf else ""})
        # eight days later the good token has expired
        real_time = __import__("time").time
        monkeypatch.setattr("time.time", lambda: real_time() + 8 * 86400)
        answers["expired"] = await client.get(f"/confirm/{good}")
    for what, answer in answers.items():
        assert answer.status_code == 400, what
    assert store.active_subscribers(newsletter=NL) == []
    with pytest.raises(Exception, match="expired"):
        read_confirm_token(key, good, 1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_confirmation_survives_a_relay_that_is_down(
    demo_settings: Settings, store: Store
) -> None:
    port = _free_port()
    settings = replace(
        demo_settings, smtp=replace(demo_settings.smtp, host="127.0.0.1", port=port, timeout=2)
    )
    async with _client(create_app(settings, store), settings) as client:
        answer = await sign_up(client, "geduld@example.org")
    assert answer.status_code == 200  # the page does not wait for the relay
    start = datetime.now(UTC)
    assert await send_due_mail(store, settings, now=lambda: start) == 0
    [row] = store.queued_mail()
    assert row["attempts"] == 1 and row["sent_at"] is None and row["last_error"]
    assert row["next_attempt_at"] == start + retry_delay(1)

    server = RecordingServer()
    server.port = port
    async with server:
        # not due yet: nothing is tried
        assert await send_due_mail(store, settings, now=lambda: start) == 0
        later = start + timedelta(minutes=1)
        assert await send_due_mail(store, settings, now=lambda: later) == 1
        assert await send_due_mail(store, settings, now=lambda: later + timedelta(hours=2)) == 0
    assert len(server.messages) == 1
    sender, recipients, data = server.messages[0]
    assert recipients == ["geduld@example.org"]
    message = email.message_from_bytes(data, policy=email.policy.strict)
    assert "List-Unsubscribe" not in message and "List-Unsubscribe-Post" not in message
    assert message["Message-ID"] == f"<confirm-{row['request_id']}@kommune-digital.example>"
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    link = re.search(r"http://127\.0\.0\.1:8000/confirm/\S+", text)
    assert link and link[0] in html
    assert "Impressum" in text and "Impressum" in html
    [sent] = store.queued_mail()
    assert sent["sent_at"] is not None and sent["attempts"] == 2


async def test_the_app_sends_queued_mail_while_it_serves(
    demo_settings: Settings, store: Store
) -> None:
    async with RecordingServer() as server:
        settings = replace(demo_settings, smtp=server.settings())
        app = create_app(settings, store, send_mail=True)
        async with _client(app, settings) as client:
            await sign_up(client, "sofort@example.org")
        async with app.router.lifespan_context(app):
            for _ in range(100):
                if server.messages:
                    break
                await asyncio.sleep(0.05)
    assert [m[1] for m in server.messages] == [["sofort@example.org"]]
    assert store.queued_mail()[0]["sent_at"] is not None


async def test_the_embeddable_form_leads_to_a_filled_in_page(
    demo_settings: Settings, store: Store
) -> None:
    async with _client(create_app(demo_settings, store), demo_settings) as client:
        answer = await client.post(
            SIGNUP,
            data={"email": "extern@example.org", "name": "Eva Extern"},
            headers={"origin": "https://partner.example"},
        )
    assert answer.status_code == 200
    assert 'value="extern@example.org"' in answer.text and 'value="Eva Extern"' in answer.text
    assert 'value="politik" checked' in answer.text
    assert 'name="region_scope" value="all" checked' in answer.text
    assert 'value="Bayern" checked' not in answer.text
    assert 'value="yes" required checked' not in answer.text  # consent is given here
    assert CSRF.search(answer.text)
    assert store.queued_mail() == []


async def test_the_confirmation_button_is_a_table_cell_that_outlook_keeps(
    demo_settings: Settings, store: Store
) -> None:
    """Word (Outlook) ignores padding and max-width on a link: the button is the table
    cell around it, coloured by bgcolor and padded for Outlook by mso-padding-alt."""
    async with RecordingServer() as server:
        settings = replace(demo_settings, smtp=server.settings())
        async with _client(create_app(settings, store), settings) as client:
            await sign_up(client, "knopf@example.org")
        assert await send_due_mail(store, settings) == 1
        [(_sender, _recipients, data)] = server.messages
    message = email.message_from_bytes(data, policy=email.policy.default)
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    tree = parse(html)
    [link] = [a for a in tree.find_all("a") if "/confirm/" in a.attrs.get("href", "")]
    assert link.text == "Anmeldung bestätigen"
    cell = link.parent
    assert cell is not None and cell.tag == "td"
    assert cell.children == [link] and not cell.own_text.strip()  # the cell is the button
    assert cell.attrs["bgcolor"] == "#1d3557"
    assert cell.style["mso-padding-alt"] == "12px 20px"
    row = cell.parent
    assert row is not None and row.tag == "tr" and row.parent is not None
    assert row.parent.tag == "table" and row.parent.attrs["role"] == "presentation"
    assert "max-width" not in link.style
    assert contrast(text_colour(link), background_colour(link)) >= 4.5
    metas = {m.attrs.get("name"): m.attrs.get("content") for m in tree.find_all("meta")}
    assert metas["color-scheme"] == metas["supported-color-schemes"] == "light dark"
    # Outlook's column: a fixed-width table only Outlook reads (the others keep max-width).
    assert '<!--[if mso]><table role="presentation" width="560"' in html


PHISHING = "Ihr Konto wird gesperrt! Sofort bestaetigen: https://evil.example/login"


async def test_the_confirmation_mail_carries_nothing_typed_but_the_address(
    demo_settings: Settings, store: Store
) -> None:
    async with RecordingServer() as server:
        settings = replace(demo_settings, smtp=server.settings())
        async with _client(create_app(settings, store), settings) as client:
            await sign_up(client, "opfer@example.org", name=PHISHING)
            assert await send_due_mail(store, settings) == 1
            [(_sender, recipients, data)] = server.messages
            message = email.message_from_bytes(data, policy=email.policy.strict)
            parts = [message.get_body((kind,)).get_content() for kind in ("plain", "html")]  # type: ignore[union-attr]
            link = re.search(r"http://127\.0\.0\.1:8000(/confirm/\S+)", parts[0])
            assert link
            assert (await confirm(client, link[1])).status_code == 200
    assert recipients == ["opfer@example.org"]
    assert message["To"] == "opfer@example.org"
    for part in [*parts, str(message["Subject"])]:
        assert "gesperrt" not in part and "evil.example" not in part
    assert "Guten Tag," in parts[0]
    # the name is kept for the mail after the confirmation
    [active] = store.active_subscribers(newsletter=NL)
    assert active.name == PHISHING


async def test_the_consent_proof_names_the_form_not_what_the_request_brought(
    demo_settings: Settings, store: Store
) -> None:
    app = create_app(demo_settings, store)
    async with _client(app, demo_settings) as client:
        form = await client.get(SIGNUP)
        await client.post(
            f"{SIGNUP}?ref=Wz_token_of_someone",
            data={
                "csrf": csrf_of(form),
                "email": "quelle@example.org",
                "categories": ["politik"],
                "regions": ["Bayern"],
                "consent": "yes",
            },
            headers={"referer": "http://127.0.0.1:8000/preferences/WzEsIndvY2hlbiJd.secret"},
        )
    document = store.personal_data("quelle@example.org")
    assert document is not None
    [signup] = document["signups"]
    assert signup["page_url"] == f"http://127.0.0.1:8000{SIGNUP}"


async def _race(app: Any, settings: Settings, count: int) -> list[httpx.Response]:
    async with _client(app, settings) as client:
        token = csrf_of(await client.get(SIGNUP))

    async def one(i: int) -> httpx.Response:
        spelling = ["rennen@example.org", "Rennen@Example.ORG", "RENNEN@example.org"][i % 3]
        async with _client(app, settings, ip=f"198.51.100.{i + 1}") as client:
            return await client.post(
                SIGNUP,
                data={
                    "csrf": token,
                    "email": spelling,
                    "categories": ["politik"],
                    "regions": ["Bayern"],
                    "consent": "yes",
                },
            )

    return await asyncio.gather(*(one(i) for i in range(count)))


async def test_concurrent_sign_ups_for_one_address_send_one_confirmation(
    demo_settings: Settings, store: Store
) -> None:
    async with RecordingServer() as server:
        settings = replace(demo_settings, smtp=server.settings())
        app = create_app(settings, store)
        answers = await _race(app, settings, 25)
        assert await send_due_mail(store, settings) == 1
    assert {a.status_code for a in answers} == {200}
    assert [m[1][0].lower() for m in server.messages] == ["rennen@example.org"]
    assert len(store.queued_mail()) == 1


def test_concurrent_sign_ups_in_threads_store_one(store: Store) -> None:
    import threading

    count = 20
    start = threading.Barrier(count)
    results: list[int | None] = []

    def one(i: int) -> None:
        spelling = ["faden@example.org", "Faden@EXAMPLE.org"][i % 2]
        signup = NewSignup(NL, spelling, "", frozenset(), frozenset(), "Ja.", "1")
        start.wait()
        results.append(store.add_signup(signup, interval=timedelta(minutes=10)))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == count
    assert len([r for r in results if r is not None]) == 1
    assert len(store.queued_mail()) == 1
