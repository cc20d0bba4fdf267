"""Unsubscribe requests by mail: a real Maildir on disk, real messages, the real store.

The messages carry the exact subject of the ``List-Unsubscribe`` mailto that digest puts
in every message. The IMAP adapter is tested against a real Dovecot (tests/imap_server.py),
skipped where Debian's dovecot-imapd is not installed.
"""

from __future__ import annotations

import mailbox
import ssl
from collections.abc import Iterator
from dataclasses import replace
from email import policy
from email.header import Header
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from digest.audience.tokens import PREFERENCES, make_token, unsubscribe_mailto
from digest.config import Settings, UnsubscribeMailboxSettings
from digest.core.errors import ConfigError
from digest.core.models import Subscriber
from digest.mailboxes.mailbox import (
    MailboxError,
    MailboxReport,
    MaildirMailbox,
    Outcome,
    open_mailbox,
    process_mailbox,
    token_in_subject,
)
from digest.store import Store
from tests.imap_server import DovecotServer, dovecot_missing

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


def test_a_subject_folded_inside_the_token_is_unfolded(
    demo_settings: Settings, store: Store, people: dict[str, int], maildir: Path
) -> None:
    """As mail clients write a long subject: encoded words on folded lines."""
    msg = message(Header(f"AW: {mailto_subject(demo_settings, people['anna'])}", "utf-8"))
    raw = msg.as_bytes()  # folded at 78 characters, unlike deliver()'s writer
    assert b"?=\n =?utf-8?" in raw
    box = mailbox.Maildir(maildir, create=False)
    try:
        key = box.add(raw)
    finally:
        box.close()
    report = process(demo_settings, store, maildir)
    assert [(r.key, r.outcome) for r in report.results] == [(key, Outcome.UNSUBSCRIBED)]
    assert "anna@example.org" not in active(store)


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
    from digest.ops import jobs
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


# --- IMAP: a real Dovecot ------------------------------------------------------------------


@pytest.fixture
def imap(monkeypatch: pytest.MonkeyPatch) -> Iterator[DovecotServer]:
    """A running Dovecot whose certificate the code under test trusts (SSL_CERT_FILE)."""
    if reason := dovecot_missing():
        pytest.skip(reason)
    with DovecotServer() as server:
        monkeypatch.setenv("SSL_CERT_FILE", str(server.cert))
        yield server


def with_imap(settings: Settings, server: DovecotServer, **values: Any) -> Settings:
    mailbox_settings = UnsubscribeMailboxSettings(
        imap_host=server.host,
        imap_port=server.port,
        imap_username=server.user,
        imap_password=server.password,
        **values,
    )
    return replace(settings, unsubscribe_mailbox=mailbox_settings)


def _client(server: DovecotServer) -> Any:
    from imap_tools import MailBox

    box = MailBox(server.host, server.port, ssl_context=ssl.create_default_context())
    return box.login(server.user, server.password)


def imap_deliver(server: DovecotServer, *messages: EmailMessage) -> None:
    """Put the messages into INBOX, unread, as the mail server's delivery does."""
    with _client(server) as box:
        for msg in messages:
            box.append(msg.as_bytes(), "INBOX", flag_set=[])


def imap_folders(server: DovecotServer) -> dict[str, list[tuple[str, bool]]]:
    """Each folder's messages as (subject unfolded, seen), read without marking them seen."""
    from imap_tools import MailMessageFlags

    folders: dict[str, list[tuple[str, bool]]] = {}
    with _client(server) as box:
        for folder in box.folder.list():
            box.folder.set(folder.name)
            folders[folder.name] = sorted(
                (" ".join(m.subject.split()), MailMessageFlags.SEEN in m.flags)
                for m in box.fetch(headers_only=True, mark_seen=False)
            )
    return folders


