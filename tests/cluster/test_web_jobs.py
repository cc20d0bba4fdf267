"""In a cluster the web app and `digest approve` send nothing themselves: an approval
queues the issue's send, a sign-up the mail queue's job, each in the transaction that
records it. On real PostgreSQL with Procrastinate's queue, through the real app."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from digest.cluster.app import MAIL_QUEUE, PLAN_ISSUE
from digest.config import Settings
from digest.core.errors import IssueReadOnly
from digest.core.models import Subscriber
from digest.issue.editors import add_editor
from digest.issue.review import LATER, QUEUED, record_approval
from digest.ops import jobs
from digest.store import Store
from digest.web.app import create_app
from tests.cluster import _web_support
from tests.cluster._web_support import queued_jobs
from tests.conftest import ROOT
from tests.smtp_server import RecordingServer

cluster_settings = _web_support.cluster_settings
cluster_store = _web_support.cluster_store

NL = "wochenueberblick"
WEEK = "2025-W05"
ISSUE = f"/admin/{NL}/{WEEK}"
# The Monday after the week: it has ended.
NOW = datetime(2025, 2, 3, 6, tzinfo=UTC)
PASSWORD = "correct horse battery"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
PLAN = {
    "task_name": PLAN_ISSUE,
    "args": {"newsletter": NL, "week": WEEK},
    "lock": f"plan:{NL}:{WEEK}",
    "queueing_lock": f"plan:{NL}:{WEEK}",
    "queue_name": "default",
    "status": "todo",
}


def reviewed(settings: Settings, approved_send: str = "immediately") -> Settings:
    """``settings`` with the newsletter waiting for an editor's approval."""
    newsletter = replace(settings.newsletter(NL), review="required", approved_send=approved_send)
    return replace(settings, newsletters=(newsletter,))


@pytest.fixture
async def collected(cluster_settings: Settings, cluster_store: Store) -> Store:
    await jobs.collect(cluster_settings, cluster_store, NL, now=NOW)
    add_editor(cluster_store, "erika", "erika@example.org", PASSWORD)
    for n, lists in enumerate((["allgemein"], ["bayern"], ["allgemein"])):
        cluster_store.save_subscriber(Subscriber(f"leser{n}@example.org", f"Leser {n}"), lists)
    return cluster_store


# --- an approval -----------------------------------------------------------------------------


def test_a_rolled_back_approval_queues_no_job(cluster_settings: Settings, collected: Store) -> None:
    settings = reviewed(cluster_settings)
    newsletter = settings.newsletter(NL)
    failed = pytest.raises(RuntimeError, match="before the commit")
    with failed, collected.engine.begin() as conn:
        approved = record_approval(
            settings, collected, newsletter, WEEK, "erika", now=NOW, connection=conn
        )
        assert approved.send == QUEUED
        # Queued in this transaction, so far: the approval's own connection sees it.
        seen = conn.exec_driver_sql("SELECT count(*) FROM procrastinate_jobs").scalar()
        assert seen == 1
        raise RuntimeError("something failed after the approval, before the commit")
    assert queued_jobs(collected) == []
    assert collected.approval(NL, WEEK) is None


def test_a_refused_approval_queues_no_job(cluster_settings: Settings, collected: Store) -> None:
    settings = reviewed(cluster_settings)
    record = collected.create_issue(NL, WEEK, NOW, NOW, "Sent before", [], now=NOW)
    collected.set_issue_status(record.id, "sent")
    with pytest.raises(IssueReadOnly):
        record_approval(settings, collected, settings.newsletter(NL), WEEK, "erika", now=NOW)
    assert queued_jobs(collected) == []


def test_a_committed_approval_queues_one_send(cluster_settings: Settings, collected: Store) -> None:
    settings = reviewed(cluster_settings)
    newsletter = settings.newsletter(NL)
    first = record_approval(settings, collected, newsletter, WEEK, "erika", now=NOW)
    again = record_approval(settings, collected, newsletter, WEEK, "max", now=NOW)
    assert (first.send, first.first) == (QUEUED, True)
    assert (again.send, again.first) == (QUEUED, False)
    # One job waits for the issue, however often it is approved.
    assert queued_jobs(collected) == [PLAN]
    approval = collected.approval(NL, WEEK)
    assert approval is not None and approval.approved_by == "erika"


def test_an_approval_for_the_next_run_queues_nothing(
    cluster_settings: Settings, collected: Store
) -> None:
    later = reviewed(cluster_settings, approved_send="next_run")
    approved = record_approval(later, collected, later.newsletter(NL), WEEK, "erika", now=NOW)
    # "immediately", but the week (NOW's own) has not ended: the tick's run sends it.
    soon = reviewed(cluster_settings)
    early = record_approval(soon, collected, soon.newsletter(NL), "2025-W06", "erika", now=NOW)
    assert approved.send == early.send == LATER
    assert queued_jobs(collected) == []


