"""The deployment files in deploy/: the systemd units verify, every `digest ...` they and
the compose file run is a real command, and the image's health check answers /healthz."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import click
import httpx
import pytest

from digest.cli import cli

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
INSTALLED = "/opt/digest/.venv/bin/digest"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed"
)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env["PYTHONPATH"] = str(ROOT)
    return env


def _directives(unit: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def _match(pattern: str, text: str) -> str:
    found = re.search(pattern, text, re.M)
    assert found, pattern
    return found[1]


def _runnable_copy(unit: Path, folder: Path) -> Path:
    """The unit with its ExecStart pointing at this Python, which exists here."""
    copy = folder / unit.name
    python = f"{sys.executable} -m digest.cli"
    copy.write_text(unit.read_text().replace(INSTALLED, python))
    return copy


def _analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE
    return subprocess.run(
        [SYSTEMD_ANALYZE, *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_both_units_are_shipped() -> None:
    assert [u.name for u in UNITS] == ["digest-run.service", "digest-serve.service"]


@needs_systemd
@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_unit_verifies(unit: Path, tmp_path: Path) -> None:
    result = _analyze("verify", str(_runnable_copy(unit, tmp_path)))
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr
    # As shipped, the only complaint allowed is the digest not yet installed here.
    shipped = _analyze("verify", str(unit))
    others = [
        line
        for line in shipped.stderr.splitlines()
        if line.strip() and f"Command {INSTALLED} is not executable" not in line
    ]
    assert others == [], shipped.stderr


@needs_systemd
@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_unit_is_sandboxed(unit: Path, tmp_path: Path) -> None:
    d = _directives(unit)
    expected = {
        "User": "digest",
        "WorkingDirectory": "/var/lib/digest",
        "EnvironmentFile": "/etc/digest/env",
        "ProtectSystem": "strict",
        "ReadWritePaths": "/var/lib/digest",
        "ProtectHome": "yes",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "CapabilityBoundingSet": "",
        "SystemCallFilter": "@system-service",
        "UMask": "0077",
        "Restart": "on-failure",
        "KillSignal": "SIGTERM",
    }
    assert {k: d.get(k, [None])[0] for k in expected} == expected
    # systemd's own score of the sandbox: 0 is airtight, 10 unprotected; 2 is "OK".
    result = _analyze("security", "--offline=yes", "--threshold=20", str(unit))
    assert result.returncode == 0, result.stdout[-400:] + result.stderr


def test_run_stops_slowly_enough_for_a_send_to_finish() -> None:
    """A send finishes its messages in flight after SIGTERM; each SMTP reply may take up
    to smtp.timeout (30 s by default), so the stop waits for several of them."""
    run = _directives(DEPLOY / "systemd" / "digest-run.service")
    assert int(run["TimeoutStopSec"][0]) >= 120
    compose = (DEPLOY / "compose.yaml").read_text()
    assert re.search(r"^  run:\n(?:    .*\n)*?    stop_grace_period: 180s$", compose, re.M)


def _commands() -> dict[str, list[str]]:
    """Every digest command line the units, the compose file and the image run."""
    found: dict[str, list[str]] = {}
    for unit in UNITS:
        argv = shlex.split(_directives(unit)["ExecStart"][0])
        assert argv[0] == INSTALLED
        found[unit.name] = argv[1:]
    compose = (DEPLOY / "compose.yaml").read_text()
    lines = re.findall(r"^\s*command:(.*)$", compose, re.M)
    assert len(lines) == 2, lines  # serve and run
    for line in lines:
        argv = json.loads(line)  # written as JSON lists: a YAML parser is not needed
        found[f"compose: {' '.join(argv)}"] = argv
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert json.loads(_match(r"^ENTRYPOINT (.*)$", dockerfile)) == ["digest"]
    found["Dockerfile CMD"] = json.loads(_match(r"^CMD (.*)$", dockerfile))
    return found


COMMANDS = _commands()


@pytest.mark.parametrize("argv", COMMANDS.values(), ids=COMMANDS.keys())
def test_command_is_real(argv: list[str], tmp_path: Path) -> None:
    # Every option exists (the real CLI, in a process of its own, refuses unknown ones) ...
    result = subprocess.run(
        [sys.executable, "-m", "digest.cli", *argv, "--help"],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    command = next(a for a in argv if not a.startswith("-") and not a.startswith("/"))
    assert result.stdout.startswith(f"Usage: digest {command} "), result.stdout
    # ... and every value converts to its type (a port that is a number, ...).
    at = argv.index(command)
    with cli.make_context("digest", argv[:at]) as group:
        sub = cli.get_command(group, command)
        assert sub is not None
        sub.make_context(command, argv[at + 1 :], parent=group).close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _healthcheck(port: int) -> subprocess.CompletedProcess[str]:
    """The image's HEALTHCHECK command, run here against ``port``."""
    dockerfile = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    argv = json.loads(_match(r"^HEALTHCHECK .*? CMD (\[.*\])$", dockerfile))
    assert argv[0] == "python" and "curl" not in " ".join(argv)
    argv = [sys.executable, *(a.replace("127.0.0.1:8000", f"127.0.0.1:{port}") for a in argv[1:])]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


def test_healthcheck_tells_a_serving_app_from_none(tmp_path: Path) -> None:
    shutil.copy(ROOT / "config.toml", tmp_path / "config.toml")
    port = _free_port()
    assert _healthcheck(port).returncode != 0  # nothing listens yet
    serve = subprocess.Popen(
        [sys.executable, "-m", "digest.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp_path, env={**_env(), "DIGEST_PUBLIC_URL": f"http://127.0.0.1:{port}"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            assert serve.poll() is None, "digest serve ended"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "digest serve did not answer"
                time.sleep(0.1)
        result = _healthcheck(port)
        assert result.returncode == 0, result.stderr
    finally:
        serve.terminate()
        serve.communicate(timeout=30)


def test_operations_guide_is_linked_and_names_real_commands() -> None:
    assert "(docs/operations.md)" in (ROOT / "README.md").read_text()
    guide = (ROOT / "docs" / "operations.md").read_text()
    shell = "".join(re.findall(r"^```sh\n(.*?)^```", guide, re.M | re.S))
    named = set(re.findall(r"`digest ([a-z]+(?: [a-z]+)?)", guide))
    named |= set(re.findall(r"^digest ([a-z]+(?: [a-z]+)?)", shell, re.M))
    assert {"run", "serve", "status", "dkim keygen"} <= named
    for words in sorted(named):
        command: click.Command = cli
        with click.Context(cli) as ctx:
            for word in words.split():
                if not isinstance(command, click.Group):
                    break
                found = command.get_command(ctx, word)
                assert found is not None, f"digest {words}"
                command = found
