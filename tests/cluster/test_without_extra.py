"""Without the cluster extra digest runs as ever, and asking for the cluster says what to
install; ``digest run`` refuses in a cluster and says what to start instead."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.cli.test_cli import site as site  # the fixture

# `digest` with procrastinate made unimportable, as on an install without the extra.
WITHOUT_PROCRASTINATE = (
    "import sys, runpy; sys.modules['procrastinate'] = None; "
    "sys.argv = ['digest'] + sys.argv[1:]; runpy.run_module('digest.cli', run_name='__main__')"
)
PG = "postgresql+psycopg://digest@db.invalid:5432/digest"


def _digest(site: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_PROCRASTINATE, *args],
        cwd=site,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_demo_runs_without_the_extra(site: Path) -> None:
    done = _digest(site, "demo")
    assert done.returncode == 0, done.stderr
    assert "procrastinate" not in done.stdout + done.stderr
    assert list((site / "outbox").glob("*.eml"))


def test_a_worker_without_the_extra_says_what_to_install(site: Path) -> None:
    done = _digest(site, "worker", DIGEST_STORE_URL=PG, DIGEST_CLUSTER_QUEUE="procrastinate")
    assert done.returncode == 2
    assert "pip install 'digest[cluster]'" in done.stderr
    assert "cluster.queue" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_worker_without_a_queue_configured_says_which_key(site: Path) -> None:
    done = _digest(site, "worker")
    assert done.returncode == 2
    assert "cluster.queue" in done.stderr and "digest run" in done.stderr


def test_a_queue_needs_a_postgresql_store(site: Path) -> None:
    done = _digest(site, "status", DIGEST_CLUSTER_QUEUE="procrastinate")  # SQLite: the demo's
    assert done.returncode == 2
    assert "cluster.queue" in done.stderr and "store.url" in done.stderr
    assert "(set by DIGEST_CLUSTER_QUEUE)" in done.stderr


def test_digest_run_in_a_cluster_says_to_start_workers(site: Path) -> None:
    done = _digest(site, "run", DIGEST_STORE_URL=PG, DIGEST_CLUSTER_QUEUE="procrastinate")
    assert done.returncode == 2
    assert "digest worker" in done.stderr
    assert "Traceback" not in done.stderr
