"""The cluster's small jobs on a worker's settings and store: a mailbox pass and the
mail queue, against a real Maildir and a real SMTP server."""

from __future__ import annotations

import mailbox
from datetime import UTC, datetime, timedelta
from pathlib import Path

from digest.cluster import app as names
from digest.cluster.chores import mail_queue_job, mailbox_job
from digest.cluster.tasks import Worker
from digest.cluster.tick import tick
from digest.core.models import Subscriber
from digest.store import Store
from digest.store.signups import NewSignup
from tests.cluster.conftest import settings_for
from tests.cluster.test_tick import consume, queued
from tests.mailboxes.test_mailbox import NL, deliver, files, mailto_subject, message
from tests.smtp_server import RecordingServer


def signup(address: str) -> NewSignup:
    return NewSignup(
        newsletter=NL,
        email=address,
        name="",
        categories=frozenset(),
        regions=frozenset(),
        statement="Ich möchte den Newsletter erhalten.",
        text_version=None,
    )


async def test_the_mail_queue_job_sends_each_due_confirmation_once(
    cluster_url: str, cluster_store: Store
) -> None:
    async with RecordingServer() as server:
        settings = settings_for(
            cluster_url, smtp={"host": "127.0.0.1", "port": server.port, "security": "none"}
        )
        tick(settings, cluster_store, datetime.now(UTC) - timedelta(minutes=1))  # hourly round
        consume(cluster_store)
        for address in ("anna@example.org", "ben@example.org"):
            assert cluster_store.add_signup(signup(address), interval=timedelta(minutes=10))
        now = datetime.now(UTC)
        tick(settings, cluster_store, now)
        assert len(queued(cluster_store, names.MAIL_QUEUE)) == 2  # queued for the due mail

        worker = Worker(settings)
        try:
            assert await mail_queue_job(worker) == 2
            assert await mail_queue_job(worker) == 0  # each once
        finally:
            worker.close()
    assert sorted(rcpt for _from, rcpts, _data in server.messages for rcpt in rcpts) == [
        "anna@example.org",
        "ben@example.org",
    ]
    consume(cluster_store)
    tick(settings, cluster_store, now + timedelta(minutes=1))
    assert len(queued(cluster_store, names.MAIL_QUEUE)) == 2  # nothing due any more


async def test_the_mailbox_job_processes_the_configured_maildir(
    cluster_url: str, cluster_store: Store, tmp_path: Path
) -> None:
    maildir = tmp_path / "mail"
    mailbox.Maildir(maildir, create=True).close()
    settings = settings_for(cluster_url, unsubscribe_mailbox={"maildir": str(maildir)})
    sid = cluster_store.save_subscriber(Subscriber("anna@example.org"), ["allgemein"])
    key = deliver(maildir, message(mailto_subject(settings, sid)))

    worker = Worker(settings)
    try:
        await mailbox_job(worker, "unsubscribe")
        await mailbox_job(worker, "bounces")  # not configured: nothing to do
    finally:
        worker.close()
    assert cluster_store.unsubscribed(sid, NL)
    assert list(files(maildir, "cur")) == [f"{key}:2,S"]
