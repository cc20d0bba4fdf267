"""The seam between delivery and the wire: a :class:`Transport` sends one message.

- :class:`SmtpPool` hands messages to an SMTP relay over a small pool of reused
  connections (aiosmtplib).
- :class:`DryRunTransport` records messages and sends nothing.
- :class:`CaptureServer` is an SMTP server (aiosmtpd) in the running event loop that
  writes every message it receives to a folder as a ``.eml`` file: ``digest demo`` sends
  through an :class:`SmtpPool` to it, so the demo exercises the real SMTP path.

A transport reports what the server said about each message as a :class:`SendResult`
(a refused recipient or message is a result, not an exception). It raises
:class:`~digest.core.errors.TransportUnavailable` or :class:`~digest.core.errors.SendTimeout` when
the connection itself fails, and :class:`~digest.core.errors.SenderRefused` when the server
refuses our side of the exchange (MAIL FROM, a 530 asking for authentication, or a
5.7.x answer to DATA), which no other recipient would fare better with; the caller
decides whether to go on. A 5.7.x answer to RCPT is a result marked ``policy``.

A message that needs SMTPUTF8 (RFC 6531: an address or a header in UTF-8) goes out
with that MAIL FROM parameter, and with ``BODY=8BITMIME`` as its bytes are 8-bit; to a
server whose EHLO answer does not offer SMTPUTF8 it is not sent at all but raises
:class:`~digest.core.errors.SenderRefused`: the relay lacks what our side needs, and every
such message would fail the same way (with ``smtp.smtputf8`` set, the setting is wrong).
A pure-ASCII message goes out as before, without either parameter.

aiosmtplib opens each connection (TLS, STARTTLS, AUTH, EHLO); the transactions on it
are then written by :class:`_Wire`, which takes the connection over: MAIL, RCPT and
DATA go out in one write where the server offers PIPELINING (RFC 2920), and the
message's bytes go out as they are when they already have CRLF line ends (only a line
starting with "." is stuffed), instead of being rewritten for every message.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol, Self

import aiosmtplib
import aiosmtplib.email
from aiosmtplib.protocol import normalize_message_line_endings

from digest.config import SmtpSettings
from digest.core.errors import (
    RelayConfigError,
    SenderRefused,
    SendError,
    SendTimeout,
    TransportUnavailable,
)
from digest.core.models import Message

__all__ = [
    "SendResult",
    "Transport",
    "SmtpPool",
    "DryRunTransport",
]

#: "Service not available, closing transmission channel": the server is going away.
_SERVICE_CLOSING = 421
#: "Authentication required" (RFC 4954): the relay will take nothing from us as we are.
_AUTH_REQUIRED = 530
# An RFC 3463 enhanced status code at the start of a reply's text, e.g. "5.7.1 ...".
_ENHANCED_STATUS = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?!\S)")


@dataclass(frozen=True)
class SendResult:
    """What the server answered for one message to one recipient."""

    recipient: str
    ok: bool
    code: int | None  # SMTP reply code (250 on success)
    reply: str  # the server's reply text, without the code
    temporary: bool = False  # 4xx: a later attempt may succeed
    # 5.7.x at RCPT: refused by policy. It may concern this recipient or, repeated, us
    # (relaying denied); either way it says nothing against the address itself.
    policy: bool = False


class Transport(Protocol):
    """Sends messages one at a time; may be called concurrently."""

    async def send(self, message: Message) -> SendResult: ...

    async def close(self) -> None: ...


def _is_policy(exc: aiosmtplib.SMTPResponseException) -> bool:
    """5.7.x: a security or policy status (RFC 3463: relaying denied, rejected by policy)."""
    status = _ENHANCED_STATUS.match(exc.message.lstrip())
    return status is not None and status[1] == "5" and status[2] == "7"


def _concerns_sender(exc: aiosmtplib.SMTPResponseException, command: str) -> bool:
    """True for a refusal at RCPT or DATA that is about us, not the recipient.

    530 asks us to authenticate; a 5.7.x answer to DATA refuses the message as we sent
    it (authentication, DMARC, content policy), which no other recipient would get past
    either. A 5.7.x answer to RCPT is left to the caller as a policy result: it can be
    about one recipient ("access denied") as well as about us ("relaying denied").
    """
    return exc.code == _AUTH_REQUIRED or (command == "DATA" and _is_policy(exc))


def _causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def configuration_problem(exc: BaseException, settings: SmtpSettings) -> RelayConfigError | None:
    """The setting to blame when opening a session failed because of our configuration.

    Connection refused (nothing listens at host and port), a failed login, STARTTLS or
    AUTH not offered, a certificate that does not verify: none of these goes away by
    waiting, so none is reported as temporary. None for anything else (a timeout, a
    server that went away, a 421 at the greeting), which may pass.
    """
    where = f"SMTP server {settings.host}:{settings.port}"
    chain = _causes(exc)
    if any(isinstance(e, ssl.SSLCertVerificationError) for e in chain):
        return RelayConfigError(
            f"the TLS certificate of {where} is not valid: {exc}",
            setting="smtp.host (the name the certificate is for) and smtp.validate_certs",
        )
    if any(isinstance(e, ssl.SSLError) for e in chain):
        return RelayConfigError(
            f"no TLS session with {where}: {exc}",
            setting=f"smtp.security ({settings.security!r}) and smtp.port",
        )
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return RelayConfigError(
            f"{where} refused the connection (nothing listens there)",
            setting="smtp.host and smtp.port",
        )
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return RelayConfigError(
            f"{where} did not accept the login of {settings.username!r}: "
            f"{exc.code} {' '.join(exc.message.split())}",
            setting="smtp.username and smtp.password (DIGEST_SMTP_PASSWORD)",
            code=exc.code,
            reply=exc.message,
        )
    if isinstance(exc, aiosmtplib.SMTPResponseException) and exc.code == _AUTH_REQUIRED:
        return RelayConfigError(
            f"{where} requires authentication: {exc.code} {' '.join(exc.message.split())}",
            setting="smtp.username and smtp.password (DIGEST_SMTP_PASSWORD)",
            code=exc.code,
            reply=exc.message,
        )
    text = str(exc)
    if type(exc) is aiosmtplib.SMTPException and "STARTTLS" in text:
        return RelayConfigError(
            f"{where} does not offer STARTTLS", setting="smtp.security and smtp.port"
        )
    if type(exc) is aiosmtplib.SMTPException and "AUTH extension" in text:
        return RelayConfigError(
            f"{where} does not offer SMTP AUTH (some servers offer it only over TLS)",
            setting="smtp.security and smtp.username",
        )
    return None


def _unavailable(exc: BaseException, where: str) -> SendError:
    """A failure to open a session that may pass: a timeout, a refusal at the greeting."""
    if isinstance(exc, aiosmtplib.SMTPTimeoutError):
        return SendTimeout(f"SMTP server {where} did not answer in time: {exc}")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return TransportUnavailable(
            f"SMTP server {where} refused the session: {exc.code} {exc.message}",
            code=exc.code,
            reply=exc.message,
        )
    return TransportUnavailable(f"cannot connect to SMTP server {where}: {exc}")


def _refused(recipient: str, exc: aiosmtplib.SMTPResponseException) -> SendResult:
    return SendResult(
        recipient,
        ok=False,
        code=exc.code,
        reply=exc.message,
        temporary=400 <= exc.code < 500,
        policy=_is_policy(exc),
    )


class _Wire(asyncio.Protocol):
    """An SMTP connection past its greeting and EHLO: commands out, replies back in order.

    Takes the connection over from aiosmtplib (``transport.set_protocol``). Replies are
    parsed as they arrive and queued, so several commands can be written at once
    (PIPELINING, RFC 2920) and their replies read one after the other.
    """

    def __init__(self, transport: asyncio.Transport, timeout: float | None) -> None:
        self.transport = transport
        self.timeout = timeout
        self._loop = asyncio.get_running_loop()
        self._buffer = bytearray()
        self._replies: deque[tuple[int, str]] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._lost: Exception | None = None
        transport.set_protocol(self)

    @property
    def is_connected(self) -> bool:
        return self._lost is None and not self.transport.is_closing()

    def write(self, data: bytes) -> None:
        if not self.is_connected:
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        self.transport.write(data)

    async def reply(self) -> tuple[int, str]:
        """The next reply: its code and its text (lines joined by newlines)."""
        if not self._replies:
            if self._lost is not None:
                raise self._failure()
            waiter = self._waiter = self._loop.create_future()
            timer = (
                self._loop.call_later(self.timeout, self._time_out, waiter)
                if self.timeout
                else None
            )
            try:
                await waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()
            if not self._replies:
                raise self._failure()
        return self._replies.popleft()

    def close(self) -> None:
        self.transport.close()

    def _failure(self) -> Exception:
        if isinstance(self._lost, aiosmtplib.SMTPException):
            return self._lost
        lost = aiosmtplib.SMTPServerDisconnected("Connection lost")
        lost.__cause__ = self._lost if isinstance(self._lost, OSError) else None
        return lost

    def _time_out(self, waiter: asyncio.Future[None]) -> None:
        if not waiter.done():
            waiter.set_exception(
                aiosmtplib.SMTPReadTimeoutError("Timed out waiting for server response")
            )

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        start = 0
        while (end := buffer.find(b"\n", start)) >= 0:
            line = bytes(buffer[start : end + 1])
            if len(line) > _MAX_REPLY_LINE or not line[:3].isdigit():
                self._garbled(line)
                return
            if line[3:4] != b"-":  # the last line of a reply
                lines = bytes(buffer[: end + 1]).split(b"\n")[:-1]
                text = b"\n".join(part[4:].strip(b" \t\r") for part in lines)
                self._replies.append((int(line[:3]), text.decode("utf-8", "surrogateescape")))
                del buffer[: end + 1]
                start = 0
            else:
                start = end + 1
        if len(buffer) > _MAX_REPLY:
            self._garbled(bytes(buffer[:80]))
            return
        if self._replies:
            self._wake()

    def _garbled(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace").strip()
        self._lost = aiosmtplib.SMTPResponseException(-1, f"Malformed SMTP reply: {text[:80]}")
        self.transport.close()
        self._wake()

    def eof_received(self) -> bool:
        return False  # the transport closes, and connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        if self._lost is None:
            self._lost = exc or aiosmtplib.SMTPServerDisconnected("Connection lost")
        self._wake()


@dataclass(eq=False)
class _Connection:
    wire: _Wire
    pipelining: bool  # RFC 2920
    size: bool  # RFC 1870
    smtputf8: bool  # RFC 6531
    eight_bit: bool  # RFC 6152
    sent: int = 0


@dataclass
class _Progress:
    """How far a send got: the command last sent, and whether the content went."""

    command: str = "MAIL FROM"
    in_data: bool = False


class _StaleConnection(Exception):
    """A reused connection failed before the server saw any of the message."""


#: Limits on what a server may answer: a line, and a reply of many lines.
_MAX_REPLY_LINE = 8192
_MAX_REPLY = 4 * _MAX_REPLY_LINE
# An address that goes on the wire as it is (RFC 5321 dot-atom, RFC 6531 UTF-8 allowed):
# anything else takes aiosmtplib's way (parsed, checked, quoted).
_PLAIN_PATH = re.compile(
    r"[\w!#$%&'*+/=?^`{|}~-]+(?:\.[\w!#$%&'*+/=?^`{|}~-]+)*@[\w-]+(?:\.[\w-]+)*", re.ASCII
)
_PLAIN_UTF8_PATH = re.compile(
    r"[\w!#$%&'*+/=?^`{|}~-]+(?:\.[\w!#$%&'*+/=?^`{|}~-]+)*@[\w-]+(?:\.[\w-]+)*"
)


def _path(address: str, encoding: str) -> bytes:
    """``<address>`` for MAIL FROM or RCPT TO; ValueError if it cannot go on the wire."""
    pattern = _PLAIN_PATH if encoding == "ascii" else _PLAIN_UTF8_PATH
    if not pattern.fullmatch(address):
        address = aiosmtplib.email.parse_address(address)
    path = f"<{address}>".encode(encoding)
    if _CONTROL.search(path):
        raise ValueError("Command arg contains a prohibited control character")
    return path


_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")


def _content(data: bytes) -> bytes:
    """What follows DATA: CRLF line ends, lines starting with "." stuffed, the end mark.

    Bytes that already end every line in CRLF (as every message this program builds)
    are not normalised again, and once every line ends in CRLF a line starting with "."
    is one after a line feed: a plain replace stuffs it (an HTML part has many, CSS).
    """
    lines = data.count(b"\n")
    if lines != data.count(b"\r\n") or lines != data.count(b"\r"):
        data = normalize_message_line_endings(data)
    elif not data.endswith(b"\r\n"):
        data += b"\r\n"
    if data.startswith(b"."):
        data = b"." + data
    return data.replace(b"\n.", b"\n..") + b".\r\n"


def _needs_smtputf8(message: Message) -> bool:
    """True when an address or a header is UTF-8 (RFC 6531, 6532).

    The body never needs it: 8-bit text in a body part is 8BITMIME's business.
    """
    end = message.data.find(b"\r\n\r\n")
    head = message.data if end < 0 else message.data[:end]
    return not (message.sender.isascii() and message.recipient.isascii() and head.isascii())


class SmtpPool:
    """Up to ``pool_size`` SMTP connections, each reused for ``messages_per_connection``.

    Each message is one transaction (MAIL, RCPT, DATA) with the exact bytes of
    ``Message.data``. A connection that fails is dropped, never reused; a reused
    connection that turns out to be closed before DATA (an idle timeout on the server)
    is replaced once, transparently. A failure during DATA is raised, because the
    server may have accepted the message: retrying it could deliver it twice.
    A refusal that concerns the sender is raised as
    :class:`~digest.core.errors.SenderRefused` after RSET; the connection stays usable.
    """

    def __init__(self, settings: SmtpSettings, *, local_hostname: str | None = None) -> None:
        self.settings = settings
        self.local_hostname = local_hostname
        self._slots = asyncio.Semaphore(settings.pool_size)
        self._idle: list[_Connection] = []
        self._closed = False
        self.connections_opened = 0

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def send(self, message: Message) -> SendResult:
        """Hand ``message`` to the server; the result says whether it was accepted.

        A 421 ("service not available, closing transmission channel") ends that
        connection without the message being taken: it is tried once more on a new
        connection, and only a second 421 is the result.
        """
        result = await self._send_once(message)
        if result.code == _SERVICE_CLOSING:
            result = await self._send_once(message)
        return result

    async def _send_once(self, message: Message) -> SendResult:
        async with self._slots:
            if self._closed:
                raise TransportUnavailable("the SMTP pool is closed")
            connection = self._take_idle()
            if connection is not None:
                try:
                    return await self._send_on(connection, message, reused=True)
                except _StaleConnection:
                    pass
            try:
                connection = await self._open()
            except SendError as exc:
                exc.unsent = True  # no session: the server saw nothing of the message
                raise
            return await self._send_on(connection, message, reused=False)

    async def close(self) -> None:
        """Say QUIT on every idle connection; connections in use close when done."""
        self._closed = True
        idle, self._idle = self._idle, []
        await asyncio.gather(*(self._quit(c) for c in idle))

    def _take_idle(self) -> _Connection | None:
        while self._idle:
            connection = self._idle.pop()
            if connection.wire.is_connected:
                return connection
            connection.wire.close()
        return None

    def _release(self, connection: _Connection) -> Awaitable[None] | None:
        """Put a healthy connection back, or return the QUIT to await when it is done."""
        usable = connection.wire.is_connected and not self._closed
        if usable and connection.sent < self.settings.messages_per_connection:
            self._idle.append(connection)
            return None
        return self._quit(connection)

    async def _open(self) -> _Connection:
        s = self.settings
        smtp = aiosmtplib.SMTP(
            hostname=s.host,
            port=s.port,
            username=s.username or None,
            password=(s.password or None) if s.username else None,
            local_hostname=self.local_hostname,
            timeout=s.timeout,
            use_tls=s.security == "tls",
            start_tls=s.security == "starttls",
            validate_certs=s.validate_certs,
        )
        where = f"{s.host}:{s.port}"
        try:
            await smtp.connect()
            if smtp.is_ehlo_or_helo_needed:  # EHLO now, to know the extensions offered
                try:
                    await smtp.ehlo()
                except aiosmtplib.SMTPHeloError:
                    await smtp.helo()
        except (aiosmtplib.SMTPException, OSError) as exc:
            smtp.close()
            problem = configuration_problem(exc, s)
            if problem is not None:
                raise problem from exc
            raise _unavailable(exc, where) from exc
        transport = smtp.transport
        if not isinstance(transport, asyncio.Transport) or transport.is_closing():
            smtp.close()
            raise TransportUnavailable(f"SMTP server {where} closed the connection")
        self.connections_opened += 1
        return _Connection(
            _Wire(transport, s.timeout),
            pipelining=smtp.supports_extension("pipelining"),
            size=smtp.supports_extension("size"),
            smtputf8=smtp.supports_extension("smtputf8"),
            eight_bit=smtp.supports_extension("8bitmime"),
        )

    async def _send_on(
        self, connection: _Connection, message: Message, *, reused: bool
    ) -> SendResult:
        envelope = await self._envelope(connection, message)
        if isinstance(envelope, SendResult):
            return envelope
        wire = connection.wire
        where = f"{self.settings.host}:{self.settings.port}"
        content = message.wire + b".\r\n" if message.wire is not None else _content(message.data)
        progress = _Progress()
        refusal: SenderRefused | None = None
        try:
            try:
                code, text = await self._dialogue(connection, envelope, content, progress)
            except aiosmtplib.SMTPResponseException as exc:
                outcome = await self._refusal(wire, message, exc, progress.command)
                if isinstance(outcome, SendResult):
                    return outcome
                refusal = outcome  # raised after the connection is back in the pool (below)
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, OSError) as exc:
            wire.close()
            stale = (
                reused and not progress.in_data and not isinstance(exc, aiosmtplib.SMTPTimeoutError)
            )
            if stale:
                raise _StaleConnection from exc
            if isinstance(exc, TimeoutError):
                raise SendTimeout(
                    f"SMTP server {where} did not answer in time sending {message.message_id}"
                ) from exc
            raise TransportUnavailable(
                f"lost the connection to SMTP server {where} sending {message.message_id}: {exc}"
            ) from exc
        except aiosmtplib.SMTPException as exc:
            wire.close()
            raise SendError(f"cannot send {message.message_id}: {exc}") from exc
        except BaseException:
            wire.close()  # cancelled mid-dialogue: the connection is in an unknown state
            raise
        finally:
            if progress.in_data:
                connection.sent += 1
            await self._give_back(connection)
        if refusal is not None:
            raise refusal
        return SendResult(message.recipient, ok=True, code=code, reply=text)

    async def _envelope(
        self, connection: _Connection, message: Message
    ) -> tuple[tuple[str, bytes, int], ...] | SendResult:
        """The MAIL FROM, RCPT TO and DATA commands for ``message``, with their replies.

        Nothing has gone on the wire when an address cannot: the connection goes back.
        """
        where = f"{self.settings.host}:{self.settings.port}"
        utf8 = _needs_smtputf8(message)
        if utf8 and not connection.smtputf8:
            # Known from the EHLO answer; nothing went on the wire, the connection is fine.
            await self._give_back(connection)
            raise SenderRefused(
                f"SMTP server {where} does not offer the SMTPUTF8 extension (RFC 6531), "
                f"which the message to {message.recipient} needs"
                + (
                    ": use a relay that offers it or set smtp.smtputf8 = false"
                    if self.settings.smtputf8
                    else ""
                )
            )
        encoding = "utf-8" if utf8 else "ascii"
        try:
            sender = _path(message.sender, encoding)
        except ValueError as exc:  # an address that cannot go on the wire
            await self._give_back(connection)
            raise SenderRefused(
                f"cannot send from {message.sender!r} (sending {message.message_id}): {exc}"
            ) from None
        try:
            recipient = _path(message.recipient, encoding)
        except ValueError as exc:
            await self._give_back(connection)
            return SendResult(message.recipient, ok=False, code=None, reply=str(exc))
        options = b""
        if connection.size:
            options += b" SIZE=%d" % len(message.data)
        if utf8:
            options += b" SMTPUTF8"
        if connection.eight_bit and not message.data.isascii():
            options += b" BODY=8BITMIME"  # RFC 6152; RFC 6531 §3.1 wants it too
        return (
            ("MAIL FROM", b"MAIL FROM:" + sender + options + b"\r\n", 250),
            ("RCPT TO", b"RCPT TO:" + recipient + b"\r\n", 250),
            ("DATA", b"DATA\r\n", 354),
        )

    async def _dialogue(
        self,
        connection: _Connection,
        commands: tuple[tuple[str, bytes, int], ...],
        content: bytes,
        progress: _Progress,
    ) -> tuple[int, str]:
        """Send the envelope, then the content; the server's last reply, or its refusal."""
        wire = connection.wire
        if connection.pipelining:
            wire.write(b"".join(line for _, line, _ in commands))
        for n, (command, line, expected) in enumerate(commands):
            progress.command = command
            if not connection.pipelining:
                wire.write(line)
            code, text = await wire.reply()
            if code == expected or (command == "RCPT TO" and code == 251):
                continue
            if code != _SERVICE_CLOSING and connection.pipelining:
                await self._drain(wire, len(commands) - n - 1)
            raise aiosmtplib.SMTPResponseException(code, text)
        progress.in_data = True
        wire.write(content)
        code, text = await wire.reply()
        if code != 250:
            raise aiosmtplib.SMTPResponseException(code, text)
        return code, text

    async def _refusal(
        self,
        wire: _Wire,
        message: Message,
        exc: aiosmtplib.SMTPResponseException,
        command: str,
    ) -> SendResult | SenderRefused:
        """What a refused ``command`` means: for this recipient, or for every message."""
        if exc.code == _SERVICE_CLOSING or exc.code < 0:
            wire.close()  # the server is going away, or we lost track of the dialogue
            return _refused(message.recipient, exc)
        await self._reset(wire)
        if command != "MAIL FROM" and not _concerns_sender(exc, command):
            return _refused(message.recipient, exc)
        return SenderRefused(
            f"SMTP server {self.settings.host}:{self.settings.port} refuses mail from "
            f"{message.sender} ({command} of {message.message_id}): {exc.code} "
            + " ".join(exc.message.split()),
            code=exc.code,
            reply=exc.message,
        )

    async def _give_back(self, connection: _Connection) -> None:
        quit_ = self._release(connection)
        if quit_ is not None:
            await quit_

    async def _drain(self, wire: _Wire, replies: int) -> None:
        """Read the replies to the rest of a refused pipelined group.

        Should a server accept DATA all the same (with no recipient), the message is
        ended at once, empty, and refused there.
        """
        for n in range(replies):
            code, _ = await wire.reply()
            if n == replies - 1 and code == 354:
                wire.write(b".\r\n")
                await wire.reply()

    async def _reset(self, wire: _Wire) -> None:
        """End a refused transaction so the connection can carry the next message."""
        if not wire.is_connected:
            return
        try:
            wire.write(b"RSET\r\n")
            await wire.reply()
        except (aiosmtplib.SMTPException, OSError):
            wire.close()

    async def _quit(self, connection: _Connection) -> None:
        wire = connection.wire
        if wire.is_connected:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                wire.write(b"QUIT\r\n")
                await wire.reply()
        wire.close()


@dataclass
class DryRunTransport:
    """Sends nothing; keeps every message it was given, in order."""

    messages: list[Message] = field(default_factory=list)

    async def send(self, message: Message) -> SendResult:
        self.messages.append(message)
        return SendResult(message.recipient, ok=True, code=250, reply="dry run")

    async def close(self) -> None:
        return None
