"""DKIM signatures and the prepared message bytes, as a real SMTP server receives them.

Each message the send path hands to aiosmtpd is verified with dkimpy against the public
key that `digest dkim keygen` wrote (RSA and Ed25519), and read back against the message
`build_message` makes for the same recipient from scratch.
"""

from __future__ import annotations

import binascii
import email
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from pathlib import Path

import dkim
import pytest
from click.testing import CliRunner
from hypothesis import example, given
from hypothesis import strategies as st

from digest.audience.segments import recipients_for, segment_lists
from digest.cli import cli
from digest.config import DkimSettings, NewsletterSettings, Settings, StoreSettings
from digest.delivery.transport import SmtpPool, _content
from digest.issue.prepare import prepare_issue
from digest.message.personalize import Personalizer
from digest.message.prepared import _qp, _stuffed
from digest.ops import jobs
from digest.ops.demo import import_demo_lists
from digest.store import Store
from tests.smtp_server import RecordingServer

WEEK = "2025-W05"
NOW = datetime(2025, 2, 3, 6, 0, tzinfo=UTC)


@dataclass
class World:
    settings: Settings
    store: Store
    newsletter: NewsletterSettings

    async def send(self, settings: Settings) -> list[bytes]:
        async with RecordingServer() as server:
            pool = SmtpPool(server.settings())
            try:
                report = await jobs.send(
                    replace(settings, smtp=server.settings()),
                    self.store,
                    self.newsletter,
                    WEEK,
                    pool,
                    now=NOW,
                )
            finally:
                await pool.close()
        assert report is not None and report.sent == 14 and not report.stopped
        return [data for _, _, data in server.messages]


@pytest.fixture
async def world(demo_settings: Settings, tmp_path: Path) -> AsyncIterator[World]:
    settings = replace(demo_settings, store=StoreSettings(f"sqlite:///{tmp_path}/dkim.db"))
    store = jobs.open_store(settings)
    newsletter = settings.newsletters[0]
    import_demo_lists(settings, store, newsletter)
    await jobs.collect(settings, store, newsletter.id, now=NOW)
    yield World(settings, store, newsletter)
    store.close()


def keygen(tmp_path: Path, algorithm: str, domain: str) -> tuple[Path, bytes]:
    """A key pair written by `digest dkim keygen`, and the TXT record it printed."""
    key_file = tmp_path / f"{algorithm}.key"
    result = CliRunner().invoke(
        cli,
        ["dkim", "keygen", "--selector", "s2025", "--domain", domain, "--algorithm", algorithm,
         "--key-file", str(key_file)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if "._domainkey." in x)
    assert line.startswith(f"s2025._domainkey.{domain}. IN TXT")
    record = "".join(re.findall(r'"([^"]*)"', line))
    assert key_file.stat().st_mode & 0o077 == 0  # the private key is the owner's alone
    return key_file, record.encode()


def _parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=policy.strict)
    assert isinstance(message, EmailMessage)
    return message


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
async def test_every_message_is_signed_and_verifies(
    world: World, tmp_path: Path, algorithm: str
) -> None:
    domain = world.newsletter.sender_domain
    key_file, record = keygen(tmp_path, algorithm, domain)
    looked_up: list[bytes] = []

    def dns(name: bytes, timeout: int = 5) -> bytes | None:
        looked_up.append(name)
        return record if name.rstrip(b".") == f"s2025._domainkey.{domain}".encode() else None

    settings = replace(world.settings, dkim=DkimSettings(str(key_file), "s2025", ""))
    received = await world.send(settings)
    for data in received:
        assert dkim.verify(data, dnsfunc=dns), data[:600]
        signature = _parse(data)["DKIM-Signature"]
        tags = dict(
            (k.strip(), v.strip())
            for k, _, v in (t.partition("=") for t in re.sub(r"\s+", "", str(signature)).split(";"))
            if k.strip()
        )
        assert tags["a"] == ("ed25519-sha256" if algorithm == "ed25519" else "rsa-sha256")
        assert (tags["c"], tags["d"], tags["s"]) == ("relaxed/relaxed", domain, "s2025")
        names = tags["h"].split(":")
        assert names.count("from") == 2 and names.count("list-unsubscribe") == 2
        assert names.count("list-unsubscribe-post") == 2
        assert {"to", "subject", "date", "message-id", "list-id"} <= set(names)
        for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
            # folded at 78; only a word that cannot be broken (a Message-ID) is longer
            assert len(line) <= 78 or b" " not in line.partition(b": ")[2].strip()
    assert looked_up
    # What the signature protects: a changed subject, a second From, a changed link.
    sample = received[0]
    changed = re.sub(rb"(?m)^Subject: ", b"Subject: Re: ", sample, count=1)
    assert not dkim.verify(changed, dnsfunc=dns)
    second_from = sample.replace(b"\r\nTo: ", b"\r\nFrom: <evil@example.net>\r\nTo: ", 1)
    assert not dkim.verify(second_from, dnsfunc=dns)
    other_body = sample.replace(b"unsubscribe", b"unsubscribX", 1)
    assert other_body != sample and not dkim.verify(other_body, dnsfunc=dns)