@pytest.mark.parametrize("processed", ["move", "seen", "delete"])
def test_imap_mailbox_applies_tokens_and_leaves_the_rest_unread(
    demo_settings: Settings,
    store: Store,
    people: dict[str, int],
    imap: DovecotServer,
    processed: str,
) -> None:
    settings = with_imap(demo_settings, imap, processed=processed)
    anna = mailto_subject(settings, people["anna"])
    ben = Header(f"AW: {mailto_subject(settings, people['ben'])}", "utf-8")
    real = mailto_subject(settings, people["cem"])
    forged = real[:-3] + ("xyz" if real[-3:] != "xyz" else "abc")
    imap_deliver(
        imap,
        message(anna),
        message(ben),
        message(forged),
        message("Frage zum Newsletter", "emil@example.org"),
    )

    with open_mailbox(settings) as box:
        report = process_mailbox(settings, store, box)

    outcomes = sorted(r.outcome.value for r in report.results)
    assert outcomes == sorted(
        o.value
        for o in (
            Outcome.UNSUBSCRIBED,
            Outcome.UNSUBSCRIBED,
            Outcome.INVALID_TOKEN,
            Outcome.NO_TOKEN,
        )
    )
    assert active(store) == ["cem@example.org", "dora@example.org", "emil@example.org"]
    left = [(forged, False), ("Frage zum Newsletter", False)]
    done = sorted([(anna, True), (str(ben), True)])
    folders = imap_folders(imap)
    if processed == "move":
        assert folders == {"INBOX": sorted(left), "digest-processed": done}
    elif processed == "seen":
        assert folders == {"INBOX": sorted(left + done)}
    else:
        assert folders == {"INBOX": sorted(left)}

    with open_mailbox(settings) as box:  # again: the rest is still unread, and stays
        again = process_mailbox(settings, store, box)
    assert not again.processed and len(again.left_alone) == 2
    assert imap_folders(imap) == folders


def test_imap_certificate_and_login_are_checked(
    demo_settings: Settings, imap: DovecotServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = with_imap(demo_settings, imap)
    wrong = replace(
        settings,
        unsubscribe_mailbox=replace(
            settings.unsubscribe_mailbox, imap_password="falsch-geraten-123"
        ),
    )
    where = f"unsubscribe mailbox IMAP abmelden@127.0.0.1:{imap.port}"
    with pytest.raises(MailboxError) as refused:
        open_mailbox(wrong)
    assert str(refused.value).startswith(f"{where}: login refused: ")
    assert "AUTHENTICATIONFAILED" in str(refused.value)
    assert "falsch-geraten-123" not in str(refused.value)

    monkeypatch.setenv("SSL_CERT_FILE", str(Path(__file__)))  # trusts no certificate
    with pytest.raises(MailboxError) as untrusted:
        open_mailbox(settings)
    assert str(untrusted.value).startswith(f"{where}: cannot connect: ")
    assert "CERTIFICATE_VERIFY_FAILED" in str(untrusted.value)


async def test_digest_unsubscribes_process_reads_the_imap_folder(
    demo_settings: Settings, tmp_path: Path, imap: DovecotServer
) -> None:
    """The command an operator runs, as a process, against the configured IMAP folder."""
    import asyncio
    import os
    import sys

    from tests.conftest import ROOT

    config = tmp_path / "config.toml"
    config.write_text(
        (ROOT / "config.toml").read_text(encoding="utf-8")
        + f'\n[unsubscribe_mailbox]\nimap_host = "{imap.host}"\nimap_port = {imap.port}\n'
        f'imap_username = "{imap.user}"\n',
        encoding="utf-8",
    )
    store = Store.open(f"sqlite:///{tmp_path / 'digest.db'}")  # the config's store
    try:
        sid = store.save_subscriber(Subscriber("anna@example.org"), ["allgemein"])
        imap_deliver(imap, message(mailto_subject(demo_settings, sid)))
        env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
        env["DIGEST_UNSUBSCRIBE_MAILBOX_IMAP_PASSWORD"] = imap.password
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "digest.cli", "unsubscribes", "process",
            cwd=tmp_path, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), timeout=60)
        assert process.returncode == 0, err.decode()
        assert f"processed: unsubscribed, subscriber {sid} of {NL}" in out.decode()
        assert store.unsubscribed(sid, NL)
        assert imap.password not in out.decode() + err.decode()
    finally:
        store.close()
    assert imap_folders(imap) == {
        "INBOX": [],
        "digest-processed": [(mailto_subject(demo_settings, sid), True)],
    }
