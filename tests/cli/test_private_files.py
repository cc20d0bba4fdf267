"""Files the commands write with personal data in them are the owner's alone (0600).

The commands run as processes under the usual umask 022, which would leave a new file
readable by everyone (0644).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.test_cli import digest
from tests.conftest import ROOT


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Path]:
    shutil.copy(ROOT / "config.toml", tmp_path / "config.toml")
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    shutil.copytree(ROOT / "subscribers", tmp_path / "subscribers")
    before = os.umask(0o022)
    try:
        yield tmp_path
    finally:
        os.umask(before)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_exports_are_readable_by_their_owner_only(site: Path) -> None:
    code, _, err = await digest(
        "subscribers", "import", "subscribers/bayern.csv", "--list", "bayern",
        "--consent", "Demo", cwd=site,
    )  # fmt: skip
    assert code == 0, err
    code, out, err = await digest(
        "subscribers", "export", "--list", "bayern", "-o", "l.csv", cwd=site
    )
    assert (code, out) == (0, "wrote l.csv\n"), err
    assert _mode(site / "l.csv") == 0o600
    address = (site / "l.csv").read_text(encoding="utf-8").splitlines()[1].split(",")[0]

    # A file already there, readable by everyone, is the owner's alone once it holds the data.
    (site / "person.json").write_text("{}")
    os.chmod(site / "person.json", 0o644)
    code, _, err = await digest("subscribers", "export", address, "-o", "person.json", cwd=site)
    assert code == 0, err
    assert _mode(site / "person.json") == 0o600
    assert json.loads((site / "person.json").read_text())["subscriber"]["email"] == address

    # Not a regular file: written as it is.
    code, out, err = await digest(
        "subscribers", "export", "--list", "bayern", "-o", "/dev/stdout", cwd=site
    )
    assert code == 0, err
    assert out.startswith("email,name,categories,regions,locale\n") and address in out


async def test_previews_are_readable_by_their_owner_only(site: Path) -> None:
    assert (await digest("collect", cwd=site))[0] == 0
    code, _, err = await digest(
        "subscribers", "import", "subscribers/bayern.csv", "--list", "bayern",
        "--consent", "Demo", cwd=site,
    )  # fmt: skip
    assert code == 0, err
    week = ("preview", "wochenueberblick", "--week", "2025-W05")
    code, _, err = await digest(
        *week, "--subscriber", "juergen.boehm@example.org", "--format", "eml", "-o", "p.eml",
        cwd=site,
    )  # fmt: skip
    assert code == 0, err
    assert _mode(site / "p.eml") == 0o600
    assert b"juergen.boehm@example.org" in (site / "p.eml").read_bytes()
    code, _, err = await digest(*week, "-o", "p.html", cwd=site)
    assert code == 0, err
    assert _mode(site / "p.html") == 0o600