def _header_block_changed(data: bytes, pattern: bytes, replacement: bytes) -> bytes:
    head, _, body = data.partition(b"\r\n\r\n")
    changed, count = re.subn(pattern, replacement, head, count=1)
    assert count == 1, pattern
    return changed + b"\r\n\r\n" + body


async def test_what_a_reader_sees_or_a_client_acts_on_is_signed(
    world: World, tmp_path: Path
) -> None:
    domain = world.newsletter.sender_domain
    key_file, record = keygen(tmp_path, "rsa", domain)

    def dns(name: bytes, timeout: int = 5) -> bytes | None:
        return record

    settings = replace(world.settings, dkim=DkimSettings(str(key_file), "s2025", ""))
    sample = (await world.send(settings))[0]
    assert dkim.verify(sample, dnsfunc=dns)
    assert _parse(sample)["Reply-To"] is not None  # the demo newsletter has one
    evil = b"<evil@example.net>"
    changes = {
        "another Reply-To": (rb"(?m)^Reply-To: .*$", b"Reply-To: " + evil),
        "a second Reply-To": (rb"(?m)^To: ", b"Reply-To: " + evil + b"\r\nTo: "),
        "another top-level Content-Type": (
            rb"(?m)^Content-Type: multipart/alternative;",
            b"Content-Type: multipart/mixed;",
        ),
        "a second Content-Type": (rb"(?m)^To: ", b"Content-Type: text/plain\r\nTo: "),
        "another MIME-Version": (rb"(?m)^MIME-Version: 1\.0", b"MIME-Version: 1.1"),
        "a Sender": (rb"(?m)^To: ", b"Sender: " + evil + b"\r\nTo: "),
        "a List-Post": (rb"(?m)^To: ", b"List-Post: <mailto:" + evil[1:-1] + b">\r\nTo: "),
        "an In-Reply-To": (rb"(?m)^To: ", b"In-Reply-To: <x@example.net>\r\nTo: "),
        "a second List-Id": (rb"(?m)^To: ", b"List-Id: <other.example.net>\r\nTo: "),
    }
    for what, (pattern, replacement) in changes.items():
        changed = _header_block_changed(sample, pattern, replacement)
        assert not dkim.verify(changed, dnsfunc=dns), f"{what} still verifies"
    # A header nobody reads may still be added on the way (a relay's Received).
    received = b"Received: from relay by mx; Mon, 3 Feb 2025 07:00:01 +0100\r\n" + sample
    assert dkim.verify(received, dnsfunc=dns)


async def test_a_key_that_is_no_key_names_the_setting(world: World, tmp_path: Path) -> None:
    from digest.core.errors import ConfigError

    bad = tmp_path / "bad.key"
    bad.write_text("not a key")
    settings = replace(world.settings, dkim=DkimSettings(str(bad), "s", ""))
    with pytest.raises(ConfigError, match=r"dkim\.key_file"):
        await world.send(settings)


