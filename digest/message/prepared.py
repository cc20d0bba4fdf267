"""The wire bytes of a variant prepared once, for many recipients.

:func:`digest.message.mail.build_message` builds one message from scratch; sending thousands of
messages of one variant that way folds the same headers and quoted-printable-encodes the
same 60 KB of HTML again for each. Here a variant is encoded once: its headers are
folded, its two parts encoded in quoted-printable with a soft line break before and
after each personal field (greeting, name, address, links), so a recipient's message is
the prepared bytes with that recipient's fields, each encoded on its own, spliced in.
Per recipient only To, Message-ID and List-Unsubscribe are written.

The result decodes to the same headers and the same text as ``build_message`` gives
(tests/test_prepared.py compares them); only where the quoted-printable lines break
differs. With a DKIM signer every message is signed over these exact bytes: the parts
of the body every recipient shares are canonicalised once, and the hash of the body up to
the first personal field is computed once.
"""

from __future__ import annotations

import binascii
import hashlib
import re
from collections.abc import Mapping
from datetime import datetime
from email.utils import format_datetime

from markupsafe import escape

from digest.config import NewsletterSettings, Settings
from digest.core.models import Message, Variant
from digest.issue.compose import MAX_SUBJECT_LENGTH
from digest.message.dkim import DkimSigner, relaxed_body, relaxed_header, split_headers
from digest.message.mail import (
    _DOT_ATOM,
    _MAX_ISSUE_KEY_LENGTH,
    MAX_HEADER_LINE,
    MAX_NAME_LENGTH,
    MessageError,
    _address,
    _address_header,
    _fold,
    _header_text,
    _message_id,
    _one_line,
    _shared_headers,
    _url_list,
)
from digest.message.render import greeting_for

__all__ = ["PreparedVariant"]

