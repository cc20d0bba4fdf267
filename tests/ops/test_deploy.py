"""The deployment files in deploy/: the systemd units verify, every `digest ...` they and
the compose files run is a real command, the cluster's compose file wires its roles with
real settings and variables, and the image's health check answers /healthz."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import click
import httpx
import pytest

from digest.cli import cli
from digest.config import ENV_OVERRIDES, all_setting_names, parse_settings
from digest.config.cluster import ClusterSettings
from digest.config.smtp import SMTP

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
CLUSTER_COMPOSE = DEPLOY / "compose.cluster.yaml"
#: Settings the cluster's compose file asks for that another part of digest adds; until
#: it is there, the test of those lines skips after checking the others.
PENDING_SETTINGS = {"web.rate_limit_storage"}
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


def test_the_units_are_shipped() -> None:
    assert [u.name for u in UNITS] == [
        "digest-migrate.service",
        "digest-run.service",
        "digest-serve.service",
        "digest-worker@.service",
    ]


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


def test_worker_stops_slowly_enough_for_a_send_slice_to_finish() -> None:
    """A send job ends at the latest after cluster.slice_seconds, then records the
    messages in flight, each waiting for up to smtp.timeout: the supervisor waits for the
    slice and a few replies before it kills the worker."""
    smtp_timeout = next(s.default for s in SMTP if s.name == "timeout")
    enough = ClusterSettings().slice_seconds + 3 * smtp_timeout
    worker = _directives(DEPLOY / "systemd" / "digest-worker@.service")
    assert int(worker["TimeoutStopSec"][0]) >= enough
    block = _services(CLUSTER_COMPOSE)["worker"]
    grace = _match(r"^    stop_grace_period: (\d+)s$", block)
    assert int(grace) >= enough


def _exec_start(unit: Path) -> list[str]:
    """The unit's command line as systemd runs it: ${VAR} replaced by the unit's own
    Environment= defaults (an instance's environment file may set others)."""
    d = _directives(unit)
    defaults = dict(a.split("=", 1) for e in d.get("Environment", []) for a in shlex.split(e))
    line = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m[1]], d["ExecStart"][0])
    return shlex.split(line)


def _services(compose: Path) -> dict[str, str]:
    """Each service's block of text in a compose file (two-space indented names)."""
    lines = compose.read_text().splitlines(keepends=True)
    blocks: dict[str, str] = {}
    name = None
    for line in lines[lines.index("services:\n") + 1 :]:
        if re.match(r"[^\s#]", line):
            break  # the next top-level key
        if found := re.match(r"  ([a-z-]+):$", line):
            name = found[1]
            blocks[name] = ""
        elif name:
            blocks[name] += line
    return blocks


def _compose_commands(compose: Path) -> dict[str, list[str]]:
    """The digest command line of each service that runs the digest image."""
    found = {}
    for name, block in _services(compose).items():
        if "<<: *digest" in block:
            # Written as JSON lists: a YAML parser is not needed to read them.
            found[name] = json.loads(_match(r"^    command: (\[.*\])$", block))
    return found


def _commands() -> dict[str, list[str]]:
    """Every digest command line the units, the compose files and the image run."""
    found: dict[str, list[str]] = {}
    for unit in UNITS:
        argv = _exec_start(unit)
        assert argv[0] == INSTALLED
        found[unit.name] = argv[1:]
    compose = _compose_commands(DEPLOY / "compose.yaml")
    assert set(compose) == {"serve", "run"}
    cluster = _compose_commands(CLUSTER_COMPOSE)
    assert set(cluster) == {"migrate", "web", "worker"}
    for file, commands in (("compose", compose), ("compose.cluster", cluster)):
        for name, argv in commands.items():
            found[f"{file} {name}: {' '.join(argv)}"] = argv
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


def test_compose_files_use_real_variables() -> None:
    """Every DIGEST_* variable the compose files, the Caddyfiles and env.example name is
    an override digest reads, except DIGEST_SITE, which only Caddy reads."""
    for name in ("compose.yaml", "compose.cluster.yaml", "env.example"):
        named = set(re.findall(r"\bDIGEST_[A-Z_]+\b", (DEPLOY / name).read_text()))
        assert named - {"DIGEST_SITE"} <= set(ENV_OVERRIDES), name
    assert "DIGEST_CLUSTER_QUEUE: procrastinate" in CLUSTER_COMPOSE.read_text()
    for name in ("Caddyfile", "Caddyfile.cluster"):
        named = set(re.findall(r"\{\$([A-Z_]+)", (DEPLOY / name).read_text()))
        assert named == {"DIGEST_SITE"}, name


def _cluster_config() -> dict:
    """The lines the cluster's compose file says to add to config.toml, parsed."""
    text = CLUSTER_COMPOSE.read_text()
    block = text[text.index("# config.toml, besides your newsletters:\n") :].splitlines()[1:]
    lines = [line.removeprefix("#   ") for line in block[: block.index("#")]]
    return tomllib.loads("\n".join(lines))


