"""``digest migrate`` in a cluster: real processes started together on one empty
PostgreSQL schema; the first migrates and creates the queue, the others wait and find
nothing to do; no other command migrates there."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from digest.store.copy import head_revision
from tests.cli.test_cli import _env
from tests.conftest import POSTGRES_URL, TEST_SECRET_KEY, named_postgres_schema
from tests.store.test_migrations import _upgrade

pytest.importorskip("procrastinate")

PROCESSES = 4
PASSWORD = "pw-not-to-be-shown"


@pytest.fixture
def schema() -> Iterator[tuple[str, str]]:
    """A new, empty schema in the test PostgreSQL: its name and a URL whose
    search_path is it."""
    if not POSTGRES_URL:
        pytest.skip("DIGEST_TEST_POSTGRES_URL is not set")
    with named_postgres_schema() as (name, url):
        yield name, url


def _config(folder: Path, url: str, *, cluster: bool = True) -> Path:
    path = folder / "config.toml"
    path.write_text(
        'public_url = "http://127.0.0.1:8000"\n'
        f'secret_key = "{TEST_SECRET_KEY}"\n\n'
        f'[store]\nurl = "{url}"\n' + ('\n[cluster]\nqueue = "procrastinate"\n' if cluster else "")
    )
    return path


async def _together(n: int, *args: str, config: Path, **env: str) -> list[tuple[int, str, str]]:
    """``digest --config CONFIG ARGS`` as ``n`` processes started at once: the exit
    code, output and error output of each."""
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "digest.cli",
            "--config",
            str(config),
            *args,
            cwd=config.parent,
            env=_env(**env),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        for _ in range(n)
    ]
    outputs = await asyncio.wait_for(
        asyncio.gather(*(process.communicate() for process in processes)), timeout=120
    )
    return [
        (process.returncode or 0, out.decode(), err.decode())
        for process, (out, err) in zip(processes, outputs, strict=True)
    ]


def _objects(url: str, name: str) -> dict[str, int]:
    """How many tables, and how many Procrastinate types, the schema holds."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            tables = conn.execute(
                text("SELECT count(*) FROM pg_tables WHERE schemaname = :s"), {"s": name}
            ).scalar_one()
            types = conn.execute(
                text(
                    "SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
                    "WHERE n.nspname = :s AND t.typname = 'procrastinate_job_status'"
                ),
                {"s": name},
            ).scalar_one()
            return {"tables": tables, "queue types": types}
    finally:
        engine.dispose()


def _scalar(url: str, query: str) -> object:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text(query)).scalar()
    finally:
        engine.dispose()


def _execute(url: str, statement: str) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(statement))
    finally:
        engine.dispose()


def _revisions(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text("SELECT version_num FROM alembic_version")).scalars())
    finally:
        engine.dispose()


NOTE = "SELECT obj_description(to_regclass('procrastinate_jobs'), 'pg_class')"
QUEUE_PRESENT = f"queue schema present (procrastinate {version('procrastinate')})"
QUEUE_CREATED = f"queue schema created (procrastinate {version('procrastinate')})"


async def test_migrate_started_four_times_at_once_migrates_once(
    schema: tuple[str, str], tmp_path: Path
) -> None:
    name, url = schema
    head = head_revision()
    results = await _together(PROCESSES, "migrate", config=_config(tmp_path, url))
    assert [(code, err) for code, _, err in results] == [(0, "")] * PROCESSES
    outputs = sorted(out for _, out, _ in results)
    assert outputs == sorted(
        [f"store created at {head}\n{QUEUE_CREATED}\n"]
        + [f"store at {head}, nothing to do\n{QUEUE_PRESENT}\n"] * (PROCESSES - 1)
    )
    assert _revisions(url) == [head]
    assert _objects(url, name)["queue types"] == 1
    assert _scalar(url, NOTE) == f"procrastinate {version('procrastinate')}"
    assert _scalar(url, "SELECT to_regclass('procrastinate_jobs')::text") == "procrastinate_jobs"


async def test_migrate_twice_has_nothing_to_do_the_second_time(
    schema: tuple[str, str], tmp_path: Path
) -> None:
    _, url = schema
    head = head_revision()
    config = _config(tmp_path, url)
    assert await _together(1, "migrate", config=config) == [
        (0, f"store created at {head}\n{QUEUE_CREATED}\n", "")
    ]
    assert await _together(1, "migrate", config=config) == [
        (0, f"store at {head}, nothing to do\n{QUEUE_PRESENT}\n", "")
    ]


async def test_workers_refuse_an_unmigrated_store_and_create_nothing(
    schema: tuple[str, str], tmp_path: Path
) -> None:
    name, url = schema
    results = await _together(PROCESSES, "worker", config=_config(tmp_path, url))
    for code, out, err in results:
        assert code != 0 and out == ""
        assert err.count("\n") == 1, err
        assert err.startswith(f"error: the store at {make_url(url).render_as_string()}")
        assert "has no schema yet" in err
        assert "run `digest migrate` once (in a cluster no other command migrates)" in err
    assert _objects(url, name) == {"tables": 0, "queue types": 0}


