"""The scheduled run of a newsletter with review = "required": ask once, never send unapproved."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from digest.config import load_settings
from digest.core.models import Article, Subscriber
from digest.issue.compose import iso_week_window
from digest.issue.editors import add_editor
from digest.ops import jobs
from tests.smtp_server import RecordingServer

ROOT = Path(__file__).resolve().parents[2]
NL = "wochenueberblick"


@pytest.fixture
def reviewed_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The shipped config with review = "required" and approved_send = "next_run"."""
    for var in ("DIGEST_STORE_URL", "DIGEST_SMTP_HOST", "DIGEST_SMTP_PORT", "DIGEST_SECRET_KEY"):
        monkeypatch.delenv(var, raising=False)
    text = (ROOT / "config.toml").read_text()
    text = text.replace(
        'id = "wochenueberblick"\n',
        'id = "wochenueberblick"\nreview = "required"\napproved_send = "next_run"\n',
    )
    (tmp_path / "config.toml").write_text(text)
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    monkeypatch.setenv("DIGEST_STORE_URL", f"sqlite:///{tmp_path / 'digest.db'}")
    return tmp_path / "config.toml"


async def test_the_run_asks_the_editors_once_and_sends_only_what_was_approved(
    reviewed_site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with RecordingServer() as smtp:
        monkeypatch.setenv("DIGEST_SMTP_PORT", str(smtp.port))
        settings = load_settings(reviewed_site)
        newsletter = settings.newsletter(NL)
        store = jobs.open_store(settings)
        try:
            add_editor(store, "erika", "erika@example.org", "correct horse battery")
            store.save_subscriber(Subscriber("leser@example.org", "Lea"), ["allgemein"])
            # An article in the week before this one, which the run composes now.
            week, start, _end = iso_week_window(None, newsletter.zone, datetime.now(UTC))
            published = start + timedelta(days=2)
            store.upsert_articles(
                NL,
                [Article("uid-1", "Test", "Eine Meldung", "https://example.org/1", published,
                         "politik", summary="Worum es geht.")],
            )  # fmt: skip
        finally:
            store.close()

        await jobs.run_newsletter(str(reviewed_site), NL)
        await jobs.run_newsletter(str(reviewed_site), NL)
        # The editors were asked once; no reader got anything.
        assert [rcpt for _f, rcpt, _d in smtp.messages] == [["erika@example.org"]]
        assert f"/admin/{NL}/{week}".encode() in smtp.messages[0][2]

        store = jobs.open_store(settings)
        try:
            record = store.get_issue(NL, week)
            assert record is not None and record.status == "composed"
            key, first, report = await jobs.approve(settings, store, newsletter, week, "erika")
            assert (key, first, report) == (week, True, None)  # next_run: nothing sent yet
        finally:
            store.close()
        assert len(smtp.messages) == 1

        await jobs.run_newsletter(str(reviewed_site), NL)
        assert [rcpt for _f, rcpt, _d in smtp.messages][1:] == [["leser@example.org"]]
        store = jobs.open_store(settings)
        try:
            record = store.get_issue(NL, week)
            assert record is not None and record.status == "sent"
        finally:
            store.close()
