"""A SQLite store holds names, addresses and consent proofs: its files are the owner's alone."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from digest.core.models import Subscriber
from digest.store import Store


@pytest.fixture(autouse=True)
def _usual_umask() -> Iterator[None]:
    """Under the usual umask (022) a file is created 0644 unless the code asks for less."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_database_wal_and_shm_are_created_readable_by_the_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "digest.db"
    store = Store.open(f"sqlite:///{path}", secret_key="test-secret-key-0123456789")
    try:
        store.save_subscriber(Subscriber("a@example.org", "Anna"), ["allgemein"])
        files = [path, path.with_name("digest.db-wal"), path.with_name("digest.db-shm")]
        assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in files} == {
            p.name: 0o600 for p in files
        }
    finally:
        store.close()


def test_an_existing_database_keeps_its_mode(tmp_path: Path) -> None:
    """The operator's choice for a file that exists stands (e.g. a group for backups)."""
    path = tmp_path / "digest.db"
    Store.open(f"sqlite:///{path}").close()
    path.chmod(0o640)
    Store.open(f"sqlite:///{path}").close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
