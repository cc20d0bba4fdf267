"""Unsubscribe requests by mail: a real Maildir on disk, real messages, the real store.

The messages carry the exact subject of the ``List-Unsubscribe`` mailto that digest puts
in every message. The IMAP adapter is a few lines over imap-tools and is not tested here
against a server (there is none on the test machines); its shared logic is the same.
"""

from __future__ import annotations

import mailbox
from dataclasses import replace
from email import policy
from email.header import Header
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from digest.config import Settings, UnsubscribeMailboxSettings
from digest.errors import ConfigError
from digest.mailbox import (
    MailboxError,
    MailboxReport,
    MaildirMailbox,
    Outcome,
    open_mailbox,
    process_mailbox,
    token_in_subject,
)
from digest.models import Subscriber
from digest.store import Store
from digest.tokens import PREFERENCES, make_token, unsubscribe_mailto

NL = "wochenueberblick"


def mailto_subject(settings: Settings, subscriber_id: int, newsletter: str = NL) -> str:
    """The subject a mail client puts in a message to the List-Unsubscribe mailto."""
    query = urlsplit(unsubscribe_mailto(settings, newsletter, subscriber_id)).query
    (subject,) = parse_qs(query)["subject"]
    return subject


def message(subject: str | Header, sender: str = "leser@example.org") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "news@kommune-digital.example"
    msg.set_content("Bitte abmelden.\n")
    if isinstance(subject, Header):
        # compat32 writes a Header as the RFC 2047 encoded words it makes; the default
        # policy would write the ASCII text of a subject as it is.
        msg.policy = policy.compat32
    msg["Subject"] = subject
    return msg


@pytest.fixture
def maildir(tmp_path: Path) -> Path:
    path = tmp_path / "mail"
    mailbox.Maildir(path, create=True).close()
    return path


def deliver(path: Path, msg: EmailMessage) -> str:
    """Put ``msg`` into new/, unread, as a delivery agent does; its key."""
    box = mailbox.Maildir(path, create=False)
    try:
        return box.add(msg)
    finally:
        box.close()


def files(path: Path, sub: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((path / sub).iterdir())}


def process(settings: Settings, store: Store, path: Path, **kwargs: object) -> MailboxReport:
    with MaildirMailbox(path, str(kwargs.pop("processed", "move"))) as box:
        return process_mailbox(settings, store, box, **kwargs)  # type: ignore[arg-type]


def active(store: Store) -> list[str]:
    return sorted(s.email for s in store.active_subscribers(newsletter=NL))


@pytest.fixture
def people(store: Store) -> dict[str, int]:
    return {
        name: store.save_subscriber(Subscriber(f"{name}@example.org"), ["allgemein"])
        for name in ("anna", "ben", "cem", "dora", "emil")
    }


def test_valid_tokens_unsubscribe_and_the_rest_stays_unread(
    demo_settings: Settings, store: Store, people: dict[str, int], maildir: Path
) -> None:
    s = demo_settings
    plain = deliver(maildir, message(mailto_subject(s, people["anna"])))
    encoded = deliver(maildir, message(Header(f"AW: {mailto_subject(s, people['ben'])}", "utf-8")))
    cem_token = mailto_subject(s, people["cem"]).split()[1]
    reply = deliver(maildir, message(f"Re:  RE: UNSUBSCRIBE   {cem_token} "))
    unknown = deliver(maildir, message(mailto_subject(s, 99_999)))
    real = mailto_subject(s, people["dora"])
    forged = deliver(maildir, message(real[:-3] + ("xyz" if real[-3:] != "xyz" else "abc")))
    preferences = make_token(s.secret_key, PREFERENCES, people["dora"], NL)
    wrong_purpose = deliver(maildir, message(f"unsubscribe {preferences}"))
    no_token = deliver(maildir, message("Frage zum Newsletter", "emil@example.org"))
    left = {forged, wrong_purpose, no_token}
    before = files(maildir, "new")

    report = process(s, store, maildir)

    outcomes = {r.key: r.outcome for r in report.results}
    assert outcomes == {
        plain: Outcome.UNSUBSCRIBED,
        encoded: Outcome.UNSUBSCRIBED,
        reply: Outcome.UNSUBSCRIBED,
        unknown: Outcome.UNKNOWN_SUBSCRIBER,
        forged: Outcome.INVALID_TOKEN,
        wrong_purpose: Outcome.INVALID_TOKEN,
        no_token: Outcome.NO_TOKEN,
    }
    assert active(store) == ["dora@example.org", "emil@example.org"]
    assert store.unsubscribed(people["anna"], NL) and not store.unsubscribed(people["anna"], "x")
    # The others stay byte for byte in new/ (unread); the processed are in cur/, seen.
    assert files(maildir, "new") == {k: v for k, v in before.items() if k in left}
    assert files(maildir, "cur") == {
        f"{k}:2,S": before[k] for k in (plain, encoded, reply, unknown)
    }
    assert report.summary() == (
        "7 unread messages: 4 processed (3 unsubscribed, 0 already unsubscribed, "
        "1 unknown subscriber), 3 left alone"
    )
    no_token_result = next(r for r in report.results if r.key == no_token)
    assert no_token_result.sender == "emil@example.org"
    # No token anywhere in what the report holds.
    shown = repr(report) + report.summary()
    for subscriber_id in people.values():
        token = mailto_subject(s, subscriber_id).split()[1]
        assert token not in shown and token.split(".")[-1] not in shown
    assert preferences not in shown

    # Idempotent: a second run sees only the messages left alone and changes nothing.
    again = process(s, store, maildir)
    assert {r.key for r in again.results} == left and not again.processed
    assert files(maildir, "new") == {k: v for k, v in before.items() if k in left}
    assert len(files(maildir, "cur")) == 4
    assert active(store) == ["dora@example.org", "emil@example.org"]


