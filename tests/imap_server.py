"""A real IMAP server for tests: Debian's Dovecot (package dovecot-imapd) on 127.0.0.1.

Each :class:`DovecotServer` is a Dovecot of its own, started in the foreground from a
generated configuration in a temporary folder: implicit TLS on a free port with a fresh
self-signed certificate for 127.0.0.1, one user in a passwd-file, mail in a Maildir.
Nothing of the system's Dovecot (its configuration, service or ports) is used.

Started by an ordinary user, every Dovecot process runs as that user. Started by root
(as in CI containers), Dovecot separates privileges as it always does: the login
processes run as ``dovenull`` and the mail processes as ``dovecot``, both users made by
the package; it refuses to run those as root.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from tests.smtp_server import self_signed_files

__all__ = ["DOVECOT", "DovecotServer", "dovecot_missing"]

DOVECOT = Path("/usr/sbin/dovecot")


def dovecot_missing() -> str | None:
    """Why no test Dovecot can run here, or None."""
    if not DOVECOT.exists():
        return f"Debian's dovecot-imapd is not installed ({DOVECOT})"
    if shutil.which("openssl") is None:
        return "the openssl command is needed for the IMAP server's certificate"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("dovenull"), pwd.getpwnam("dovecot")
        except KeyError:
            return "the users dovenull and dovecot of the dovecot-core package are missing"
    return None


class DovecotServer:
    """``with DovecotServer() as imap:`` a running server; ``imap.port``, ``imap.user`` …"""

    host = "127.0.0.1"
    user = "abmelden"

    def __init__(self) -> None:
        self.password = secrets.token_urlsafe(12)
        self.folder = Path(tempfile.mkdtemp(prefix="digest-dovecot-"))
        self.cert, key = self_signed_files(self.folder)
        self.port = _free_port()
        self._process: subprocess.Popen[bytes] | None = None
        me = pwd.getpwuid(os.geteuid())
        if os.geteuid() == 0:
            login, mail = pwd.getpwnam("dovenull"), pwd.getpwnam("dovecot")
            os.chmod(self.folder, 0o755)  # the login and mail processes find their way in
        else:
            login = mail = me
        home = self.folder / "home"
        home.mkdir()
        os.chown(home, mail.pw_uid, mail.pw_gid)
        users = self.folder / "users"
        users.write_text(
            f"{self.user}:{{PLAIN}}{self.password}:{mail.pw_uid}:{mail.pw_gid}::{home}::\n"
        )
        self.config = self.folder / "dovecot.conf"
        self.config.write_text(
            f"""\
base_dir = {self.folder}/run
state_dir = {self.folder}/state
log_path = {self.folder}/dovecot.log
instance_name = digest-test-{self.port}
protocols = imap
listen = {self.host}
ssl = required
ssl_cert = <{self.cert}
ssl_key = <{key}
default_internal_user = {mail.pw_name}
default_login_user = {login.pw_name}
first_valid_uid = {mail.pw_uid}
first_valid_gid = {mail.pw_gid}
mail_location = maildir:~/Maildir
auth_mechanisms = plain
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {users}
}}
userdb {{
  driver = passwd-file
  args = {users}
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = {self.port}
    ssl = yes
  }}
}}
"""
        )

    @property
    def log(self) -> str:
        path = self.folder / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def __enter__(self) -> DovecotServer:
        self._process = subprocess.Popen(
            [str(DOVECOT), "-F", "-c", str(self.config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection((self.host, self.port), timeout=1).close()
                return self
            except OSError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    output = self._process.communicate()[0].decode(errors="replace")
                    self.__exit__(None, None, None)
                    raise RuntimeError(f"dovecot did not start: {output}{self.log}") from None
                time.sleep(0.05)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)  # the master stops its children
            try:
                self._process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._process is not None and self._process.stdout is not None:
            self._process.stdout.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
