"""The ``digest`` command as a user runs it: a real process, real files, real SMTP."""

from __future__ import annotations

import asyncio
import email
import json
import os
import re
import shutil
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from email import policy
from pathlib import Path

import httpx
import pytest

from tests.smtp_server import RecordingServer

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = [
    ["collect"],
    ["send"],
    ["preview"],
    ["schedules"],
    ["run"],
    ["subscribers", "import"],
    ["unsubscribes"],
    ["unsubscribes", "process"],
    ["bounces"],
    ["bounces", "process"],
    ["subscribers", "list"],
    ["subscribers", "export"],
    ["subscribers", "erase"],
    ["subscribers"],
    ["dkim"],
    ["dkim", "keygen"],
    ["demo"],
    ["status"],
    ["deliveries"],
    ["deliveries", "retry"],
    ["sources"],
    ["sources", "test"],
    ["sources", "discover"],
    ["approve"],
    ["editors"],
    ["editors", "add"],
    ["editors", "list"],
    ["editors", "remove"],
    ["migrate"],
    ["store"],
    ["store", "copy"],
    [],
]


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A copy of the shipped config, demo feeds and lists in a folder of its own."""
    shutil.copy(ROOT / "config.toml", tmp_path / "config.toml")
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    shutil.copytree(ROOT / "subscribers", tmp_path / "subscribers")
    return tmp_path


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env.update(extra)
    return env


async def digest(*args: str, cwd: Path, **env: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "digest.cli",
        *args,
        cwd=cwd,
        env=_env(**env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "digest")
async def test_every_help_ends_with_an_example(command: list[str], site: Path) -> None:
    code, out, _ = await digest(*command, "--help", cwd=site)
    assert code == 0
    tail = out.rstrip().splitlines()
    assert any(line.strip() == "Example:" for line in tail[-4:]), out
    assert tail[-1].strip().startswith("digest ")


async def test_config_error_is_one_line_exit_2(site: Path) -> None:
    config = site / "config.toml"
    config.write_text(config.read_text().replace("pool_size = 2", "pool_sise = 2"))
    code, out, err = await digest("schedules", cwd=site)
    assert code == 2 and out == ""
    assert (
        err.strip()
        == f"error: {config.name}: smtp.pool_sise: unknown key (did you mean 'pool_size'?)"
        or err.count("\n") == 1
    )
    assert "smtp.pool_sise: unknown key" in err and "Traceback" not in err
    code, _, err = await digest("schedules", "--config", str(site / "nope.toml"), cwd=site)
    assert code == 2 and "no such file" in err and err.count("\n") == 1


async def test_config_that_is_a_directory_is_one_line_exit_2(site: Path) -> None:
    code, out, err = await digest("--config", str(site), "schedules", cwd=site)
    assert (code, out) == (2, "")
    assert err == f"error: --config: cannot read {site}: Is a directory\n"


async def test_weak_secret_for_a_public_url_is_refused_at_start(site: Path) -> None:
    code, _, err = await digest(
        "schedules", cwd=site, DIGEST_PUBLIC_URL="https://news.kommune-digital.example"
    )
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("error: config.toml: secret_key: is the demo value")
    code, _, err = await digest("schedules", cwd=site, DIGEST_SECRET_KEY="")
    assert code == 2 and "secret_key: is empty" in err and "DIGEST_SECRET_KEY" in err


async def test_debug_shows_the_traceback(site: Path) -> None:
    config = site / "config.toml"
    config.write_text(
        config.read_text().replace(
            'timezone = "Europe/Berlin"\nlocale', 'timezone = "Mars/Olympus"\nlocale'
        )
    )
    code, _, err = await digest("schedules", cwd=site)
    assert code == 2 and "unknown time zone 'Mars/Olympus'" in err
    assert "Traceback" not in err
    code, _, err = await digest("--debug", "schedules", cwd=site)
    assert code != 0 and "Traceback" in err


async def test_collect_skips_a_broken_source_and_keeps_the_rest(site: Path) -> None:
    broken = site / "examples" / "feeds" / "technik.rss"
    broken.write_text("Das ist kein Feed, sondern Text.\n", encoding="utf-8")
    code, out, err = await digest("collect", cwd=site)
    assert code == 1
    assert err.strip().splitlines() == [
        "warning: wochenueberblick: source 'Technik (RSS)' skipped: not a feed: "
        "XML syntax error at line 1 (syntax error)"
    ]
    assert "Politik (RSS): 11 articles" in out and "Smart City (JSON Feed): 7" in out
    assert "32 new" in out


LOGGED_SKIP = "source 'Technik (RSS)' skipped: not a feed"


async def test_log_lines_carry_a_utc_timestamp(site: Path) -> None:
    (site / "examples" / "feeds" / "technik.rss").write_text("kein Feed\n", encoding="utf-8")
    code, _, err = await digest("--debug", "collect", cwd=site)
    assert code == 1
    # The command's own "warning: ..." line says it too; the log line is the other one.
    (line,) = [line for line in err.splitlines() if LOGGED_SKIP in line and "warning" not in line]
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ DEBUG digest\.sources\.collect: source .*", line
    ), line


async def test_log_format_json_writes_one_object_per_line(site: Path) -> None:
    (site / "examples" / "feeds" / "technik.rss").write_text("kein Feed\n", encoding="utf-8")
    code, _, err = await digest("--log-format", "json", "--debug", "collect", cwd=site)
    assert code == 1
    logged = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    (skip,) = [entry for entry in logged if LOGGED_SKIP in entry["message"]]
    assert skip.keys() == {"time", "level", "logger", "message"}
    assert (skip["level"], skip["logger"]) == ("DEBUG", "digest.sources.collect")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", skip["time"])
    # Everything else on stderr is what the command prints, not a log line.
    assert all(line.startswith(("{", "warning: ")) for line in err.splitlines())


async def test_import_reports_bad_rows_by_line(site: Path) -> None:
    code, out, err = await digest(
        "subscribers",
        "import",
        "subscribers/fehlerhaft.csv",
        "--list",
        "fehlerhaft",
        "--consent",
        "Demo",
        cwd=site,
    )
    assert code == 1
    assert "3 imported" in out
    unused, *lines = err.strip().splitlines()
    assert "no segment of any newsletter draws on the list 'fehlerhaft'" in unused
    assert len(lines) == 3 and all("line " in line for line in lines)


def _path_without_digest() -> str:
    """The PATH minus every folder holding a ``digest``, as after ``make run`` unactivated."""
    folders = os.environ.get("PATH", "").split(os.pathsep)
    return os.pathsep.join(f for f in folders if not (Path(f) / "digest").exists())


async def test_demo_runs_once_then_sends_nothing_twice(site: Path) -> None:
    path = _path_without_digest()
    code, out, err = await digest("demo", cwd=site, PATH=path)
    assert code == 0, err
    assert "14 sent" in out
    # The hint it ends with works as printed, from where the demo ran.
    hint = out.strip().splitlines()[-1]
    assert hint.startswith("look at one: ") and hint.endswith(" -o preview.html")
    process = await asyncio.create_subprocess_shell(
        hint.removeprefix("look at one: "),
        cwd=site,
        env=_env(PATH=path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err_bytes = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, err_bytes.decode()
    assert "</html>" in (site / "preview.html").read_text(encoding="utf-8")
    emls = sorted((site / "outbox").glob("*.eml"))
    assert len(emls) == 14
    for path in emls:
        message = email.message_from_bytes(path.read_bytes(), policy=policy.strict)
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    code, out, _ = await digest("demo", cwd=site)
    assert code == 0 and "0 sent, 14 already sent before" in out
    assert len(list((site / "outbox").glob("*.eml"))) == 14


async def test_preview_and_dry_run(site: Path) -> None:
    assert (await digest("collect", cwd=site))[0] == 0
    await digest(
        "subscribers",
        "import",
        "subscribers/bayern.csv",
        "--list",
        "bayern",
        "--consent",
        "Demo",
        cwd=site,
    )
    code, out, _ = await digest(
        "preview",
        "wochenueberblick",
        "--week",
        "2025-W05",
        "--segment",
        "bayern",
        "--format",
        "text",
        cwd=site,
    )
    assert code == 0 and "Bayern:" in out and "Hessen:" not in out
    code, out, _ = await digest(
        "preview",
        "wochenueberblick",
        "--week",
        "2025-W05",
        "--subscriber",
        "juergen.boehm@example.org",
        "--format",
        "eml",
        "-o",
        "p.eml",
        cwd=site,
    )
    assert code == 0
    parsed = email.message_from_bytes((site / "p.eml").read_bytes(), policy=policy.strict)
    assert parsed["To"].addresses[0].addr_spec == "juergen.boehm@example.org"
    code, out, _ = await digest(
        "send", "wochenueberblick", "--week", "2025-W05", "--dry-run", cwd=site
    )
    assert code == 0 and "would send 4 messages" in out
    code, _, err = await digest(
        "preview", "wochenueberblick", "--week", "2025-W05", "--segment", "sport", cwd=site
    )
    assert code == 2 and "no segment 'sport'" in err
    unwritable = site / "nonexistent" / "dir" / "x.html"
    code, out, err = await digest(
        "preview", "wochenueberblick", "--week", "2025-W05", "-o", str(unwritable), cwd=site
    )
    assert (code, out) == (1, "")
    assert err == f"error: cannot write {unwritable}: No such file or directory\n"


async def test_send_over_smtp_and_a_server_that_is_gone(site: Path) -> None:
    await digest("collect", cwd=site)
    for name in ("allgemein", "bayern", "it-leitungen"):
        await digest(
            "subscribers",
            "import",
            f"subscribers/{name}.csv",
            "--list",
            name,
            "--consent",
            "Demo",
            cwd=site,
        )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    code, out, err = await digest(
        "send",
        "wochenueberblick",
        "--week",
        "2025-W05",
        cwd=site,
        DIGEST_SMTP_PORT=str(closed_port),
    )
    assert code == 1 and "Traceback" not in err
    assert "error: sending stopped:" in err and len(err.strip().splitlines()) == 1
    async with RecordingServer() as server:
        code, out, err = await digest(
            "send",
            "wochenueberblick",
            "--week",
            "2025-W05",
            cwd=site,
            DIGEST_SMTP_PORT=str(server.port),
        )
        assert code == 0, err
        assert "14 sent" in out and len(server.messages) == 14
        code, out, _ = await digest(
            "send",
            "wochenueberblick",
            "--week",
            "2025-W05",
            cwd=site,
            DIGEST_SMTP_PORT=str(server.port),
        )
        assert code == 0 and "0 sent" in out and len(server.messages) == 14


async def test_schedules_lists_next_local_run(site: Path) -> None:
    code, out, _ = await digest("schedules", cwd=site)
    assert code == 0
    assert out.startswith("wochenueberblick: '0 7 * * mon' (Europe/Berlin), next run Mon ")
    assert " 07:00 CE" in out


async def test_run_starts_the_scheduler_and_stops_on_sigterm(site: Path) -> None:
    import signal

    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "digest.cli",
        "run",
        cwd=site,
        env=_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    seen = b""
    async with asyncio.timeout(30):
        while b"next run" not in seen:
            line = await process.stderr.readline()
            assert line, seen.decode()
            seen += line
    process.send_signal(signal.SIGTERM)
    out, err = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, err.decode()
    assert b"wochenueberblick" in seen and b"scheduler stopped" in out
    # the job is kept in the database for the next start
    from sqlalchemy import create_engine, text

    engine = create_engine(f"sqlite:///{site / 'digest.db'}")
    with engine.connect() as conn:
        ids = conn.execute(text("select id from apscheduler_jobs")).scalars().all()
    engine.dispose()
    assert ids == ["newsletter:wochenueberblick"]


async def test_send_errors_are_one_line(site: Path) -> None:
    await digest("collect", cwd=site)
    await digest(
        "subscribers",
        "import",
        "subscribers/bayern.csv",
        "--list",
        "bayern",
        "--consent",
        "Demo",
        cwd=site,
    )
    code, _, err = await digest("send", "wochenueberblick", "--week", "2099-W01", cwd=site)
    assert code == 1 and err.startswith("error: week 2099-W01 is not over until 2099-01-05")
    assert len(err.strip().splitlines()) == 1
    overrides = site / "vorlagen"
    overrides.mkdir()
    (overrides / "digest.mjml.j2").write_text(
        "<mjml>\n<mj-body>\n{{ issue.key | keinfilter }}\n</mj-body>\n</mjml>\n"
    )
    config = site / "config.toml"
    config.write_text(config.read_text().replace('templates = ""', 'templates = "vorlagen"'))
    code, out, err = await digest("send", "wochenueberblick", "--week", "2025-W05", cwd=site)
    assert code == 1 and "Traceback" not in err
    assert err.strip() == ("error: template digest.mjml.j2, line 3: No filter named 'keinfilter'.")


SECRET = "Sw0rdfish-9a7c2e"


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _postgres_listening() -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", 5432)) == 0


def _shows_no_secret(*texts: str, secret: str = SECRET) -> None:
    import base64
    from urllib.parse import quote

    for text in texts:
        for form in (secret, quote(secret, safe=""), base64.b64encode(secret.encode()).decode()):
            assert form not in text, text


@pytest.mark.parametrize(
    ("url", "code", "problem"),
    [
        ("postgresql+psycopg://digest:{secret}@127.0.0.1:notaport/test", 2, "store.url: has a"),
        ("postgresql+nodriver://digest:{secret}@127.0.0.1/test", 2, "store.url: names no"),
        ("nosuchdriver://digest:{secret}@db/x", 2, "store.url: names no database driver"),
        ("digest:{secret}@db/x", 2, "store.url: is not a database URL"),
        ("postgresql+psycopg://digest:{secret}@127.0.0.1:{closed}/test", 1, "cannot open the"),
        ("postgresql+psycopg://digest:{secret}@127.0.0.1:5432/digest_no_db", 1, "cannot open the"),
    ],
)
async def test_store_url_password_is_never_shown(
    site: Path, url: str, code: int, problem: str
) -> None:
    if ":5432/" in url and not _postgres_listening():
        pytest.skip("no PostgreSQL on 127.0.0.1:5432")
    url = url.format(secret=SECRET, closed=_closed_port())
    exit_code, out, err = await digest("collect", cwd=site, DIGEST_STORE_URL=url)
    assert exit_code == code and "Traceback" not in err
    assert err.startswith("error: ") and err.count("\n") == 1 and problem in err, err
    assert "digest:***@" in err or "not a database URL" in err
    _shows_no_secret(out, err)
    exit_code, out, err = await digest("--debug", "collect", cwd=site, DIGEST_STORE_URL=url)
    assert exit_code == code and "Traceback" in err and problem in err
    _shows_no_secret(out, err)


async def test_smtp_password_is_never_shown_when_auth_fails(site: Path) -> None:
    config = site / "config.toml"
    config.write_text(
        config.read_text()
        .replace('security = "none"', 'security = "starttls"')
        .replace('username = ""', 'username = "digest"')
        .replace('password = ""', f'password = "{SECRET}"')
        .replace("validate_certs = true", "validate_certs = false")
    )
    await digest("collect", cwd=site)
    await digest(
        "subscribers",
        "import",
        "subscribers/bayern.csv",
        "--list",
        "bayern",
        "--consent",
        "Demo",
        cwd=site,
    )
    async with RecordingServer(tls="starttls", auth={"digest": "the-right-one"}) as server:
        for debug in ([], ["--debug"]):
            code, out, err = await digest(
                *debug, "send", "wochenueberblick", "--week", "2025-W05", cwd=site,
                DIGEST_SMTP_PORT=str(server.port),
            )  # fmt: skip
            assert code == 1 and "error: sending stopped:" in err and "535" in err, err
            _shows_no_secret(out, err)
        assert server.messages == []
    # The same password from the environment: not shown either.
    config.write_text(config.read_text().replace(SECRET, ""))
    async with RecordingServer(tls="starttls", auth={"digest": "the-right-one"}) as server:
        code, out, err = await digest(
            "--debug", "send", "wochenueberblick", "--week", "2025-W05", cwd=site,
            DIGEST_SMTP_PORT=str(server.port), DIGEST_SMTP_PASSWORD=SECRET,
        )  # fmt: skip
        assert code == 1 and "535" in err
        _shows_no_secret(out, err)


async def test_secrets_in_the_environment_are_not_in_help_or_config_errors(site: Path) -> None:
    secrets = {
        "DIGEST_SECRET_KEY": "short" + SECRET[:5],
        "DIGEST_SMTP_PASSWORD": SECRET,
        "DIGEST_STORE_URL": f"postgresql+psycopg://digest:{SECRET}x@db/x",
    }
    for command in (["--help"], ["send", "--help"], ["serve", "--help"], ["schedules"]):
        _, out, err = await digest(*command, "--debug", cwd=site, **secrets)
        _shows_no_secret(out, err, secret=secrets["DIGEST_SECRET_KEY"])
        _shows_no_secret(out, err)
    assert "secret_key: is 10 characters long" in err and "Traceback" in err


def _with_mailbox(site: Path, table: str) -> None:
    config = site / "config.toml"
    config.write_text(config.read_text() + f"\n[unsubscribe_mailbox]\n{table}\n")


async def test_unsubscribes_process_applies_tokens_from_a_maildir(site: Path) -> None:
    import mailbox

    from digest.config import load_settings
    from digest.core.models import Subscriber
    from digest.store import Store
    from tests.mailboxes.test_mailbox import deliver, mailto_subject, message

    _with_mailbox(site, 'maildir = "post"')
    mailbox.Maildir(site / "post", create=True).close()
    settings = load_settings(site / "config.toml", environ={})
    store = Store.open(f"sqlite:///{site / 'digest.db'}")
    try:
        sid = store.save_subscriber(Subscriber("anna@example.org"), ["allgemein"])
    finally:
        store.close()
    subject = mailto_subject(settings, sid)
    valid = deliver(site / "post", message(f"Re: {subject}"))
    other = deliver(site / "post", message("Frage\x1b[31m", "x\x1b]@example.org"))

    code, out, err = await digest("unsubscribes", "process", "--dry-run", cwd=site)
    assert (code, err) == (0, ""), err
    assert f"message {valid}: would be processed: unsubscribed, subscriber {sid} of " in out
    assert sorted(p.name for p in (site / "post" / "new").iterdir()) == sorted([valid, other])

    code, out, err = await digest("unsubscribes", "process", cwd=site)
    assert (code, err) == (0, ""), err
    assert f"message {valid}: processed: unsubscribed, subscriber {sid} of wochenueberblick" in out
    assert f"message {other} from x?" in out  # a control character is not passed on
    assert "left alone: no unsubscribe token in the subject" in out
    assert out.endswith(
        "1 unsubscribed, 0 already unsubscribed, 0 unknown subscriber), 1 left alone\n"
    )
    assert subject.split()[1] not in out and "\x1b" not in out
    assert [p.name for p in (site / "post" / "new").iterdir()] == [other]

    code, out, _ = await digest("unsubscribes", "process", cwd=site)
    assert code == 0 and out.startswith(f"message {other} ") and "0 processed" in out


async def test_unsubscribes_process_errors_are_one_line(site: Path) -> None:
    code, out, err = await digest("unsubscribes", "process", cwd=site)
    assert (code, out) == (2, "")
    assert err.startswith("error: config.toml: unsubscribe_mailbox: not configured")
    assert err.count("\n") == 1
    port = _closed_port()
    _with_mailbox(site, f'imap_host = "127.0.0.1"\nimap_port = {port}\nimap_username = "abmelden"')
    code, out, err = await digest(
        "unsubscribes", "process", cwd=site, DIGEST_UNSUBSCRIBE_MAILBOX_IMAP_PASSWORD=SECRET
    )
    assert (code, out) == (1, "") and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(
        f"error: unsubscribe mailbox IMAP abmelden@127.0.0.1:{port}: cannot connect: "
    )
    _shows_no_secret(err)


async def test_import_needs_a_consent_statement(site: Path) -> None:
    args = ("subscribers", "import", "subscribers/bayern.csv", "--list", "bayern")
    code, out, err = await digest(*args, cwd=site)
    assert code == 2 and out == "" and "--consent" in err
    code, _out, err = await digest(*args, "--consent", "  ", cwd=site)
    assert code == 1 and err.strip().splitlines() == [
        "error: the consent statement is empty; say how these readers consented"
    ]


async def test_import_dry_run_then_list_export_and_erase(site: Path) -> None:
    args = ("subscribers", "import", "subscribers/bayern.csv", "--list", "bayern")
    consent = ("--consent", "Messe 2024, Formular mit Double-Opt-in")
    code, out, err = await digest(*args, *consent, "--dry-run", cwd=site)
    assert code == 0, err
    assert out.strip().endswith(
        "4 imported, 0 updated, 0 unchanged, 0 suppressed, 0 skipped in list 'bayern'; "
        "dry run, nothing written"
    )
    code, out, _ = await digest("subscribers", "list", cwd=site)
    assert (code, out.strip()) == (0, "0 subscribers")
    code, out, _ = await digest(*args, *consent, cwd=site)
    assert "4 imported, 0 updated, 0 unchanged" in out

    code, out, _ = await digest("subscribers", "list", "--list", "bayern", cwd=site)
    lines = out.strip().splitlines()
    assert code == 0 and lines[0] == "4 subscribers in list 'bayern': 4 active"
    assert len(lines) == 5 and all(line.split("\t")[2] == "active" for line in lines[1:])
    address = lines[1].split("\t")[0]

    code, out, _ = await digest("subscribers", "export", address.upper(), cwd=site)
    assert code == 0
    document = json.loads(out)
    assert document["subscriber"]["email"] == address
    assert document["consents"][0]["statement"] == consent[1]
    assert set(document) >= {"memberships", "consents", "deliveries", "suppressions"}

    code, out, _ = await digest(
        "subscribers", "export", "--list", "bayern", "-o", "bayern-export.csv", cwd=site
    )
    assert code == 0 and out.strip() == "wrote bayern-export.csv"
    code, out, _ = await digest(
        "subscribers", "import", "bayern-export.csv", "--list", "bayern", *consent, cwd=site
    )
    assert "0 imported, 0 updated, 4 unchanged" in out

    code, out, _ = await digest("subscribers", "erase", address, "--yes", cwd=site)
    assert code == 0 and address in out
    code, out, err = await digest("subscribers", "export", address, cwd=site)
    assert code == 0, err
    erased = json.loads(out)  # what is still held: the keyed hash on the suppression list
    assert erased["subscriber"] is None and erased["signups"] == []
    assert [s["reason"] for s in erased["suppressions"]] == ["erased"]
    code, out, err = await digest("subscribers", "export", "nie@example.org", cwd=site)
    assert (code, out, err.strip()) == (
        1,
        "",
        "error: nothing is held about the address nie@example.org",
    )
    code, out, err = await digest(*args, *consent, cwd=site)
    assert "0 imported, 0 updated, 3 unchanged, 1 suppressed" in out
    assert "the address is suppressed" in err
    code, out, _ = await digest("subscribers", "list", "--status", "erased", cwd=site)
    assert out.splitlines()[0] == "4 subscribers: 3 active, 1 erased"
    assert address not in out


async def test_erase_asks_and_suppresses_an_unknown_address(site: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "digest.cli", "subscribers", "erase", "x@example.org",
        cwd=site, env=_env(), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(b"n\n"), timeout=60)
    assert process.returncode == 130 and b"Erase" in out and b"aborted" in err
    code, out, err = await digest("subscribers", "erase", "X@example.org", "--yes", cwd=site)
    assert (code, out) == (1, "")
    assert err.strip().splitlines() == [
        "error: no subscriber or sign-up has the address X@example.org; "
        "it is suppressed all the same"
    ]
    (site / "one.csv").write_text("email,name\nx@EXAMPLE.org,X\n", encoding="utf-8")
    code, out, err = await digest(
        "subscribers", "import", "one.csv", "--list", "l", "--consent", "Demo", cwd=site
    )
    assert code == 0 and "0 imported, 0 updated, 0 unchanged, 1 suppressed" in out


async def test_bounces_process_records_on_the_delivery_that_export_shows(site: Path) -> None:
    import mailbox

    from tests.mailboxes.test_bounces import FIXTURES

    config = site / "config.toml"
    config.write_text(
        config.read_text()
        + '\n[bounces]\ndomain = "bounces.kommune-digital.example"\nmaildir = "rueck"\n'
    )
    mailbox.Maildir(site / "rueck", create=True).close()
    await digest("collect", cwd=site)
    code, _, err = await digest(
        "subscribers", "import", "subscribers/allgemein.csv", "--list", "allgemein",
        "--consent", "Demo", cwd=site,
    )  # fmt: skip
    assert code == 0, err
    async with RecordingServer() as server:
        code, out, err = await digest(
            "send", "wochenueberblick", "--week", "2025-W05", cwd=site,
            DIGEST_SMTP_PORT=str(server.port),
        )  # fmt: skip
        assert code == 0, err
    mail_from, (recipient,), data = server.messages[0]
    assert mail_from.startswith("bounce-") and mail_from.endswith(
        "@bounces.kommune-digital.example"
    )
    headers = data.replace(b"\r\n", b"\n").decode("ascii").partition("\n\n")[0]
    text = (FIXTURES / "postfix-hard-5.1.1.eml").read_text(encoding="utf-8")
    text = text.replace("{{RETURN_PATH}}", mail_from).replace("{{RECIPIENT}}", recipient)
    box = mailbox.Maildir(site / "rueck", create=False)
    key = box.add(text.replace("{{ORIGINAL_HEADERS}}", headers).encode())
    box.close()

    code, out, err = await digest("bounces", "process", "--dry-run", cwd=site)
    assert (code, err) == (0, ""), err
    assert f"message {key}: would be processed: hard bounce 5.1.1, delivery " in out
    assert "address would be suppressed" in out
    assert [p.name for p in (site / "rueck" / "new").iterdir()] == [key]

    code, out, err = await digest("bounces", "process", cwd=site)
    assert (code, err) == (0, ""), err
    assert out.endswith("1 processed (1 hard), 1 addresses suppressed, 0 left alone\n")
    assert [p.name for p in (site / "rueck" / "cur").iterdir()] == [f"{key}:2,S"]

    code, out, err = await digest("subscribers", "export", recipient, cwd=site)
    assert code == 0, err
    document = json.loads(out)
    [delivery] = document["deliveries"]
    assert (delivery["state"], delivery["bounce"], delivery["bounce_status"]) == (
        "sent",
        "hard",
        "5.1.1",
    )
    assert delivery["bounce_diagnostic"].startswith("550 5.1.1 Requested action not taken")
    assert document["subscriber"]["status"] == "bounced"
    assert document["suppressions"][0]["reason"] == "hard_bounce"

    code, out, _ = await digest("bounces", "process", cwd=site)
    assert (
        code == 0
        and out == "0 unread messages: 0 processed, 0 addresses suppressed, 0 left alone\n"
    )


@asynccontextmanager
async def _serving(site: Path, **env: str) -> AsyncIterator[httpx.AsyncClient]:
    """``digest serve`` as a process on a free port; a client for it, its public_url."""
    import signal

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "digest.cli", "serve", "--port", str(port),
        cwd=site, env=_env(DIGEST_PUBLIC_URL=base, **env),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with httpx.AsyncClient(base_url=base) as client:
            async with asyncio.timeout(30):
                while True:
                    try:
                        if (await client.get("/healthz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        assert process.returncode is None, "digest serve ended"
                        await asyncio.sleep(0.1)
            yield client
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(process.communicate(), timeout=30)
    # uvicorn ends by raising the signal it handled again, after a clean shutdown.
    assert process.returncode in (0, -signal.SIGTERM), err.decode()
    assert "Traceback" not in err.decode() and "Logging error" not in err.decode()


async def _sign_up(client: httpx.AsyncClient, address: str) -> httpx.Response:
    """The sign-up form of the demo newsletter, filled in and sent as a browser does."""
    form = await client.get("/subscribe/wochenueberblick")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf, form.text
    return await client.post(
        "/subscribe/wochenueberblick",
        data={
            "csrf": csrf[1],
            "email": address,
            "name": "Anna Beispiel",
            "categories": ["politik", "verwaltung"],
            "regions": ["Bayern", "Berlin"],
            "consent": "yes",
            "website": "",
        },
    )


async def test_serve_limits_sign_ups_as_the_web_settings_say(site: Path) -> None:
    config = site / "config.toml"
    config.write_text(config.read_text() + '\n[web]\nsignup_rate_limit = "2/hour"\n')
    async with _serving(site) as client:
        answers = [await _sign_up(client, f"r{i}@example.org") for i in range(3)]
    assert [answer.status_code for answer in answers] == [200, 200, 429], answers[0].text


async def test_run_sends_the_confirmation_mail_queued_while_the_relay_was_down(
    site: Path,
) -> None:
    """A sign-up taken by `digest serve` while the relay is down is mailed by `digest run`."""
    import signal

    from sqlalchemy import update

    from digest.store import Store
    from digest.store import schema as t

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    async with _serving(site, DIGEST_SMTP_PORT=str(closed_port)) as client:
        assert (await _sign_up(client, "geduld@example.org")).status_code == 200
        store = Store.open(f"sqlite:///{site / 'digest.db'}")
        try:
            # The server's own first attempt fails: the claim counts the attempt, and
            # the failure is recorded after it.
            async with asyncio.timeout(30):
                while not (queued := store.queued_mail())[0]["last_error"]:
                    await asyncio.sleep(0.2)
        finally:
            store.close()
    [row] = queued
    assert row["sent_at"] is None and row["given_up_at"] is None
    assert "Connection refused" in row["last_error"] or "connect" in row["last_error"]
    store = Store.open(f"sqlite:///{site / 'digest.db'}")
    try:
        # The retry's backoff (half a minute at first) is over, as if the time had passed.
        with store.engine.begin() as conn:
            conn.execute(
                update(t.mail_queue).values(next_attempt_at=row["created_at"] - timedelta(1))
            )
        async with RecordingServer() as relay:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "digest.cli", "run",
                cwd=site, env=_env(DIGEST_SMTP_PORT=str(relay.port)),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            try:
                async with asyncio.timeout(30):
                    while not relay.messages:
                        await asyncio.sleep(0.2)
                # Another round of the queue (every 5 s) sends nothing more.
                await asyncio.sleep(6)
            finally:
                process.send_signal(signal.SIGTERM)
                out, err = await asyncio.wait_for(process.communicate(), timeout=30)
        assert process.returncode == 0, err.decode()
        assert b"scheduler stopped" in out
        [(_sender, recipients, data)] = relay.messages
        assert recipients == ["geduld@example.org"]
        mail = email.message_from_bytes(data, policy=policy.strict)
        assert "/confirm/" in mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        [row] = store.queued_mail()
        assert row["sent_at"] is not None and row["attempts"] == 2
    finally:
        store.close()


async def _import_demo_lists(site: Path) -> None:
    await digest("collect", cwd=site)
    for name in ("allgemein", "bayern", "it-leitungen"):
        code, _, err = await digest(
            "subscribers", "import", f"subscribers/{name}.csv", "--list", name,
            "--consent", "Demo", cwd=site,
        )  # fmt: skip
        assert code == 0, err


async def test_send_exits_75_while_rows_are_deferred(site: Path) -> None:
    await _import_demo_lists(site)
    deferred = "m.oezdemir@example.net"
    async with RecordingServer(temp_fail={deferred: "451 4.7.1 Greylisted"}) as server:
        code, out, err = await digest(
            "send", "wochenueberblick", "--week", "2025-W05", cwd=site,
            DIGEST_SMTP_PORT=str(server.port),
        )  # fmt: skip
        assert code == 75, err
        assert "13 sent" in out and "1 deferred" in out and "1 left, next retry due" in out
        assert "error" not in err
        server.handler.replies.clear()
        # run again at once: the deferred row is not due, nothing is sent, still 75
        code, out, _ = await digest(
            "send", "wochenueberblick", "--week", "2025-W05", cwd=site,
            DIGEST_SMTP_PORT=str(server.port),
        )  # fmt: skip
        assert code == 75 and "0 sent" in out and "not due yet" in out
        assert len(server.messages) == 13
        code, out, _ = await digest("status", cwd=site)
        assert code == 0 and out.startswith("wochenueberblick 2025-W05 (sending): 13 sent")
        assert "next retry: " in out and "451 ×1" in out
        code, out, _ = await digest(
            "deliveries", "retry", "wochenueberblick", "--week", "2025-W05", cwd=site
        )
        assert code == 0 and "1 deliveries re-queued" in out
        code, out, err = await digest(
            "send", "wochenueberblick", "--week", "2025-W05", cwd=site,
            DIGEST_SMTP_PORT=str(server.port),
        )  # fmt: skip
        assert code == 0 and "1 sent" in out, err
        assert len(server.messages) == 14


async def test_sigterm_on_send_finishes_what_is_in_flight_and_prints_the_summary(
    site: Path,
) -> None:
    import signal

    await _import_demo_lists(site)
    async with RecordingServer(delay=0.4) as server:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "digest.cli", "send", "wochenueberblick", "--week",
            "2025-W05", cwd=site, env=_env(DIGEST_SMTP_PORT=str(server.port)),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        async with asyncio.timeout(30):
            while len(server.messages) < 2:
                await asyncio.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(process.communicate(), timeout=30)
        received = len(server.messages)
    assert process.returncode == 75, err.decode()
    summary = out.decode()
    assert "stopped: interrupted" in summary and "Traceback" not in err.decode()
    assert 2 <= received < 14
    # every message the server took is recorded as sent, nothing in flight was lost
    assert f"{received} sent" in summary
    from sqlalchemy import create_engine, text

    engine = create_engine(f"sqlite:///{site / 'digest.db'}")
    with engine.connect() as conn:
        states = dict(
            conn.execute(text("select state, count(*) from deliveries group by state")).all()
        )
    engine.dispose()
    assert states == {"sent": received, "pending": 14 - received}