def test_a_second_request_is_already_unsubscribed_and_still_filed(
    demo_settings: Settings, store: Store, people: dict[str, int], maildir: Path
) -> None:
    store.unsubscribe(people["anna"], NL)
    key = deliver(maildir, message(mailto_subject(demo_settings, people["anna"])))
    report = process(demo_settings, store, maildir)
    assert [r.outcome for r in report.results] == [Outcome.ALREADY_UNSUBSCRIBED]
    assert list(files(maildir, "cur")) == [f"{key}:2,S"] and not files(maildir, "new")


def test_dry_run_changes_neither_store_nor_mailbox(
    demo_settings: Settings, store: Store, people: dict[str, int], maildir: Path
) -> None:
    deliver(maildir, message(mailto_subject(demo_settings, people["anna"])))
    deliver(maildir, message("hallo"))
    before = files(maildir, "new")
    report = process(demo_settings, store, maildir, dry_run=True)
    assert [r.outcome for r in report.results] == [Outcome.UNSUBSCRIBED, Outcome.NO_TOKEN]
    assert report.summary().startswith("2 unread messages: 1 would be processed (1 would be")
    assert files(maildir, "new") == before and not files(maildir, "cur")
    assert len(active(store)) == 5


def test_delete_removes_processed_messages_only(
    demo_settings: Settings, store: Store, people: dict[str, int], maildir: Path
) -> None:
    deliver(maildir, message(mailto_subject(demo_settings, people["anna"])))
    kept = deliver(maildir, message("hallo"))
    process(demo_settings, store, maildir, processed="delete")
    assert list(files(maildir, "new")) == [kept] and not files(maildir, "cur")
    assert "anna@example.org" not in active(store)


def test_messages_already_read_are_not_touched(
    demo_settings: Settings, store: Store, people: dict[str, int], maildir: Path
) -> None:
    key = deliver(maildir, message(mailto_subject(demo_settings, people["anna"])))
    (maildir / "new" / key).rename(maildir / "cur" / f"{key}:2,S")
    report = process(demo_settings, store, maildir)
    assert report.results == [] and len(active(store)) == 5


@pytest.mark.parametrize(
    "subject",
    [
        "unsubscribe TOKEN",
        "Unsubscribe TOKEN",
        "UNSUBSCRIBE   TOKEN ",
        "Re: unsubscribe TOKEN",
        "AW: AW:unsubscribe TOKEN",
        "Fwd: re: WG: unsubscribe\tTOKEN",
        "RE[2]: unsubscribe TOKEN",
    ],
)
def test_token_is_found_behind_reply_prefixes(subject: str) -> None:
    assert token_in_subject(subject.replace("TOKEN", "WzEsIngiXQ.abc-_")) == "WzEsIngiXQ.abc-_"


@pytest.mark.parametrize(
    "subject",
    ["", "unsubscribe", "bitte unsubscribe TOKEN", "unsubscribe TOKEN danke", "unsubscribe T/K"],
)
def test_anything_else_has_no_token(subject: str) -> None:
    assert token_in_subject(subject) is None


def test_a_missing_maildir_is_one_clear_error(demo_settings: Settings, tmp_path: Path) -> None:
    settings = replace(
        demo_settings, unsubscribe_mailbox=UnsubscribeMailboxSettings(maildir=str(tmp_path / "x"))
    )
    with pytest.raises(MailboxError, match=r"maildir '.*x': no such Maildir"):
        open_mailbox(settings)
    with pytest.raises(ConfigError, match="unsubscribe_mailbox: not configured"):
        open_mailbox(demo_settings)


async def test_the_scheduled_job_processes_the_configured_maildir(
    demo_settings: Settings, tmp_path: Path, maildir: Path
) -> None:
    from digest import jobs
    from tests.conftest import ROOT

    config = tmp_path / "config.toml"
    text = (ROOT / "config.toml").read_text(encoding="utf-8")
    config.write_text(f'{text}\n[unsubscribe_mailbox]\nmaildir = "mail"\n', encoding="utf-8")
    store = Store.open(f"sqlite:///{tmp_path / 'digest.db'}")  # the config's store
    try:
        sid = store.save_subscriber(Subscriber("anna@example.org"), ["allgemein"])
        key = deliver(maildir, message(mailto_subject(demo_settings, sid)))
        await jobs.process_unsubscribe_mailbox(str(config))
        assert store.unsubscribed(sid, NL)
        assert list(files(maildir, "cur")) == [f"{key}:2,S"]
    finally:
        store.close()
