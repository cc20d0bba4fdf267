"""The seam between delivery and the wire: a :class:`Transport` sends one message.

- :class:`SmtpPool` hands messages to an SMTP relay over a small pool of reused
  connections (aiosmtplib).
- :class:`DryRunTransport` records messages and sends nothing.
- :class:`CaptureServer` is an SMTP server (aiosmtpd) in the running event loop that
  writes every message it receives to a folder as a ``.eml`` file: ``digest demo`` sends
  through an :class:`SmtpPool` to it, so the demo exercises the real SMTP path.

A transport reports what the server said about each message as a :class:`SendResult`
(a refused recipient or message is a result, not an exception). It raises
:class:`~digest.errors.TransportUnavailable` or :class:`~digest.errors.SendTimeout` when
the connection itself fails, and :class:`~digest.errors.SenderRefused` when the server
refuses our side of the exchange (MAIL FROM, a 530 asking for authentication, or a
5.7.x answer to DATA), which no other recipient would fare better with; the caller
decides whether to go on. A 5.7.x answer to RCPT is a result marked ``policy``.

A message that needs SMTPUTF8 (RFC 6531: an address or a header in UTF-8) goes out
with that MAIL FROM parameter, and with ``BODY=8BITMIME`` as its bytes are 8-bit; to a
server whose EHLO answer does not offer SMTPUTF8 it is not sent at all but raises
:class:`~digest.errors.SenderRefused`: the relay lacks what our side needs, and every
such message would fail the same way (with ``smtp.smtputf8`` set, the setting is wrong).
A pure-ASCII message goes out as before, without either parameter.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

import aiosmtplib
from aiosmtpd.smtp import SMTP as SmtpServerProtocol
from aiosmtpd.smtp import Envelope, Session

from digest.config import SmtpSettings
from digest.errors import (
    RelayConfigError,
    SenderRefused,
    SendError,
    SendTimeout,
    TransportUnavailable,
)
from digest.models import Message

__all__ = [
    "SendResult",
    "Transport",
    "SmtpPool",
    "DryRunTransport",
    "LocalSmtpServer",
    "CapturedMessage",
    "CaptureServer",
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


@dataclass(eq=False)
class _Connection:
    smtp: aiosmtplib.SMTP
    sent: int = 0


class _StaleConnection(Exception):
    """A reused connection failed before the server saw any of the message."""


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
    :class:`~digest.errors.SenderRefused` after RSET; the connection stays usable.
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
            if connection.smtp.is_connected:
                return connection
            connection.smtp.close()
        return None

    def _release(self, connection: _Connection) -> Awaitable[None] | None:
        """Put a healthy connection back, or return the QUIT to await when it is done."""
        usable = connection.smtp.is_connected and not self._closed
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
            if smtp.is_ehlo_or_helo_needed:  # EHLO now, to know whether SIZE is supported
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
        self.connections_opened += 1
        return _Connection(smtp)

    async def _send_on(
        self, connection: _Connection, message: Message, *, reused: bool
    ) -> SendResult:
        smtp = connection.smtp
        where = f"{self.settings.host}:{self.settings.port}"
        utf8 = _needs_smtputf8(message)
        if utf8 and not smtp.supports_extension("smtputf8"):
            # Known from the EHLO answer; nothing went on the wire, the connection is fine.
            quit_ = self._release(connection)
            if quit_ is not None:
                await quit_
            raise SenderRefused(
                f"SMTP server {where} does not offer the SMTPUTF8 extension (RFC 6531), "
                f"which the message to {message.recipient} needs"
                + (
                    ": use a relay that offers it or set smtp.smtputf8 = false"
                    if self.settings.smtputf8
                    else ""
                )
            )
        in_data = False
        command = "MAIL FROM"
        refusal: SenderRefused | None = None
        try:
            options: list[str] = []
            if smtp.supports_extension("size"):
                options.append(f"SIZE={len(message.data)}")
            if utf8:
                options.append("SMTPUTF8")
            if not message.data.isascii() and smtp.supports_extension("8bitmime"):
                options.append("BODY=8BITMIME")  # RFC 6152; RFC 6531 §3.1 wants it too
            encoding = "utf-8" if utf8 else "ascii"
            try:
                await smtp.mail(message.sender, options=options, encoding=encoding)
                command = "RCPT TO"
                await smtp.rcpt(message.recipient, encoding=encoding)
                command = "DATA"
                in_data = True
                response = await smtp.data(message.data)
            except aiosmtplib.SMTPResponseException as exc:
                if exc.code == _SERVICE_CLOSING or exc.code < 0:
                    smtp.close()  # the server is going away, or we lost track of the dialogue
                    return _refused(message.recipient, exc)
                await self._reset(smtp)
                if command != "MAIL FROM" and not _concerns_sender(exc, command):
                    return _refused(message.recipient, exc)
                # Raised after the connection is back in the pool (below).
                refusal = SenderRefused(
                    f"SMTP server {where} refuses mail from {message.sender} "
                    f"({command} of {message.message_id}): {exc.code} "
                    + " ".join(exc.message.split()),
                    code=exc.code,
                    reply=exc.message,
                )
            except ValueError as exc:  # an address aiosmtplib will not put on the wire
                await self._reset(smtp)
                if command != "MAIL FROM":
                    return SendResult(message.recipient, ok=False, code=None, reply=str(exc))
                refusal = SenderRefused(
                    f"cannot send from {message.sender!r} (sending {message.message_id}): {exc}"
                )
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, OSError) as exc:
            smtp.close()
            stale = reused and not in_data and not isinstance(exc, aiosmtplib.SMTPTimeoutError)
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
            smtp.close()
            raise SendError(f"cannot send {message.message_id}: {exc}") from exc
        except BaseException:
            smtp.close()  # cancelled mid-dialogue: the connection is in an unknown state
            raise
        finally:
            if in_data:
                connection.sent += 1
            quit_ = self._release(connection)
            if quit_ is not None:
                await quit_
        if refusal is not None:
            raise refusal
        return SendResult(message.recipient, ok=True, code=response.code, reply=response.message)

    async def _reset(self, smtp: aiosmtplib.SMTP) -> None:
        """End a refused transaction so the connection can carry the next message."""
        if not smtp.is_connected:
            return
        try:
            await smtp.rset()
        except (aiosmtplib.SMTPException, OSError):
            smtp.close()

    async def _quit(self, connection: _Connection) -> None:
        smtp = connection.smtp
        if smtp.is_connected:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                await smtp.quit()
        smtp.close()


@dataclass
class DryRunTransport:
    """Sends nothing; keeps every message it was given, in order."""

    messages: list[Message] = field(default_factory=list)

    async def send(self, message: Message) -> SendResult:
        self.messages.append(message)
        return SendResult(message.recipient, ok=True, code=250, reply="dry run")

    async def close(self) -> None:
        return None


class LocalSmtpServer:
    """An aiosmtpd server on a local port in the running event loop.

    aiosmtpd's ``Controller`` runs the server in a thread and checks readiness by
    connecting to the configured port, so it cannot use port 0; here the server runs
    in the caller's loop, ``port=0`` picks a free port, and leaving the ``async with``
    block closes every connection, so no transport is left open.
    """

    def __init__(
        self,
        handler: Any,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        **smtp_options: Any,
    ) -> None:
        self.handler = handler
        self.host = host
        self.port = port
        self.ssl_context = ssl_context  # implicit TLS on the listening socket
        self.smtp_options = smtp_options  # passed to aiosmtpd.smtp.SMTP (tls_context, ...)
        self.connections = 0  # connections accepted so far
        self._server: asyncio.Server | None = None
        self._sessions: set[SmtpServerProtocol] = set()

    def _protocol(self) -> SmtpServerProtocol:
        loop = asyncio.get_running_loop()
        protocol = SmtpServerProtocol(
            self.handler, hostname="localhost", loop=loop, **self.smtp_options
        )
        self._sessions = {p for p in self._sessions if p.transport is not None}
        self._sessions.add(protocol)
        self.connections += 1
        return protocol

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._protocol,
            host=self.host,
            port=self.port,
            family=socket.AF_INET,
            ssl=self.ssl_context,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        await self._server.wait_closed()
        self._server = None
        self.drop_connections()
        # Let each connection_lost() run and each session's task finish.
        for _ in range(3):
            await asyncio.sleep(0)

    def drop_connections(self) -> None:
        """Close every open client connection at once, as a crashing server would."""
        for protocol in self._sessions:
            if isinstance(protocol.transport, asyncio.WriteTransport):
                protocol.transport.abort()
        self._sessions.clear()

    def settings(self, **overrides: Any) -> SmtpSettings:
        """Settings of an :class:`SmtpPool` that sends to this server."""
        base = SmtpSettings(
            host=self.host,
            port=self.port,
            security="none",
            username="",
            password="",
            timeout=30,
            pool_size=2,
            messages_per_connection=100,
            validate_certs=True,
        )
        return replace(base, **overrides)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()


@dataclass(frozen=True)
class CapturedMessage:
    """One message a :class:`CaptureServer` received, and the file it wrote."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes = field(repr=False)
    path: Path


