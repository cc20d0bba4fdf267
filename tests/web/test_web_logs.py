"""No token reaches a log line: ``digest serve`` as a user runs it, and the app served by hand."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from digest.audience.tokens import make_token, unsubscribe_url
from digest.config import Settings, load_settings
from digest.core.models import Subscriber
from digest.store import Store
from digest.web import create_app, redact_tokens, uvicorn_log_config

ROOT = Path(__file__).resolve().parents[2]
NL = "wochenueberblick"


def test_redact_tokens_keeps_everything_but_the_token() -> None:
    line = '127.0.0.1:5 - "POST /unsubscribe/WzEsIn.abc-_x?a=1 HTTP/1.1" 200'
    assert redact_tokens(line) == '127.0.0.1:5 - "POST /unsubscribe/[token]?a=1 HTTP/1.1" 200'
    assert redact_tokens("GET /Preferences/abc/x") == "GET /Preferences/[token]/x"
    assert redact_tokens("https://h/confirm/abc#top") == "https://h/confirm/[token]#top"
    assert redact_tokens("/healthz /static/site.css") == "/healthz /static/site.css"


@pytest.mark.parametrize(
    "path",
    [
        "/%75nsubscribe/{t}",
        "/%55NSUBSCRIBE/{t}",
        "/unsubscribe%2F{t}",
        "/unsubscribe%2f{t}",
        "/unsubscribe//{t}",
        "//preferences///{t}/x",
        "/unsubscribe%252F{t}",
        "/x/..%2Fconfirm/{t}",
        "/confirm/./{t}",
        "/unsubscribe/%0A{t}%22",
    ],
)
def test_redact_tokens_looks_at_the_path_as_a_route_would(path: str) -> None:
    token = "WzEsIndvY2hlbnVlYmVyYmxpY2siXQ.secret"
    line = f'127.0.0.1:5 - "GET {path.format(t=token)}?a=1 HTTP/1.1" 404'
    redacted = redact_tokens(line)
    assert token not in redacted and "secret" not in redacted, redacted
    assert "[token]" in redacted and redacted.endswith('?a=1 HTTP/1.1" 404'), redacted
    assert "\n" not in redacted


async def _raw_request(port: int, method: str, target: str) -> int:
    """The status of one request whose target goes on the wire exactly as written."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n"
        "Connection: close\r\n\r\n".encode("ascii")
    )
    await writer.drain()
    status = await reader.readline()
    writer.close()
    await writer.wait_closed()
    return int(status.split()[1])


