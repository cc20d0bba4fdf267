"""The progress of ``digest send`` as an operator sees it: a bar with the count and the
rate on a terminal, a log line every few seconds under cron or systemd, and a summary
with the duration and the rate; a real process, a real SMTP server that answers slowly."""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import re
import struct
import sys
import termios
import threading
from pathlib import Path

from digest.cli.sending import _progress
from tests.cli.test_cli import _env, _import_demo_lists
from tests.cli.test_cli import site as site  # the fixture
from tests.smtp_server import RecordingServer

#: 14 messages over the demo's 2 connections, each DATA answered after a second: the
#: send takes at least 7 s, longer than the time between two progress lines.
DELAY = 1.0
SUMMARY = re.compile(r"; took (\d+\.\d) s, (\d+\.\d) messages/s$")


def _check_summary(out: str) -> None:
    summary = out.strip().splitlines()[-1]
    assert "14 sent" in summary, summary
    found = SUMMARY.search(summary)
    assert found is not None, summary
    seconds, rate = float(found[1]), float(found[2])
    assert seconds >= 14 * DELAY / 2 - 0.5
    assert abs(rate - 14 / seconds) <= 0.1


async def test_outside_a_terminal_a_line_every_few_seconds_and_the_summary(site: Path) -> None:
    await _import_demo_lists(site)
    async with RecordingServer(delay=DELAY) as server:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "digest.cli", "send", "wochenueberblick", "--week",
            "2025-W05", cwd=site, env=_env(DIGEST_SMTP_PORT=str(server.port)),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, err.decode()
    _check_summary(out.decode())
    lines = err.decode().splitlines()
    progress = [
        re.fullmatch(
            r"\S+Z INFO digest\.cli\.send: sent (\d+)/(\d+) \((\d+) %\), "
            r"(\d+\.\d) messages/s, about (\d+):(\d\d):(\d\d) left",
            line,
        )
        for line in lines
    ]
    assert progress and all(progress), lines
    seconds = _progress.EVERY
    # The first line after EVERY seconds; one at most each EVERY seconds after it.
    assert len(progress) <= (14 * DELAY) // seconds + 1
    for found in progress:
        assert found is not None
        done, total, share = int(found[1]), int(found[2]), int(found[3])
        assert 1 <= done <= total <= 14 and share == 100 * done // total


def _read_all(fd: int, into: bytearray) -> None:
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the other end closed
            return
        if not chunk:
            return
        into.extend(chunk)


async def test_on_a_terminal_a_bar_with_the_count_and_the_rate(site: Path) -> None:
    await _import_demo_lists(site)
    main, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 160, 0, 0))
    shown = bytearray()
    reader = threading.Thread(target=_read_all, args=(main, shown), daemon=True)
    reader.start()
    try:
        async with RecordingServer(delay=DELAY) as server:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "digest.cli", "send", "wochenueberblick", "--week",
                "2025-W05", cwd=site,
                env=_env(DIGEST_SMTP_PORT=str(server.port), TERM="xterm-256color"),
                stdout=asyncio.subprocess.PIPE, stderr=terminal,
            )  # fmt: skip
            out, _ = await asyncio.wait_for(process.communicate(), timeout=120)
    finally:
        os.close(terminal)
        reader.join(timeout=10)
        os.close(main)
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown.decode(errors="replace"))
    assert process.returncode == 0, screen
    _check_summary(out.decode())
    bars = re.findall(r"sending.*? (\d+)/(\d+) +(\d+) % +(\d+\.\d) messages/s +about ", screen)
    assert bars, screen
    assert all(int(done) <= int(total) <= 14 for done, total, _share, _rate in bars)
    assert "INFO" not in screen  # the bar, not log lines