_UNSAFE_IN_NAME = re.compile(r"[^A-Za-z0-9@._+-]+")


class _CaptureHandler:
    def __init__(self, outbox: Path, clock: Callable[[], datetime]) -> None:
        self.outbox = outbox
        self.clock = clock
        self.messages: list[CapturedMessage] = []

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or b""
        mail_from = envelope.mail_from or ""
        rcpt_tos = tuple(envelope.rcpt_tos)
        path = self._write(data, rcpt_tos[0] if rcpt_tos else "unknown")
        self.messages.append(CapturedMessage(mail_from, rcpt_tos, data, path))
        return f"250 2.0.0 Ok: written to {path.name}"

    def _write(self, data: bytes, recipient: str) -> Path:
        self.outbox.mkdir(parents=True, exist_ok=True)
        stamp = self.clock().strftime("%Y%m%d-%H%M%S")
        name = _UNSAFE_IN_NAME.sub("_", recipient)[:80]
        n = len(self.messages) + 1
        while True:
            path = self.outbox / f"{stamp}-{n:04d}-{name}.eml"
            try:
                with path.open("xb") as fh:
                    fh.write(data)
            except FileExistsError:
                n += 1
                continue
            return path


class CaptureServer(LocalSmtpServer):
    """An SMTP server that writes each message it receives to ``outbox`` as a .eml file.

    Files are named ``<YYYYmmdd-HHMMSS>-<n>-<recipient>.eml`` and hold the exact bytes
    of the DATA command; the envelope is kept in :attr:`messages`. Use it as
    ``async with CaptureServer(outbox) as server:`` and send to ``server.settings()``.
    """

    def __init__(
        self,
        outbox: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._capture = _CaptureHandler(Path(outbox), clock)
        super().__init__(self._capture, host=host, port=port)

    @property
    def messages(self) -> list[CapturedMessage]:
        return self._capture.messages