async def test_a_token_path_written_otherwise_is_a_404_and_logs_no_token(
    demo_settings: Settings, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    """A server decodes /%75nsubscribe/<token> to the unsubscribe route: it must neither
    unsubscribe nor leave the token in the access log."""
    sid = store.save_subscriber(Subscriber("odd@example.org"), ["allgemein"])
    token = unsubscribe_url(demo_settings, NL, sid).rsplit("/", 1)[1]
    preferences = make_token(demo_settings.secret_key, "preferences", sid, NL)
    targets = [
        f"/%75nsubscribe/{token}",
        f"/unsubscribe%2F{token}",
        f"/unsubscribe%2f{token}",
        f"/unsubscribe//{token}",
        f"//unsubscribe/{token}",
        f"/unsubscribe/./{token}",
        f"/%70references/{preferences}",
    ]
    config = uvicorn.Config(
        create_app(demo_settings, store),
        host="127.0.0.1",
        port=0,
        log_config=uvicorn_log_config(),
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                await asyncio.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        statuses = {
            (method, target): await _raw_request(port, method, target)
            for target in targets
            for method in ("GET", "POST")
        }
        canonical = await _raw_request(port, "GET", f"/unsubscribe/{token}")
    finally:
        server.should_exit = True
        await serving
        logging.getLogger("uvicorn.access").handlers.clear()
        logging.getLogger("uvicorn").handlers.clear()
    captured = capsys.readouterr()
    log = captured.out + captured.err
    assert set(statuses.values()) == {404}, statuses
    assert canonical == 200
    assert [s.email for s in store.active_subscribers(newsletter=NL)] == ["odd@example.org"]
    assert log.count("/[token]") >= len(statuses), log
    assert token not in log and preferences not in log, log
    assert token[-12:] not in log and preferences[-12:] not in log, log


@contextlib.asynccontextmanager
async def _digest_serve(
    site: Path, *options: str, serve_options: tuple[str, ...] = ()
) -> AsyncIterator[tuple[str, list[str]]]:
    """A real ``digest [options] serve [serve_options]`` on a free port in ``site`` (its
    config.toml, a SQLite store there): yields its base URL and the lines it printed, all
    of them once it ended."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env["DIGEST_STORE_URL"] = f"sqlite:///{site / 'digest.db'}"
    env["PYTHONUNBUFFERED"] = "1"
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "digest.cli", *options, "serve", "--port", "0", *serve_options),
        cwd=site,
        env=env,
        stdout=asyncio.subprocess.PIPE,  # the access log
        stderr=asyncio.subprocess.STDOUT,  # everything else
    )
    output = process.stdout
    assert output is not None
    log: list[str] = []
    try:
        async with asyncio.timeout(20):
            while not (port := re.search(r"http://127\.0\.0\.1:(\d+)", "".join(log))):
                line = await output.readline()
                assert line, "".join(log)
                log.append(line.decode())
        base = f"http://127.0.0.1:{port.group(1)}"
        # With --workers the port is bound before any worker listens on it.
        async with asyncio.timeout(20), httpx.AsyncClient(base_url=base) as client:
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/healthz")).status_code == 200:
                        break
                await asyncio.sleep(0.1)
        yield base, log
    finally:
        process.terminate()
        rest = await asyncio.wait_for(output.read(), timeout=20)
        await process.wait()
        log.append(rest.decode())


async def test_digest_serve_logs_no_token(tmp_path: Path) -> None:
    shutil.copy(ROOT / "config.toml", tmp_path / "config.toml")
    store = Store.open(f"sqlite:///{tmp_path / 'digest.db'}")
    try:
        sid = store.save_subscriber(Subscriber("log@example.org"), ["allgemein"])
    finally:
        store.close()
    async with _digest_serve(tmp_path) as (base, log):
        token = make_token("irrelevant-for-the-log", "unsubscribe", sid, NL)
        async with httpx.AsyncClient(base_url=base) as client:
            for path in (f"/unsubscribe/{token}", f"/preferences/{token}", f"/confirm/{token}"):
                await client.get(path)
                await client.post(path)
            await client.head(f"/unsubscribe/{token}?from=mail")
            await client.get("/healthz")
    text = "".join(log)
    assert "/unsubscribe/[token]" in text and "/healthz" in text, text
    assert "Logging error" not in text, text  # every access line formatted by uvicorn
    assert '"HEAD /unsubscribe/[token]?from=mail HTTP/1.1" 400' in text, text
    assert token not in text and token[:12] not in text, text


async def test_digest_serve_workers_record_every_post_and_log_no_token(tmp_path: Path) -> None:
    """With --workers every process builds the app as the command does: the same store,
    the same redaction of tokens in the access log."""
    shutil.copy(ROOT / "config.toml", tmp_path / "config.toml")
    settings = load_settings(
        tmp_path / "config.toml",
        environ={"DIGEST_STORE_URL": f"sqlite:///{tmp_path / 'digest.db'}"},
    )
    store = Store.open(f"sqlite:///{tmp_path / 'digest.db'}", secret_key=settings.secret_key)
    try:
        ids = [
            store.save_subscriber(Subscriber(f"w{n}@example.org"), ["allgemein"]) for n in range(40)
        ]
    finally:
        store.close()
    tokens = [make_token(settings.secret_key, "unsubscribe", sid, NL) for sid in ids]
    async with (
        _digest_serve(
            tmp_path, serve_options=("--workers", "2", "--rate-limit", "1000/minute")
        ) as (base, log),
        httpx.AsyncClient(base_url=base) as client,
    ):
        answers = await asyncio.gather(*(client.post(f"/unsubscribe/{t}") for t in tokens))
        health = await client.get("/healthz")
    text = "".join(log)
    assert [a.status_code for a in answers] == [200] * len(tokens), text
    assert health.status_code == 200
    assert len(re.findall(r"Started server process", text)) == 2, text
    assert text.count('"POST /unsubscribe/[token] HTTP/1.1" 200') == len(tokens), text
    assert not any(t in text or t[-12:] in text for t in tokens), text
    store = Store.open(f"sqlite:///{tmp_path / 'digest.db'}", secret_key=settings.secret_key)
    try:
        assert store.active_subscribers(newsletter=NL) == []
        assert all(store.unsubscribed(sid, NL) for sid in ids)
    finally:
        store.close()


async def test_create_app_users_get_redaction_from_uvicorn_log_config(
    demo_settings: Settings, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    """What the docs tell someone who serves ``create_app`` with uvicorn of their own."""
    sid = store.save_subscriber(Subscriber("own@example.org"), ["allgemein"])
    url = unsubscribe_url(demo_settings, NL, sid)
    token = url.rsplit("/", 1)[1]
    config = uvicorn.Config(
        create_app(demo_settings, store),
        host="127.0.0.1",
        port=0,
        log_config=uvicorn_log_config(),
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                await asyncio.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        local = url.replace(demo_settings.public_url, f"http://127.0.0.1:{port}")
        async with httpx.AsyncClient() as client:
            assert (await client.get(local)).status_code == 200
            assert (await client.post(local)).status_code == 200
    finally:
        server.should_exit = True
        await serving
        logging.getLogger("uvicorn.access").handlers.clear()
        logging.getLogger("uvicorn").handlers.clear()
    captured = capsys.readouterr()
    log = captured.out + captured.err  # uvicorn logs access to stdout, the rest to stderr
    assert '"POST /unsubscribe/[token] HTTP/1.1" 200' in log, log
    assert token not in log


async def test_digest_serve_believes_forwarded_addresses_from_trusted_proxies_only(
    tmp_path: Path,
) -> None:
    """uvicorn's own proxy handling believes 127.0.0.1 whatever the settings say: with
    loopback not among web.trusted_proxies, a forwarded address from it is not believed."""
    config = (ROOT / "config.toml").read_text()
    config += (
        '\n[web]\ntrusted_proxies = ["10.9.9.9"]\nmetrics = true\nmetrics_from = ["127.0.0.1"]\n'
    )
    (tmp_path / "config.toml").write_text(config)
    async with (
        _digest_serve(tmp_path) as (base, _log),
        httpx.AsyncClient(base_url=base) as client,
    ):
        plain = await client.get("/metrics")
        forwarded = await client.get("/metrics", headers={"x-forwarded-for": "203.0.113.9"})
    assert plain.status_code == 200, plain.text
    # From 127.0.0.1, not a trusted proxy here: the header is not believed, the client
    # stays 127.0.0.1 and may read the metrics.
    assert forwarded.status_code == 200, forwarded.text


#: A text log line of digest's (digest.cli.logs): UTC time, level, logger, message.
_TEXT_LINE = re.compile(
    r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ (?P<level>[A-Z]+) (?P<logger>[\w.]+): (?P<message>.*)"
)
_UTC_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


async def _serve_once(site: Path, *options: str) -> tuple[str, list[str]]:
    """Start ``digest [options] serve``, ask it for /healthz, stop it: its port and lines."""
    shutil.copy(ROOT / "config.toml", site / "config.toml")
    async with (
        _digest_serve(site, *options) as (base, log),
        httpx.AsyncClient(base_url=base) as client,
    ):
        assert (await client.get("/healthz")).status_code == 200
    return base.rsplit(":", 1)[1], "".join(log).splitlines()


def _uvicorn_said(port: str, said: set[tuple[str, str, str]]) -> None:
    """uvicorn's startup lines and the access line of /healthz are among ``said``."""
    running = f"Uvicorn running on http://127.0.0.1:{port} (Press CTRL+C to quit)"
    assert ("INFO", "uvicorn.error", running) in said, said
    assert ("INFO", "uvicorn.error", "Application startup complete.") in said, said
    healthz = re.compile(r'127\.0\.0\.1:\d+ - "GET /healthz HTTP/1\.1" 200')
    assert any(
        (level, logger) == ("INFO", "uvicorn.access") and healthz.fullmatch(message)
        for level, logger, message in said
    ), said


async def test_digest_serve_writes_uvicorn_lines_in_digest_format(tmp_path: Path) -> None:
    port, lines = await _serve_once(tmp_path)
    found = [_TEXT_LINE.fullmatch(line) for line in lines]
    assert all(found), lines  # every line, uvicorn's too, in the one format
    _uvicorn_said(port, {(m["level"], m["logger"], m["message"]) for m in found if m})


async def test_digest_serve_writes_uvicorn_lines_as_json(tmp_path: Path) -> None:
    port, lines = await _serve_once(tmp_path, "--log-format", "json")
    entries = [json.loads(line) for line in lines]  # every line one JSON object
    assert all(_UTC_TIME.fullmatch(entry["time"]) for entry in entries), entries
    _uvicorn_said(port, {(e["level"], e["logger"], e["message"]) for e in entries})