def test_cluster_config_lines_are_real_settings() -> None:
    """The settings the cluster's compose file asks for exist and take its values, with
    the environment it sets (DIGEST_CLUSTER_QUEUE) and a PostgreSQL store."""
    lines = _cluster_config()
    named = {f"{table}.{key}" for table, keys in lines.items() for key in keys}
    unknown = named - set(all_setting_names())
    assert unknown <= PENDING_SETTINGS, unknown
    data = tomllib.loads((ROOT / "config.toml").read_text())
    for table, keys in lines.items():
        known = {k: v for k, v in keys.items() if f"{table}.{k}" not in unknown}
        data[table] = {**data.get(table, {}), **known}
    environment = dict(
        re.findall(r"^    (DIGEST_[A-Z_]+): (\S+)$", CLUSTER_COMPOSE.read_text(), re.M)
    )
    assert environment == {"DIGEST_CLUSTER_QUEUE": "procrastinate"}
    settings = parse_settings(
        data,
        environ={
            **environment,
            "DIGEST_STORE_URL": "postgresql+psycopg://digest:secret@postgres/digest",
            "DIGEST_PUBLIC_URL": "https://newsletter.kommune-digital.example",
            "DIGEST_SECRET_KEY": "a-real-key-of-enough-length",
        },
    )
    assert settings.cluster.enabled
    # The proxy's fixed address is the one the web replicas believe X-Forwarded-For from.
    proxy = _services(CLUSTER_COMPOSE)["proxy"]
    assert settings.web.trusted_proxies == (_match(r"ipv4_address: (\S+)$", proxy),)
    if unknown:
        pytest.skip(f"{', '.join(sorted(unknown))}: not a setting of this version yet")


def test_image_installs_the_locked_extras_the_cluster_needs() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert "pip install --require-hashes -r requirements/app.txt" in dockerfile
    locked = (ROOT / "requirements" / "app.txt").read_text()
    assert re.search(r"^procrastinate==", locked, re.M)  # `digest worker` runs in the image
    assert re.search(r"^psycopg==", locked, re.M)


def test_cluster_compose_wires_the_roles() -> None:
    yaml = pytest.importorskip("yaml")
    compose = yaml.safe_load(CLUSTER_COMPOSE.read_text())
    services = compose["services"]
    assert set(services) == {"migrate", "web", "worker", "proxy", "postgres", "redis"}
    digest = {name for name, s in services.items() if s.get("image") == "digest:cluster"}
    assert digest == set(_compose_commands(CLUSTER_COMPOSE))  # the text read above
    for name in digest:
        assert services[name]["command"] == _compose_commands(CLUSTER_COMPOSE)[name]

    def waits_for(name: str) -> dict[str, str]:
        return {k: v["condition"] for k, v in services[name].get("depends_on", {}).items()}

    assert waits_for("migrate") == {"postgres": "service_healthy"}
    assert services["migrate"]["restart"] == "no"
    assert waits_for("web") == {
        "migrate": "service_completed_successfully",
        "redis": "service_healthy",
    }
    assert waits_for("worker") == {"migrate": "service_completed_successfully"}
    assert waits_for("proxy") == {"web": "service_healthy"}
    assert services["web"]["deploy"]["replicas"] == 2
    assert services["worker"]["deploy"]["replicas"] == 3
    for name in ("postgres", "redis"):
        assert services[name]["healthcheck"]["test"][0] == "CMD", name
    assert services["worker"]["healthcheck"] == {"disable": True}
    # The web replicas' health check is the image's (tested against a real serve below).
    dockerfile = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    image_check = json.loads(_match(r"^HEALTHCHECK .*? CMD (\[.*\])$", dockerfile))
    assert services["web"]["healthcheck"]["test"] == ["CMD", *image_check]
    # The proxy load-balances the replicas by the service's name, from a fixed address
    # in the network it shares with them (and only them).
    assert "./Caddyfile.cluster:/etc/caddy/Caddyfile:ro" in services["proxy"]["volumes"]
    assert re.search(r"^\s*dynamic a web 8000 ", (DEPLOY / "Caddyfile.cluster").read_text(), re.M)
    [subnet] = compose["networks"]["front"]["ipam"]["config"]
    address = services["proxy"]["networks"]["front"]["ipv4_address"]
    assert ipaddress.ip_address(address) in ipaddress.ip_network(subnet["subnet"])
    on_front = {name for name, s in services.items() if "front" in (s.get("networks") or [])}
    assert on_front == {"web", "proxy"}
    # The single-host file still parses too.
    single = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert set(single["services"]) == {"proxy", "serve", "run", "postgres"}


def test_cluster_caddyfile_serves_the_site_as_the_single_host_one() -> None:
    """Only the upstreams differ: the same site address, headers and body limit."""
    single = (DEPLOY / "Caddyfile").read_text()
    cluster = (DEPLOY / "Caddyfile.cluster").read_text()
    site = _match(r"^(\{\$DIGEST_SITE:\S+\}) \{$", single)
    assert f"\n{site} {{\n" in cluster
    for block in ("header", "request_body"):
        found = _match(rf"^(\t{block} \{{\n(?:\t\t.*\n)*\t\}}\n)", single)
        assert found in cluster, block


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
    assert {"run", "serve", "status", "dkim keygen", "migrate", "worker"} <= named
    for words in sorted(named):
        command: click.Command = cli
        with click.Context(cli) as ctx:
            for word in words.split():
                if not isinstance(command, click.Group):
                    break
                found = command.get_command(ctx, word)
                assert found is not None, f"digest {words}"
                command = found


def test_operations_guide_names_real_settings() -> None:
    """Every `section.key` the guide names is a setting (or one still being added)."""
    guide = (ROOT / "docs" / "operations.md").read_text()
    sections = {name.partition(".")[0] for name in all_setting_names() if "." in name}
    named = {
        f"{section}.{key}"
        for section, key in re.findall(r"`([a-z_]+)\.([a-z_]+)`", guide)
        if section in sections
    }
    assert {"cluster.send_slots", "cluster.stalled_seconds", "smtp.timeout"} <= named
    assert named - set(all_setting_names()) <= PENDING_SETTINGS
