"""Build the RFC 5322 bytes of one message for one recipient.

The result is pure ASCII with CRLF line ends: headers folded at 78 characters with
RFC 2047 encoded words for anything else, and a ``multipart/alternative`` body whose
text and HTML parts are UTF-8 in quoted-printable (lines of at most 76 characters,
whatever the length of the HTML's lines). One exception: with ``smtp.smtputf8`` a
recipient whose address has non-ASCII characters before the @ gets a To header with
that address in UTF-8 (RFC 6532), which only an SMTPUTF8 relay carries (RFC 6531);
every other header, and every message to an ASCII address, stays ASCII. The bytes are
final: a DKIM signature is computed over exactly these bytes and they go on the wire
unchanged.

Every value that reaches a header (subject, names, issue key) is collapsed to one line
first, so no text from an article or a subscriber can start a header of its own, and
cut to a bounded length (the subject to ``MAX_SUBJECT_LENGTH``, names to
``MAX_NAME_LENGTH``), so none can make a header that takes long to fold.
"""

from __future__ import annotations

import binascii
import functools
import hashlib
import re
from datetime import datetime
from email.charset import QP, Charset
from email.header import Header
from email.headerregistry import Address
from email.policy import SMTP, EmailPolicy
from email.utils import format_datetime, make_msgid, parseaddr

from digest.config import NewsletterSettings, Settings
from digest.core.addresses import NEEDS_SMTPUTF8
from digest.core.errors import DigestError
from digest.core.models import Message
from digest.issue.compose import LINE_BREAKING, MAX_SUBJECT_LENGTH, shorten

__all__ = ["MessageError", "build_message"]

#: Headers are folded to this length (RFC 5322 §2.1.1 "SHOULD").
MAX_HEADER_LINE = 78
#: Longest display name (From, Reply-To, To, List-Id) in characters.
MAX_NAME_LENGTH = 100
# The X-Digest-Issue key is a week ("2025-W05") or a date; anything longer is cut.
_MAX_ISSUE_KEY_LENGTH = 64
_HEADER_POLICY = SMTP
# For the To header of an address that is UTF-8 before the @ (RFC 6532): the email
# package writes that address as is instead of as an encoded word no reader takes.
_UTF8_HEADER_POLICY = SMTP.clone(utf8=True)

# Characters that would give a List-Id phrase a structure (RFC 5322 specials, minus ".").
_PHRASE_SPECIALS = re.compile(r'[()<>\[\]:;@\\,"]+')
# Characters that make the email package write a display name as a quoted string.
_QUOTED_STRING_NEEDED = re.compile(r'[()<>\[\]:;@\\,."]')
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
# A local part as RFC 6532 §3.2 extends atext: UTF-8 characters too (no C1 controls,
# no surrogates; spaces are refused before). Quoted local parts are not taken, as the
# import does not take them either.
_UTF8_ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u00a0-\ud7ff\ue000-\U0010ffff"
_UTF8_DOT_ATOM = re.compile(rf"[{_UTF8_ATEXT}]+(?:\.[{_UTF8_ATEXT}]+)*")
_URL = re.compile(r"(?:https?|mailto):[\x21-\x7e]+")


class MessageError(DigestError, ValueError):
    """A message cannot be built from the values given (an address, a URL, the clock)."""


def _one_line(value: str) -> str:
    """``value`` with line breaks, control characters and runs of spaces as one space."""
    return " ".join(LINE_BREAKING.sub(" ", value).split())


def _header_text(value: str, limit: int) -> str:
    """``value`` on one line and at most ``limit`` characters (cut at a word with "…")."""
    return shorten(_one_line(value), limit)


class _PrefoldedHeader(str):
    """A header folded here, written out exactly as folded.

    The email package folds an unstructured header whose word does not fit on a line by
    turning it into RFC 2047 encoded words, which corrupts the URLs of List-Unsubscribe.
    A value with ``name`` and ``fold()`` is stored and written as is
    (see :meth:`email.policy.EmailPolicy.header_store_parse`). The ``str`` value is the
    unfolded raw value (encoded words left as they are).
    """

    name: str
    _lines: tuple[str, ...]

    def __new__(cls, name: str, lines: list[str]) -> _PrefoldedHeader:
        value = " ".join(line.strip() for line in lines)
        value = value[len(name) + 1 :].strip()
        header = super().__new__(cls, value)
        header.name = name
        header._lines = tuple(lines)
        return header

    def fold(self, *, policy: EmailPolicy) -> str:
        return policy.linesep.join(self._lines) + policy.linesep


