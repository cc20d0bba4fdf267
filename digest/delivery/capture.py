"""A local SMTP server in the running event loop: the capture the demo sends to (every
message written to an outbox folder), and the base of the tests' recording servers."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from aiosmtpd.smtp import SMTP as SmtpServerProtocol
from aiosmtpd.smtp import Envelope, Session

from digest.config import SmtpSettings

__all__ = ["CaptureServer", "CapturedMessage", "LocalSmtpServer"]


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
        # Each message holds a reader's name and address: the owner's alone to read.
        self.outbox.mkdir(mode=0o700, parents=True, exist_ok=True)
        stamp = self.clock().strftime("%Y%m%d-%H%M%S")
        name = _UNSAFE_IN_NAME.sub("_", recipient)[:80]
        n = len(self.messages) + 1
        while True:
            path = self.outbox / f"{stamp}-{n:04d}-{name}.eml"
            try:
                with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as fh:
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