async def test_other_commands_check_the_revision_and_do_not_migrate(
    schema: tuple[str, str], tmp_path: Path
) -> None:
    _, url = schema
    with_password = make_url(url).set(password=PASSWORD).render_as_string(hide_password=False)
    _upgrade(url, "0008")
    config = _config(tmp_path, with_password)
    head = head_revision()
    for command in (["status"], ["worker"], ["subscribers", "list"], ["serve", "--port", "0"]):
        [(code, out, err)] = await _together(1, *command, config=config)
        assert (code, out) == (1, ""), command
        # (`digest serve` first warns that a cluster counts its rate limits in memory.)
        err = "".join(line for line in err.splitlines(True) if not line.startswith("warning: "))
        assert err == (
            f"error: the store at {make_url(with_password)} is at revision 0008 but this "
            f"digest needs {head}: run `digest migrate` once (in a cluster no other command "
            "migrates)\n"
        )
        assert PASSWORD not in err
    assert _revisions(url) == ["0008"]

    # At the head, without the queue: still refused, still naming digest migrate.
    _upgrade(url, "head")
    [(code, out, err)] = await _together(1, "status", config=config)
    assert (code, out) == (1, "")
    assert "has no queue schema: run `digest migrate` once" in err
    assert _scalar(url, "SELECT to_regclass('procrastinate_jobs')::text") is None

    [(code, _, err)] = await _together(1, "migrate", config=config)
    assert (code, err) == (0, "")
    [(code, out, err)] = await _together(1, "status", config=config)
    assert (code, err) == (0, ""), err


async def test_migrate_names_the_queue_migrations_a_newer_procrastinate_ships(
    schema: tuple[str, str], tmp_path: Path
) -> None:
    from digest.cluster.schema import queue_migrations

    _, url = schema
    config = _config(tmp_path, url)
    [(code, _, err)] = await _together(1, "migrate", config=config)
    assert (code, err) == (0, "")
    installed = version("procrastinate")
    pending = queue_migrations("3.3.0", installed)
    assert pending, "this procrastinate ships no migration since 3.3.0"

    _execute(url, "COMMENT ON TABLE procrastinate_jobs IS 'procrastinate 3.3.0'")
    [(code, out, err)] = await _together(1, "migrate", config=config)
    assert code == 1 and out.endswith("queue schema present (procrastinate 3.3.0)\n")
    assert err.startswith("error: the queue schema was made by procrastinate 3.3.0 and ")
    assert ", ".join(pending) in err and err.count("\n") == 1

    # Recorded as the message says (as after applying them): nothing left to ask.
    _execute(url, f"COMMENT ON TABLE procrastinate_jobs IS 'procrastinate {installed}'")
    [(code, out, err)] = await _together(1, "migrate", config=config)
    assert (code, err) == (0, "") and out.endswith(QUEUE_PRESENT + "\n")

    # Made by the version of the newest migration: none since, the note moves on.
    major, minor, patch = (int(part) for part in pending[-1][:8].split("."))
    newest = f"{major}.{minor}.{patch}"
    _execute(url, f"COMMENT ON TABLE procrastinate_jobs IS 'procrastinate {newest}'")
    [(code, out, err)] = await _together(1, "migrate", config=config)
    assert (code, err) == (0, "") and out.endswith(QUEUE_PRESENT + "\n")
    assert _scalar(url, NOTE) == f"procrastinate {installed}"


async def test_migrate_in_a_cluster_without_procrastinate_is_a_config_error(
    schema: tuple[str, str], tmp_path: Path
) -> None:
    name, url = schema
    # A procrastinate that cannot be imported, first on the path: as if not installed.
    missing = tmp_path / "without" / "procrastinate"
    missing.mkdir(parents=True)
    (missing / "__init__.py").write_text("raise ImportError('procrastinate is not installed')\n")
    path = os.pathsep.join([str(missing.parent), os.environ.get("PYTHONPATH", "")])
    [(code, out, err)] = await _together(
        1, "migrate", config=_config(tmp_path, url), PYTHONPATH=path
    )
    assert (code, out) == (2, "")
    assert err == (
        'error: cluster.queue: is "procrastinate", which is not installed; install digest '
        "with its cluster extra: pip install 'digest[cluster]'\n"
    )
    assert _objects(url, name) == {"tables": 0, "queue types": 0}


#: One process opening the store as every command does off the cluster, with
#: Alembic's log of each migration it runs on stderr.
OPEN_STORE = """
import logging, sys
from digest.store import Store
logging.basicConfig(level=logging.WARNING, format="%(message)s")
logging.getLogger("alembic.runtime.migration").setLevel(logging.INFO)
Store.open(sys.argv[1], secret_key=sys.argv[2]).close()
"""


async def test_stores_opened_at_once_on_one_empty_schema_migrate_once(
    schema: tuple[str, str],
) -> None:
    """Without a cluster every process still migrates on opening the store: those that
    start together take turns, the first migrates and the others find it done."""
    _, url = schema
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            OPEN_STORE,
            url,
            TEST_SECRET_KEY,
            env=_env(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        for _ in range(PROCESSES)
    ]
    outputs = await asyncio.wait_for(
        asyncio.gather(*(process.communicate() for process in processes)), timeout=120
    )
    assert [process.returncode for process in processes] == [0] * PROCESSES, outputs
    logs = [err.decode() for _, err in outputs]
    first = [log for log in logs if "Running upgrade  -> 0001" in log]
    assert len(first) == 1, logs  # the first migration ran in one process, not in four
    assert sum("Running upgrade" in log for log in logs) == 1, logs
    assert _revisions(url) == [head_revision()]
