"""A recording SMTP server for tests: real aiosmtpd on 127.0.0.1, port 0.

Each test configures its server with the ``smtp_server`` marker (see
``tests/fixtures_smtp.py``)::

    @pytest.mark.smtp_server(refuse={"bad@example.org": "550 5.1.1 No such user"})

Options:

- ``refuse`` / ``temp_fail``: recipient → full reply line for its RCPT TO.
- ``refuse_sender``: full reply line for every MAIL FROM (e.g. ``"550 5.7.1 Sender not
  allowed"``); change ``server.handler.refuse_sender`` during a test to start accepting.
- ``refuse_data``: full reply line for every message at the end of DATA.
- ``disconnect_after=N``: after N accepted messages, drop the connection during the next
  DATA without answering (once), as a crashing server would.
- ``reply_421_after=N``: after N accepted messages, answer the next MAIL FROM with 421
  and close the connection (once).
- ``delay``: seconds to wait before answering each DATA.
- ``tls``: ``"starttls"`` (offered and required) or ``"implicit"`` (TLS from the first
  byte), with a self-signed certificate for 127.0.0.1 made by the ``openssl`` command.
- ``auth``: login → password; AUTH is then required (with ``tls="starttls"`` only:
  aiosmtpd offers AUTH only after STARTTLS).
- ``smtputf8=True``: offer SMTPUTF8 (RFC 6531) in the EHLO answer and take UTF-8
  addresses; without it aiosmtpd neither offers the extension nor takes them.
- ``pipelining=True``: offer PIPELINING (RFC 2920) in the EHLO answer. aiosmtpd reads
  one command after the other from its buffer, so it takes pipelined commands either way.

The handler counts the RSET commands it received in ``resets``, keeps the MAIL FROM
parameters of each accepted message in ``mail_options`` (in the order of ``messages``)
every RCPT TO address, accepted or not, in ``rcpt_seen``, the most messages in DATA
at once per recipient domain in ``peak_in_data`` and the loop time of each accepted
message in ``received_at``.
"""

from __future__ import annotations

import asyncio
import functools
import shutil
import ssl
import subprocess
import tempfile
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from digest.delivery.capture import LocalSmtpServer

__all__ = ["RecordingHandler", "RecordingServer", "self_signed_context", "self_signed_files"]


def self_signed_files(folder: Path) -> tuple[Path, Path]:
    """A fresh self-signed certificate for 127.0.0.1 and its key, as PEM files in ``folder``."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the openssl command is needed for TLS tests")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt",
         "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@functools.cache
def self_signed_context() -> ssl.SSLContext:
    """A server TLS context with a fresh self-signed certificate for 127.0.0.1."""
    with tempfile.TemporaryDirectory() as folder:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*self_signed_files(Path(folder)))
    return context


class RecordingHandler:
    """Keeps ``(mail_from, rcpt_tos, data)`` of every accepted message."""

    def __init__(
        self,
        *,
        refuse: Mapping[str, str] | None = None,
        temp_fail: Mapping[str, str] | None = None,
        disconnect_after: int | None = None,
        reply_421_after: int | None = None,
        delay: float = 0,
        refuse_sender: str | None = None,
        refuse_data: str | None = None,
        pipelining: bool = False,
    ) -> None:
        self.pipelining = pipelining
        self.replies = {**(refuse or {}), **(temp_fail or {})}
        self.refuse_sender = refuse_sender
        self.refuse_data = refuse_data
        self.resets = 0
        self.disconnect_after = disconnect_after
        self.reply_421_after = reply_421_after
        self.delay = delay
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.mail_options: list[list[str]] = []
        self.rcpt_seen: list[str] = []  # every RCPT TO address, in order
        self.in_data: Counter[str] = Counter()  # messages in DATA now, by recipient domain
        self.peak_in_data: Counter[str] = Counter()  # the most at once, by domain
        self.received_at: list[float] = []  # loop time of each accepted message

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname  # what aiosmtpd does itself when there is no hook
        if self.pipelining:
            responses.insert(1, "250-PIPELINING")
        return responses

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.reply_421_after is not None and len(self.messages) >= self.reply_421_after:
            self.reply_421_after = None
            assert server.transport is not None
            # Closed right after the reply is written, as a server going down does.
            asyncio.get_running_loop().call_soon(server.transport.close)
            return "421 4.3.2 Service shutting down, closing transmission channel"
        if self.refuse_sender is not None:
            return self.refuse_sender
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        self.rcpt_seen.append(address)
        if address in self.replies:
            return self.replies[address]
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        domains = {rcpt.rpartition("@")[2] for rcpt in envelope.rcpt_tos}
        for domain in domains:
            self.in_data[domain] += 1
            self.peak_in_data[domain] = max(self.peak_in_data[domain], self.in_data[domain])
        try:
            return await self._data(server, envelope)
        finally:
            for domain in domains:
                self.in_data[domain] -= 1

    async def _data(self, server: SMTP, envelope: Envelope) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.disconnect_after is not None and len(self.messages) >= self.disconnect_after:
            self.disconnect_after = None
            assert isinstance(server.transport, asyncio.WriteTransport)
            server.transport.abort()
            return "451 4.3.0 never sent: the connection is gone"
        if self.refuse_data is not None:
            return self.refuse_data
        assert envelope.mail_from is not None and envelope.original_content is not None
        self.messages.append(
            (envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
        )
        self.mail_options.append(list(envelope.mail_options))
        self.received_at.append(asyncio.get_running_loop().time())
        return "250 2.0.0 Ok: queued"

    async def handle_RSET(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.resets += 1
        return "250 OK"


class RecordingServer(LocalSmtpServer):
    """A :class:`RecordingHandler` behind a real aiosmtpd server on a free local port."""

    def __init__(
        self,
        *,
        tls: str | None = None,
        auth: Mapping[str, str] | None = None,
        smtputf8: bool = False,
        **options: Any,
    ) -> None:
        self.handler: RecordingHandler = RecordingHandler(**options)
        smtp_options: dict[str, Any] = {"enable_SMTPUTF8": smtputf8}
        ssl_context = None
        if tls == "starttls":
            smtp_options.update(tls_context=self_signed_context(), require_starttls=True)
        elif tls == "implicit":
            ssl_context = self_signed_context()
        elif tls is not None:
            raise ValueError(f"tls must be 'starttls' or 'implicit', not {tls!r}")
        if auth is not None:
            logins = {k.encode(): v.encode() for k, v in auth.items()}

            def authenticator(
                server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
            ) -> AuthResult:
                ok = isinstance(data, LoginPassword) and logins.get(data.login) == data.password
                # handled=False: aiosmtpd answers 535 itself (handled=True would mean
                # the authenticator already replied, and the client would wait forever).
                return AuthResult(success=ok, handled=False, auth_data=data)

            smtp_options.update(authenticator=authenticator, auth_required=True)
        super().__init__(self.handler, ssl_context=ssl_context, **smtp_options)

    @property
    def messages(self) -> list[tuple[str, list[str], bytes]]:
        return self.handler.messages

    @property
    def mail_options(self) -> list[list[str]]:
        return self.handler.mail_options
