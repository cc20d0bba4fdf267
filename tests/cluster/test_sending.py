"""Sending in a cluster: real ``digest worker`` processes, a real SMTP server, PostgreSQL.

An issue is planned by one job and sent in slices, one per slot at a time (see
``digest.cluster.sending``). A worker killed mid-slice loses nobody and repeats only
what its slot had sent without recording, with the first Message-ID; ``digest send
--wait`` exits as a send on one machine does; two issues sending at once share the
relay's connections, never exceeding them.

DIGEST_TEST_CLUSTER_READERS changes the number of readers of the kill test.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from digest.cluster.app import RETRY_PASS, RUN_NEWSLETTER, defer
from digest.core.models import Article, DeliveryState
from digest.delivery.holding import MAX_UNRECORDED
from digest.delivery.relays import connection_slots
from digest.delivery.senders import share_of
from digest.issue.compose import iso_week_window
from digest.ops import jobs
from tests.cluster._support import (
    NL,
    NL2,
    NOW,
    WEEK,
    CountingServer,
    cluster_site,
    digest,
    job_rows,
    postgres_schema,
    running_workers,
    until,
)
from tests.smtp_server import RecordingServer

READERS = int(os.environ.get("DIGEST_TEST_CLUSTER_READERS", "20000"))
SEND_SLICE = "digest.send_slice"


@pytest.fixture
def queue_store_url() -> Iterator[str]:
    with postgres_schema() as url:
        yield url


def counting_of(server: CountingServer) -> dict[str, int]:
    return dict(server.counting.times())


async def test_a_worker_killed_mid_slice_loses_nobody_and_repeats_only_its_unrecorded(
    tmp_path: Path, queue_store_url: str
) -> None:
    async with CountingServer() as server:
        counting = server.counting
        with cluster_site(
            tmp_path / "site", queue_store_url, server.port, readers=READERS,
            pool_size=6, send_slots=3, slice_seconds=2,
        ) as site:  # fmt: skip
            config, env, settings, store = site.config, site.env, site.settings, site.store
            await jobs.collect(settings, store, NL, now=NOW)
            async with running_workers(config, env, 3) as workers:
                code, out, err = await digest(config, env, "send", NL, "--week", WEEK)
                assert code == 0, out + err
                assert f"{NL} {WEEK}: queued" in out
                await until(
                    lambda: len(counting.received) >= 3000, timeout=300,
                    what="3000 messages sent", workers=workers,
                )  # fmt: skip
                record = store.get_issue(NL, WEEK)
                assert record is not None and record.status == "sending"

                # `digest status` names the workers sending, by host:pid.
                code, out, err = await digest(config, env, "status", NL, "--week", WEEK)
                assert code == 0, err
                assert "being sent by:" in out
                assert any(f":{p.pid}: " in out for p in workers.processes), out

                # SIGKILL a worker while it holds rows: in the middle of a slice.
                by_pid = {p.pid: p for p in workers.processes}
                victim = None
                while victim is None:
                    holding = [h for h in store.holders(record.id) if h.pid in by_pid]
                    if holding:
                        victim = by_pid[max(holding, key=lambda h: h.rows).pid]
                    else:
                        await asyncio.sleep(0.01)
                running = {r.id for r in job_rows(store, SEND_SLICE) if r.status == "doing"}
                victim.send_signal(signal.SIGKILL)
                await victim.wait()
                killed_at = len(counting.received)

                def finished() -> bool:
                    jobs_now = job_rows(store, SEND_SLICE)
                    return store.delivery_counts(record.id) == {
                        DeliveryState.SENT: READERS
                    } and not any(r.status in ("todo", "doing") for r in jobs_now)

                # The other slots take the killed one's rows over; its job is retried
                # once its worker has been silent for stalled_seconds (10 s), by the
                # retry_stalled task that runs every minute. (The bounds of these waits
                # are for a machine busy with other work; on an idle one the whole test
                # takes about two minutes.)
                await until(
                    finished, timeout=400, every=0.5,
                    what="every reader sent and no slice left", workers=workers,
                )  # fmt: skip
                retried = [r for r in job_rows(store, SEND_SLICE) if r.id in running and r.attempts]
                assert retried, "the killed worker's slice was not retried"
                assert store.count_sending(record.id) == 0
                record = store.get_issue(NL, WEEK)
                assert record is not None and record.status == "sent"

    times = counting.times()
    assert set(times) == {f"leser{n}@example.org" for n in range(READERS)}
    # A reader who got it twice got the same message: its first Message-ID.
    assert all(len(ids) == 1 for ids in counting.ids_of().values())
    repeats = sum(n - 1 for n in times.values())
    # What the killed worker had sent without recording: the outcomes not yet written,
    # plus one message in flight per connection of its slot.
    slot_connections = max(connection_slots(share_of(settings.smtp, k, 3)) for k in range(3))
    assert repeats <= MAX_UNRECORDED + slot_connections, repeats
    print(f"killed after {killed_at} messages; {repeats} repeats of {READERS} readers")


async def test_send_wait_exits_0_once_sent_and_75_while_the_relay_cannot_be_reached(
    tmp_path: Path, queue_store_url: str
) -> None:
    readers = 300
    server = CountingServer()
    await server.start()
    try:
        with cluster_site(
            tmp_path / "site", queue_store_url, server.port, readers=readers,
            pool_size=2, send_slots=2, slice_seconds=2,
        ) as site:  # fmt: skip
            config, env, settings, store = site.config, site.env, site.settings, site.store
            for newsletter in (NL, NL2):
                await jobs.collect(settings, store, newsletter, now=NOW)
            async with running_workers(config, env, 1) as workers:
                code, out, err = await digest(
                    config, env, "send", NL, "--week", WEEK, "--wait", timeout=300
                )
                assert code == 0, out + err + workers.log_tails()
                assert "finished: nothing left to send" in out
                assert counting_of(server) == {f"leser{n}@example.org": 1 for n in range(readers)}

                await server.stop()  # the relay is gone
                code, out, err = await digest(
                    config, env, "send", NL2, "--week", WEEK, "--wait", timeout=300
                )
                assert code == 75, out + err + workers.log_tails()
                assert "refused the connection" in err and "the cluster tries again" in err
                record = store.get_issue(NL2, WEEK)
                assert record is not None
                # Every reader stays due, untouched: no attempt counted against anyone.
                rows = store.deliveries(record.id)
                assert len(rows) == readers
                assert {(r.state, r.attempts) for r in rows} == {(DeliveryState.PENDING, 0)}
    finally:
        await server.stop()


async def test_two_issues_sending_at_once_take_turns_within_the_relays_connections(
    tmp_path: Path, queue_store_url: str
) -> None:
    readers = 1500
    async with CountingServer() as server:
        counting = server.counting
        # Two slots of one connection each; three workers, which without the slots'
        # locks would run three slices (three connections) at once.
        with cluster_site(
            tmp_path / "site", queue_store_url, server.port, readers=readers,
            pool_size=2, send_slots=2, slice_seconds=1,
        ) as site:  # fmt: skip
            config, env, settings, store = site.config, site.env, site.settings, site.store
            for newsletter in (NL, NL2):
                await jobs.collect(settings, store, newsletter, now=NOW)
            async with running_workers(config, env, 3) as workers:
                for newsletter in (NL, NL2):
                    code, out, err = await digest(config, env, "send", newsletter, "--week", WEEK)
                    assert code == 0, out + err

                def both_sent() -> bool:
                    records = [store.get_issue(n, WEEK) for n in (NL, NL2)]
                    return all(r is not None and r.status == "sent" for r in records)

                await until(
                    both_sent, timeout=300, every=0.5, what="both issues sent", workers=workers
                )
    assert len(counting.received) == 2 * readers
    assert counting.peak_open <= 2, counting.peak_open
    # They took turns: each issue went on while the other was being sent.
    order = counting.newsletters()
    first = {n: order.index(n) for n in (NL, NL2)}
    last = {n: len(order) - 1 - order[::-1].index(n) for n in (NL, NL2)}
    assert first[NL] < last[NL2] and first[NL2] < last[NL], (first, last)


async def test_the_scheduled_run_queues_the_send_and_the_retry_pass_sends_what_fell_due(
    tmp_path: Path, queue_store_url: str
) -> None:
    readers, later = 50, "leser7@example.org"
    async with RecordingServer(temp_fail={later: "451 4.7.1 Try again later"}) as server:
        with cluster_site(
            tmp_path / "site", queue_store_url, server.port, readers=readers,
            pool_size=2, send_slots=2, slice_seconds=2,
        ) as site:  # fmt: skip
            settings, store = site.settings, site.store
            config, env, newsletter = site.config, site.env, settings.newsletter(NL)
            # An article of last week, which the run composes now.
            week, start, _end = iso_week_window(None, newsletter.zone, datetime.now(UTC))
            store.upsert_articles(
                NL,
                [Article("uid-1", "Test", "Eine Meldung", "https://example.org/1",
                         start + timedelta(days=2), "politik", summary="Worum es geht.")],
            )  # fmt: skip
            async with running_workers(config, env, 1) as workers:
                with store.engine.begin() as conn:
                    defer(settings, conn, RUN_NEWSLETTER, newsletter=NL, due="2026-01-05T06:00Z")

                def settled() -> bool:
                    record = store.get_issue(NL, week)
                    if record is None or record.status != "sending":
                        return False
                    d = store.delivery_status(record.id, datetime.now(UTC))
                    return (d.sent, d.waiting) == (readers - 1, 1)

                # Everyone but the one the server put off; that one waits for its retry.
                await until(settled, timeout=300, what="the run's send", workers=workers)
                record = store.get_issue(NL, week)
                assert record is not None
                assert store.delivery_counts(record.id) == {
                    DeliveryState.SENT: readers - 1, DeliveryState.PENDING: 1,
                }  # fmt: skip

                # Its retry time has come (made due by hand) and the server takes it now:
                # the retry pass queues the slices that send it.
                server.handler.replies.clear()
                store.requeue_deliveries(record.id)
                with store.engine.begin() as conn:
                    defer(settings, conn, RETRY_PASS)
                await until(
                    lambda: store.get_issue(NL, week).status == "sent",  # type: ignore[union-attr]
                    timeout=300, what="the retry pass's send", workers=workers,
                )  # fmt: skip
    received = [rcpt for _f, rcpts, _d in server.messages for rcpt in rcpts]
    assert sorted(received) == sorted(f"leser{n}@example.org" for n in range(readers))
