"""Planning an issue's whole ledger without sending (a cluster's plan job), interrupted."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from digest.config import Settings, StoreSettings
from digest.core.models import DeliveryState
from digest.delivery.deliver import plan_issue, send_issue
from digest.delivery.planning import PLAN_CHUNK
from digest.delivery.transport import SmtpPool
from digest.issue.prepare import prepare_issue
from digest.ops import jobs
from tests.cluster._support import seed_readers
from tests.delivery.test_send import NOW, WEEK
from tests.smtp_server import RecordingServer

READERS = 2 * PLAN_CHUNK + PLAN_CHUNK // 2


class Interrupted(Exception):
    """The plan's process stopped between two chunks."""


async def test_a_plan_interrupted_and_run_again_plans_every_reader_once(
    demo_settings: Settings, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = replace(demo_settings, store=StoreSettings(store_url))
    store = jobs.open_store(settings)
    try:
        newsletter = settings.newsletters[0]
        seed_readers(store, READERS)
        await jobs.collect(settings, store, newsletter.id, now=NOW)
        prepared = prepare_issue(store, newsletter, WEEK, NOW)
        assert prepared is not None and prepared.record is not None
        record, issue = prepared.record, prepared.issue

        # Stopped before its third chunk: two chunks planned, the issue still 'composed'.
        plan_rows = store.plan_rows
        chunks = 0

        def stopping(*args: Any, **kwargs: Any) -> int:
            nonlocal chunks
            chunks += 1
            if chunks == 3:
                raise Interrupted
            return plan_rows(*args, **kwargs)

        monkeypatch.setattr(store, "plan_rows", stopping)
        marked: list[bool] = []
        with pytest.raises(Interrupted):
            plan_issue(settings, store, newsletter, record, issue, now=NOW,
                       mark_planned=lambda: marked.append(True))  # fmt: skip
        monkeypatch.undo()
        assert marked == []
        assert store.delivery_counts(record.id) == {DeliveryState.PENDING: 2 * PLAN_CHUNK}
        assert store.get_issue(newsletter.id, WEEK).status == "composed"  # type: ignore[union-attr]

        # Run again: the rows there are left alone, the missing ones added, once each.
        report = plan_issue(settings, store, newsletter, record, issue, now=NOW)
        assert (report.recipients, report.planned) == (READERS, READERS - 2 * PLAN_CHUNK)
        rows = store.deliveries(record.id)
        assert len(rows) == len({r.subscriber_id for r in rows}) == READERS
        planned = store.get_issue(newsletter.id, WEEK)
        assert planned is not None and planned.status == "sending"

        # Planned already: a third run plans nothing and does not mark it again.
        again = plan_issue(settings, store, newsletter, planned, issue, now=NOW,
                           mark_planned=lambda: marked.append(True))  # fmt: skip
        assert (again.planned, marked) == (0, [])

        async with RecordingServer() as server:
            pool = SmtpPool(server.settings())
            try:
                sent = await send_issue(settings, store, newsletter, planned, issue, pool, now=NOW)
            finally:
                await pool.close()
        received = [rcpt for _f, rcpts, _d in server.messages for rcpt in rcpts]
        assert sent.sent == len(received) == len(set(received)) == READERS
        assert store.get_issue(newsletter.id, WEEK).status == "sent"  # type: ignore[union-attr]
    finally:
        store.close()