async def test_digest_approve_queues_the_send(
    cluster_settings: Settings, collected: Store, tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    shown = (ROOT / "config.toml").read_text(encoding="utf-8")
    config.write_text(
        shown.replace('id = "wochenueberblick"\n', 'id = "wochenueberblick"\nreview = "required"\n')
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env |= {"DIGEST_STORE_URL": cluster_settings.store.url, "DIGEST_CLUSTER_QUEUE": "procrastinate"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "digest.cli", "approve", NL, "--week", WEEK, "--editor", "erika",
        "--config", str(config), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, err.decode()
    assert out.decode().splitlines() == [
        f"{NL} {WEEK}: approved",
        "its send is queued: a `digest worker` sends it",
    ]
    assert queued_jobs(collected) == [PLAN]


# --- through the web app -------------------------------------------------------------------


def web_client(app: object, settings: Settings) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url=settings.public_url)


def csrf_of(page: httpx.Response, index: int = 0) -> str:
    return CSRF.findall(page.text)[index]


async def test_the_web_approval_queues_the_send_and_sends_nothing(
    cluster_settings: Settings, collected: Store
) -> None:
    async with RecordingServer() as smtp:
        settings = replace(reviewed(cluster_settings), smtp=smtp.settings())
        app = create_app(settings, collected, login_delay=0)
        async with web_client(app, settings) as http:
            form = await http.get("/admin/login")
            await http.post(
                "/admin/login",
                data={"csrf": csrf_of(form), "name": "erika", "password": PASSWORD},
            )
            page = await http.get(ISSUE)
            # The answer comes after any background task of the request has run.
            approved = await http.post(f"{ISSUE}/approve", data={"csrf": csrf_of(page, 1)})
    assert approved.status_code == 303 and approved.headers["location"].endswith("?approved")
    approval = collected.approval(NL, WEEK)
    assert approval is not None and approval.approved_by == "erika"
    assert queued_jobs(collected) == [PLAN]
    assert smtp.messages == []
    assert collected.get_issue(NL, WEEK) is None  # not even composed for sending


# --- a sign-up -------------------------------------------------------------------------------


async def sign_up(http: httpx.AsyncClient, address: str) -> httpx.Response:
    form = await http.get(f"/subscribe/{NL}")
    return await http.post(
        f"/subscribe/{NL}",
        data={
            "csrf": csrf_of(form),
            "email": address,
            "name": "",
            "categories": ["verwaltung"],
            "regions": ["Bayern"],
            "consent": "yes",
            "website": "",
        },
    )


async def test_a_sign_up_queues_the_mail_queue_job_and_the_app_sends_nothing(
    cluster_settings: Settings, cluster_store: Store
) -> None:
    async with RecordingServer() as smtp:
        settings = replace(cluster_settings, smtp=smtp.settings())
        # As `digest serve` makes it: with the mail queue's loop, which a cluster skips.
        app = create_app(settings, cluster_store, send_mail=True, mail_interval=0.05)
        async with app.router.lifespan_context(app), web_client(app, settings) as http:
            answers = [await sign_up(http, f"neu{n}@example.org") for n in range(3)]
            # Twenty rounds of the loop it would run on one machine.
            await asyncio.sleep(1.0)
    assert [a.status_code for a in answers] == [200, 200, 200]
    queued = cluster_store.queued_mail()
    assert len(queued) == 3 and all(row["sent_at"] is None for row in queued)
    # A burst of sign-ups leaves one job waiting: it sends every mail that is due.
    assert queued_jobs(cluster_store) == [
        {
            "task_name": MAIL_QUEUE,
            "args": {},
            "lock": None,
            "queueing_lock": "mail-queue",
            "queue_name": "default",
            "status": "todo",
        }
    ]
    assert smtp.messages == []


# --- digest serve ----------------------------------------------------------------------------


async def test_digest_serve_in_a_cluster_warns_of_counts_kept_in_memory(
    cluster_settings: Settings,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env |= {
        "DIGEST_STORE_URL": cluster_settings.store.url,
        "DIGEST_CLUSTER_QUEUE": "procrastinate",
        "PYTHONUNBUFFERED": "1",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "digest.cli", "serve", "--port", "0",
        "--config", str(ROOT / "config.toml"), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert process.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(20):
            while not (port := re.search(r"http://127\.0\.0\.1:(\d+)", "".join(lines))):
                line = await process.stdout.readline()
                assert line, "".join(lines)
                lines.append(line.decode())
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port[1]}") as http:
            assert (await http.get("/healthz")).status_code == 200
    finally:
        process.terminate()
        await asyncio.wait_for(process.communicate(), timeout=20)
    warning = next((line for line in lines if line.startswith("warning: ")), "")
    assert "web.rate_limit_storage is 'memory://'" in warning, "".join(lines)