async def test_prepared_messages_read_as_the_ones_built_from_scratch(world: World) -> None:
    received = await world.send(world.settings)
    prepared = prepare_issue(world.store, world.newsletter, WEEK, NOW, save=False)
    assert prepared is not None
    personalizer = Personalizer(
        world.settings, world.newsletter, prepared.issue, NOW, count_clicks=True
    )
    by_address = {
        r.subscriber.email: r
        for r in recipients_for(
            world.newsletter, world.store.active_subscribers(segment_lists(world.newsletter))
        )
    }
    for data in received:
        fast = _parse(data)
        assert fast.defects == [] and data.isascii()
        recipient = by_address[fast["To"].addresses[0].addr_spec]
        variant = personalizer.variant_for(recipient)
        assert variant is not None
        slow = _parse(personalizer.message_for(recipient, variant, fast["Message-ID"]).data)
        skip = {"content-type"}
        assert [(k, str(v)) for k, v in fast.items() if k.lower() not in skip] == [
            (k, str(v)) for k, v in slow.items() if k.lower() not in skip
        ]
        for kind in ("plain", "html"):
            fast_part, slow_part = fast.get_body((kind,)), slow.get_body((kind,))
            assert fast_part is not None and slow_part is not None
            assert fast_part.get_content() == slow_part.get_content()
        for line in data.split(b"\r\n\r\n", 1)[1].split(b"\r\n"):
            assert len(line) <= 76


@given(st.lists(st.text(max_size=200), min_size=1, max_size=6))
@example(["https://example.org/x", "\nAbmelden: "])  # a piece that starts a line
def test_pieces_encoded_apart_decode_as_the_whole(pieces: list[str]) -> None:
    encoded = b"".join(_qp(p) for p in pieces)
    whole = "".join(pieces).replace("\r\n", "\n").replace("\r", "\n")
    decoded = binascii.a2b_qp(encoded.replace(b"\r\n", b"\n")).decode("utf-8")
    assert decoded == whole
    assert all(len(line) <= 76 for line in encoded.split(b"\r\n"))


async def test_a_test_send_is_signed_as_readers_messages_are(world: World, tmp_path: Path) -> None:
    """The editors' test send goes out from the same prepared, signed bytes as the send."""
    domain = world.newsletter.sender_domain
    key_file, record = keygen(tmp_path, "ed25519", domain)
    settings = replace(world.settings, dkim=DkimSettings(str(key_file), "s2025", ""))
    async with RecordingServer() as server:
        pool = SmtpPool(server.settings())
        try:
            results = await jobs.test_send(
                settings, world.store, world.newsletter, WEEK, ["probe@example.org"], pool,
                segment="bayern", now=NOW,
            )  # fmt: skip
        finally:
            await pool.close()
    assert [r.code for r in results] == [250]
    [(mail_from, rcpt, data)] = server.messages
    assert rcpt == ["probe@example.org"] and mail_from.endswith(f"@{domain}")
    assert dkim.verify(data, dnsfunc=lambda name, timeout=5: record)
    assert str(_parse(data)["Subject"]).startswith(jobs.TEST_PREFIX)
    assert world.store.get_issue(world.newsletter.id, WEEK) is None  # nothing recorded


_LINES = st.lists(
    st.text(alphabet=st.sampled_from(".ab= \t\u00e4"), max_size=90), min_size=1, max_size=8
)


@given(_LINES)
@example([".", "..", "a.b", ".a"])
def test_a_piece_is_stuffed_as_the_transport_stuffs_a_whole_message(lines: list[str]) -> None:
    piece = "".join(f"{line}\r\n" for line in lines).encode("utf-8")
    assert _stuffed(piece) + b".\r\n" == _content(piece)


async def test_the_prepared_wire_bytes_are_what_the_transport_would_make(world: World) -> None:
    """Personal fields with dots and line breaks where stuffing matters: the bytes the
    prepared message hands the transport equal the transport's own stuffing of it."""
    prepared = prepare_issue(world.store, world.newsletter, WEEK, NOW, save=False)
    assert prepared is not None
    personalizer = Personalizer(world.settings, world.newsletter, prepared.issue, NOW)
    recipient = recipients_for(
        world.newsletter, world.store.active_subscribers(segment_lists(world.newsletter))
    )[0]
    variant = personalizer.variant_for(recipient)
    assert variant is not None
    for name in [".Punkt", "a\n.b", "x" * 75 + ".", "\r.\r\n..", "Ä" * 40 + "\n.", ""]:
        reader = replace(recipient, subscriber=replace(recipient.subscriber, name=name))
        message = personalizer.fast_message_for(
            reader, variant, "<m@example.org>", envelope_from="news@example.org", signer=None
        )
        assert message.wire is not None
        assert message.wire + b".\r\n" == _content(message.data)