def _fold_words(first_line: str, words: list[str]) -> list[str]:
    """Lines of a header: ``words`` appended to ``first_line``, folded between words.

    A word longer than a line gets a line of its own (up to 998 characters are allowed).
    """
    lines = [first_line]
    for word in words:
        if len(lines[-1]) + 1 + len(word) <= MAX_HEADER_LINE or lines[-1].endswith(":"):
            lines[-1] += " " + word
        else:
            lines.append(" " + word)
    return lines


def _url_list(name: str, urls: list[str]) -> _PrefoldedHeader:
    """A header of ``<url>`` entries (RFC 2369), folded between the URLs only."""
    for url in urls:
        if not _URL.fullmatch(url) or ">" in url:
            raise MessageError(f"{name}: not an ASCII http(s) or mailto URL: {url!r}")
    words = [f"<{url}>," for url in urls]
    words[-1] = words[-1].rstrip(",")
    return _PrefoldedHeader(name, _fold_words(f"{name}:", words))


def _list_id(name: str, list_id: str) -> _PrefoldedHeader:
    """``List-Id: Name <list.id>`` (RFC 2919), the name encoded as the policy does it."""
    if not _DOT_ATOM.fullmatch(list_id) or "." not in list_id:
        raise MessageError(f"List-Id: {list_id!r} is not a dotted name like 'news.example.org'")
    phrase = _header_text(_PHRASE_SPECIALS.sub(" ", name), MAX_NAME_LENGTH)
    if not phrase:
        return _PrefoldedHeader("List-Id", [f"List-Id: <{list_id}>"])
    if phrase.isascii():
        folded = _HEADER_POLICY.header_factory("List-Id", phrase).fold(policy=_HEADER_POLICY)
        lines = folded.rstrip("\r\n").split(_HEADER_POLICY.linesep)
    else:  # encoded here, for the reason given at _address_header
        lines = list(_encoded_header("List-Id", phrase)._lines)
    head, last = lines[:-1], lines[-1]
    return _PrefoldedHeader("List-Id", head + _fold_words(last, [f"<{list_id}>"]))


def _address(header: str, name: str, addr: str, *, smtputf8: bool = False) -> Address:
    """An address for a header, its name on one line and its domain in ASCII (IDNA).

    With ``smtputf8`` the part before the @ may be UTF-8 (RFC 6531/6532); the domain
    goes out in ASCII all the same: it has an exact ASCII form every relay and resolver
    takes, while the local part has none, so it alone needs the extension.
    """
    local, at, domain = addr.strip().rpartition("@")
    if not at or not local or not domain or any(c.isspace() or c in "<>" for c in addr):
        raise MessageError(f"{header}: not an email address: {addr!r}")
    if not local.isascii() and not smtputf8:
        if header == "To":
            raise MessageError(f"{header}: {addr!r}: {NEEDS_SMTPUTF8}")
        raise MessageError(f"{header}: {addr!r}: the sender's address must be ASCII before the @")
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        raise MessageError(f"{header}: bad domain in {addr!r}") from None
    try:
        # "=?" would let the email package decode the name as an encoded word, line
        # breaks included; no real name contains it, so it is taken apart.
        display = _header_text(name, MAX_NAME_LENGTH).replace("=?", "= ?")
        if local.isascii():
            return Address(display_name=display, addr_spec=f"{local}@{domain}")
        # The email package parses no UTF-8 local part (NonASCIILocalPartDefect); it is
        # checked here and given as a username, which it then writes as is.
        if not _UTF8_DOT_ATOM.fullmatch(local):
            raise ValueError("not a dot-atom of RFC 6532")
        Address(addr_spec=f"x@{domain}")  # the domain's syntax
        return Address(display_name=display, username=local, domain=domain)
    except (ValueError, IndexError) as exc:
        raise MessageError(f"{header}: not an email address: {addr!r} ({exc})") from None


_QUOTED_PRINTABLE_UTF8 = Charset("utf-8")
_QUOTED_PRINTABLE_UTF8.header_encoding = QP  # readable, as the email package writes names