# A display name the email package writes as it is: atoms separated by single spaces.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+/?^_`{|}~-]+(?: [A-Za-z0-9!#$%&'*+/?^_`{|}~-]+)*")
_ASCII_DOMAIN = re.compile(r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_QP_LINE = 76
_SOFT_BREAK = b"=\r\n"


def _stuffed(piece: bytes) -> bytes:
    """A piece that starts and ends a line, as it goes after DATA: "." doubled at the
    start of each line (RFC 5321 4.5.2)."""
    if piece.startswith(b"."):
        piece = b"." + piece
    return b"\n..".join(piece.split(b"\n.")) if b"\n." in piece else piece


def _crlf_only(piece: bytes) -> bool:
    """Every line end is CRLF: no bare CR, no bare LF."""
    lf = piece.count(b"\n")
    return lf == piece.count(b"\r") == piece.count(b"\r\n")


def _qp(text: str) -> bytes:
    """``text`` in quoted-printable with CRLF line ends, ending in a line break.

    A piece that ends mid-line gets a soft line break, so the next piece starts a line
    of its own and each piece can be encoded (and canonicalised for DKIM) on its own.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    encoded = binascii.b2a_qp(text.encode("utf-8"), istext=True).replace(b"\n", b"\r\n")
    if not encoded or encoded.endswith(b"\r\n"):
        return encoded
    head, newline, last = encoded.rpartition(b"\r\n")
    if len(last) >= _QP_LINE:  # no room for the "=": break the line earlier
        cut = _QP_LINE - 1
        while b"=" in last[cut - 2 : cut]:  # never inside an =XX escape
            cut -= 1
        last = last[:cut] + _SOFT_BREAK + last[cut:]
    return head + newline + last + _SOFT_BREAK


class PreparedVariant:
    """One variant's message, ready to be completed for each of its recipients."""

    def __init__(
        self,
        settings: Settings,
        newsletter: NewsletterSettings,
        variant: Variant,
        *,
        now: datetime,
        issue_key: str,
        signer: DkimSigner | None = None,
    ) -> None:
        if now.tzinfo is None or now.utcoffset() is None:
            raise MessageError("Date: the clock must be timezone-aware")
        self.settings = settings
        self.locale = variant.issue.locale or newsletter.locale
        self.signer = signer
        self.timestamp = int(now.timestamp())
        before_to, before_id, before_unsubscribe, before_type, sender = _shared_headers(
            newsletter.sender,
            newsletter.reply_to,
            newsletter.name,
            newsletter.effective_list_id,
            _header_text(variant.issue.subject, MAX_SUBJECT_LENGTH),
            format_datetime(now),
            _header_text(issue_key, _MAX_ISSUE_KEY_LENGTH),
            True,
        )
        self.sender = sender
        self.domain = sender.rpartition("@")[2]
        seed = f"{variant.content_key}.{variant.marker}.{issue_key}".encode()
        boundary = "=_digest_" + hashlib.sha256(seed).hexdigest()[:32]
        self._before_to = before_to
        self._before_id = before_id
        self._before_unsubscribe = before_unsubscribe
        content_type = _fold("Content-Type", f'multipart/alternative; boundary="{boundary}"')
        self._after_unsubscribe = before_type + content_type
        self._canonical: dict[bytes, bytes] = {}
        for block in (before_to, before_id, before_unsubscribe, before_type, content_type):
            for name, field in split_headers(block):
                self._canonical[name] = relaxed_header(field)
        # The body: constant bytes and ("html"|"text", field) slots, alternating.
        pieces: list[bytes | tuple[bool, str]] = []
        for content, subtype in ((variant.text, "plain"), (variant.html, "html")):
            pieces.append(
                (
                    f"--{boundary}\r\n"
                    f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
                    "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
                ).encode("ascii")
            )
            content = content.replace("\r\n", "\n").replace("\r", "\n")
            if not content.endswith("\n"):
                content += "\n"
            parts = re.split(rf"%%DIGEST-{re.escape(variant.marker)}:([a-z_]+)%%", content)
            for i, part in enumerate(parts):
                if i % 2:
                    pieces.append((subtype == "html", part))
                else:
                    pieces.append(_qp(part))
            pieces.append(b"\r\n")
        pieces.append(f"--{boundary}--\r\n".encode("ascii"))
        merged: list[bytes | tuple[bool, str]] = []
        for piece in pieces:
            if isinstance(piece, bytes) and merged and isinstance(merged[-1], bytes):
                merged[-1] += piece
            else:
                merged.append(piece)
        self._pieces = merged
        self._canonical_pieces = [relaxed_body(p) if isinstance(p, bytes) else None for p in merged]
        first = merged[0]
        assert isinstance(first, bytes)
        self._body_hash_start = hashlib.sha256(relaxed_body(first))
        # Every piece starts and ends a line, so each can be dot-stuffed on its own:
        # the constant ones once here, the personal fields per message. Bytes made
        # here always end lines in CRLF; checked once, so the transport need not.
        self._wire_pieces = [_stuffed(p) if isinstance(p, bytes) else None for p in merged]
        self._wire_ready = all(_crlf_only(p) for p in merged if isinstance(p, bytes))

    def message(
        self,
        *,
        to_addr: str,
        to_name: str,
        message_id: str,
        envelope_from: str,
        fields: Mapping[str, str],
        unsubscribe_mailto: str,
    ) -> Message:
        """The signed wire bytes for one recipient.

        ``fields`` holds the personal fields but ``greeting``, which is made from
        ``name``; ``envelope_from`` is the return path (MAIL FROM).
        """
        values = dict(fields)
        values.setdefault("greeting", greeting_for(values.get("name", ""), self.locale))
        to_header, recipient = self._to(to_name, to_addr)
        msgid = _message_id(message_id, self.domain)
        # One word that cannot be folded (a longer one than 998 characters is refused).
        id_header = f"Message-ID: {msgid}\r\n".encode("ascii")
        if len(id_header) > 1000:
            raise MessageError(f"Message-ID: {msgid[:80]!r}... is too long")
        unsubscribe = _fold(
            "List-Unsubscribe",
            _url_list(
                "List-Unsubscribe",
                [_one_line(values["unsubscribe_url"]), _one_line(unsubscribe_mailto)],
            ),
        )
        body: list[bytes] = []
        wire: list[bytes] = []
        digest = self._body_hash_start.copy() if self.signer else None
        for n, (piece, canonical, stuffed) in enumerate(
            zip(self._pieces, self._canonical_pieces, self._wire_pieces, strict=True)
        ):
            if isinstance(piece, tuple):
                html, name = piece
                try:
                    value = values[name]
                except KeyError:
                    raise MessageError(f"no value for personal field {name!r}") from None
                piece = _qp(str(escape(value)) if html else value)
                canonical = relaxed_body(piece)
                stuffed = _stuffed(piece)
            body.append(piece)
            assert stuffed is not None
            wire.append(stuffed)
            if digest is not None and n:  # the first piece is in the hash already
                assert canonical is not None
                digest.update(canonical)
        head = [
            self._before_to,
            to_header,
            self._before_id,
            id_header,
            self._before_unsubscribe,
            unsubscribe,
            self._after_unsubscribe,
        ]
        if self.signer is not None and digest is not None:
            canonical_headers = dict(self._canonical)
            canonical_headers[b"to"] = relaxed_header(to_header)
            canonical_headers[b"message-id"] = relaxed_header(id_header)
            canonical_headers[b"list-unsubscribe"] = relaxed_header(unsubscribe)
            head.insert(0, self.signer.header(canonical_headers, digest.digest(), self.timestamp))
        head_bytes = b"".join(head) + b"\r\n"
        data = head_bytes + b"".join(body)
        # Header lines never start with "." (a name, or white space when folded).
        ready = self._wire_ready and _crlf_only(head_bytes)
        on_wire = head_bytes + b"".join(wire) if ready and wire != body else None
        return Message(
            sender=envelope_from,
            recipient=recipient,
            message_id=msgid,
            data=data,
            wire=(on_wire or data) if ready else None,
        )

    def _to(self, name: str, addr: str) -> tuple[bytes, str]:
        """The To header and the address as it goes on the envelope."""
        local, at, domain = addr.strip().rpartition("@")
        name = _header_text(name, MAX_NAME_LENGTH)
        if (
            at
            and _DOT_ATOM.fullmatch(local)
            and _ASCII_DOMAIN.fullmatch(domain)
            and (not name or _PLAIN_NAME.fullmatch(name))
        ):
            spec = f"{local}@{domain}"
            line = f"To: {name} <{spec}>" if name else f"To: {spec}"
            if len(line) <= MAX_HEADER_LINE:
                return (line + "\r\n").encode("ascii"), spec
        recipient = _address("To", name, addr, smtputf8=self.settings.smtp.smtputf8)
        utf8 = not recipient.addr_spec.isascii()
        return _fold("To", _address_header("To", recipient), utf8=utf8), recipient.addr_spec