def _address_header(header: str, address: Address) -> object:
    """``header: Name <addr>``, a non-ASCII name as RFC 2047 encoded words folded here.

    The email package folds a long non-ASCII phrase into encoded words with the space
    between two words left outside them, where RFC 2047 makes a reader drop it
    ("Anna Müller" can arrive as "AnnaMüller"); email.header keeps spaces inside.
    An ASCII name that must be a quoted string (it has a '"', ',', '(' ...) is folded
    here too when the header needs folding: the email package (3.11) folds a long
    quoted string apart, and what it writes then reads back as another name or
    address. It goes whole on a line of its own, or, longer than a line, encoded.
    """
    name = address.display_name
    if name.isascii():
        if not _QUOTED_STRING_NEEDED.search(name):
            return address
        quoted = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
        addr = f"<{address.addr_spec}>"
        if len(f"{header}: {quoted} {addr}") <= MAX_HEADER_LINE:
            return address  # not folded: the email package writes it right
        if len(f"{header}: {quoted}") <= MAX_HEADER_LINE:
            return _PrefoldedHeader(header, _fold_words(f"{header}:", [quoted, addr]))
    encoded = Header(name, charset=_QUOTED_PRINTABLE_UTF8, header_name=header).encode(
        linesep="\n", maxlinelen=MAX_HEADER_LINE
    )
    lines = f"{header}: {encoded}".split("\n")
    return _PrefoldedHeader(header, lines[:-1] + _fold_words(lines[-1], [f"<{address.addr_spec}>"]))


def _encoded_header(name: str, text: str) -> _PrefoldedHeader:
    """``name: text`` with ``text`` as RFC 2047 encoded words, folded here.

    For text that itself looks like an encoded word ("=?utf-8?q?=0D=0ABcc:...?="): the
    email package would decode it when the header is set and write the decoded line
    break out raw, starting a header of the text's choosing. Encoding the whole text
    keeps it text. And for any non-ASCII text: where the email package folds a long
    run of it into two encoded words at a space, the space ends up between them, where
    RFC 2047 tells every reader to drop it.
    """
    encoded = Header(text, charset=_QUOTED_PRINTABLE_UTF8, header_name=name).encode(
        linesep="\n", maxlinelen=MAX_HEADER_LINE
    )
    return _PrefoldedHeader(name, f"{name}: {encoded}".split("\n"))


def _looks_encoded(text: str) -> bool:
    return "=?" in text


def _message_id(given: str | None, domain: str) -> str:
    if given is None:
        return make_msgid(domain=domain)
    bare = given.strip().removeprefix("<").removesuffix(">")
    if "@" not in bare:
        bare = f"{bare}@{domain}"
    left, _, right = bare.partition("@")
    if not (_DOT_ATOM.fullmatch(left) and _DOT_ATOM.fullmatch(right)):
        raise MessageError(f"Message-ID: {given!r} is not a valid message id")
    return f"<{bare}>"


def _text_part(content: str, subtype: str, boundary: str) -> bytes:
    """One UTF-8 quoted-printable body part with its boundary line, CRLF line ends.

    binascii's quoted-printable encoder is written in C; the email package's is pure
    Python and took most of the time of building a message.
    """
    lines = content.replace("\r\n", "\n").replace("\r", "\n")
    if not lines.endswith("\n"):
        lines += "\n"
    encoded = binascii.b2a_qp(lines.encode("utf-8"), istext=True)
    return (
        (
            f"--{boundary}\r\n"
            f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
            "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        ).encode("ascii")
        + encoded.replace(b"\n", b"\r\n")
        + b"\r\n"
    )  # CRLF before the boundary


def build_message(
    *,
    newsletter: NewsletterSettings,
    settings: Settings,
    to_addr: str,
    to_name: str,
    subject: str,
    html: str,
    text: str,
    unsubscribe_url: str | None,
    unsubscribe_mailto: str | None,
    now: datetime,
    message_id: str | None = None,
    issue_key: str = "",
) -> Message:
    """The wire bytes of one issue for one recipient (RFC 5322, 2045, 2369, 2919, 8058).

    ``now`` (timezone-aware) becomes the Date. ``message_id`` makes the Message-ID
    deterministic: a bare id gets ``@<sender domain>`` appended; without it a random id
    on the sender's domain is made. The MIME boundary derives from the Message-ID, so a
    fixed clock and a fixed id give the same bytes every time.
    ``Message.message_id`` is the header's value, angle brackets included. A subject
    longer than :data:`~digest.issue.compose.MAX_SUBJECT_LENGTH` (render_subject never makes
    one) is cut like the rendered one, names likewise. ``to_addr`` may have non-ASCII
    characters before the @ only with ``settings.smtp.smtputf8``; the To header then
    carries it in UTF-8 and the message needs an SMTPUTF8 relay (RFC 6531, 6532).
    Without ``unsubscribe_url`` (a confirmation request: nobody is subscribed yet) the
    message has no List-Unsubscribe and List-Unsubscribe-Post headers.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise MessageError("Date: the clock must be timezone-aware")
    # The headers every recipient of a variant shares are folded once (the email
    # package's folding is most of the cost of a message); only To, Message-ID,
    # List-Unsubscribe and the boundary are folded per recipient.
    before_to, before_id, before_unsubscribe, before_type, sender_addr = _shared_headers(
        newsletter.sender,
        newsletter.reply_to,
        newsletter.name,
        newsletter.effective_list_id,
        _header_text(subject, MAX_SUBJECT_LENGTH),
        format_datetime(now),
        _header_text(issue_key, _MAX_ISSUE_KEY_LENGTH),
        unsubscribe_url is not None,
    )
    recipient = _address("To", to_name, to_addr, smtputf8=settings.smtp.smtputf8)
    utf8_to = not recipient.addr_spec.isascii()
    msgid = _message_id(message_id, sender_addr.rpartition("@")[2])
    # "=_" never occurs in quoted-printable text, so the boundary cannot clash with a part.
    boundary = "=_digest_" + hashlib.sha256(msgid.encode("ascii")).hexdigest()[:32]
    head = b"".join(
        (
            before_to,
            _fold("To", _address_header("To", recipient), utf8=utf8_to),
            before_id,
            _fold("Message-ID", msgid),
            before_unsubscribe,
            _fold(
                "List-Unsubscribe",
                _url_list(
                    "List-Unsubscribe",
                    [_one_line(unsubscribe_url), _one_line(unsubscribe_mailto or "")][
                        : 2 if unsubscribe_mailto else 1
                    ],
                ),
            )
            if unsubscribe_url is not None
            else b"",
            before_type,
            _fold("Content-Type", f'multipart/alternative; boundary="{boundary}"'),
        )
    )
    data = b"".join(
        (
            head,
            b"\r\n",
            _text_part(text, "plain", boundary),
            _text_part(html, "html", boundary),
            f"--{boundary}--\r\n".encode("ascii"),
        )
    )
    if not (utf8_to or data.isascii()):  # pragma: no cover - the policy and QP guarantee it
        raise MessageError("message is not pure ASCII")
    return Message(sender=sender_addr, recipient=recipient.addr_spec, message_id=msgid, data=data)


def _fold(name: str, value: object, *, utf8: bool = False) -> bytes:
    """One header as the email package writes it (folded, RFC 2047 where needed).

    With ``utf8`` an address in the header is written in UTF-8 (RFC 6532).
    """
    policy = _UTF8_HEADER_POLICY if utf8 else _HEADER_POLICY
    if not hasattr(value, "fold"):
        value = policy.header_factory(name, value)
    folded: str = value.fold(policy=policy)  # type: ignore[attr-defined]
    return folded.encode("utf-8" if utf8 else "ascii")


@functools.lru_cache(maxsize=64)
def _shared_headers(
    sender: str,
    reply_to: str,
    name: str,
    list_id: str,
    subject: str,
    date: str,
    issue_key: str,
    one_click: bool = True,
) -> tuple[bytes, bytes, bytes, bytes, str]:
    """The folded headers around the per-recipient ones, and the envelope sender."""
    sender_name, sender_address = parseaddr(sender)
    from_address = _address("From", sender_name, sender_address)
    reply = b""
    if reply_to:
        reply_name, reply_address = parseaddr(reply_to)
        reply_to_address = _address("Reply-To", reply_name, reply_address)
        reply = _fold("Reply-To", _address_header("Reply-To", reply_to_address))
    plain = subject.isascii() and not _looks_encoded(subject)
    subject_header = subject if plain else _encoded_header("Subject", subject)
    before_to = _fold("Date", date) + _fold("From", _address_header("From", from_address))
    before_id = reply + _fold("Subject", subject_header)
    before_unsubscribe = _fold("List-Id", _list_id(name, list_id))
    before_type = _fold("List-Unsubscribe-Post", "List-Unsubscribe=One-Click") if one_click else b""
    if issue_key:
        before_type += _fold("X-Digest-Issue", issue_key)
    before_type += _fold("MIME-Version", "1.0")
    return before_to, before_id, before_unsubscribe, before_type, from_address.addr_spec
