"""How the demo tells the user to call ``digest``: only in a way that works from there."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from digest.ops.demo import command_prefix


def _script(bin_dir: Path) -> Path:
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / "digest"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    return script


@pytest.fixture
def venv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder with ``.venv/bin/python`` as the running interpreter."""
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    monkeypatch.setattr(sys, "executable", str(bin_dir / "python"))
    monkeypatch.setattr(sys, "argv", [str(tmp_path / "elsewhere" / "digest")])
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    return tmp_path


def test_bare_name_when_the_path_finds_this_program(
    venv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = _script(venv / ".venv" / "bin")
    monkeypatch.setenv("PATH", str(script.parent))
    assert command_prefix(venv) == "digest"


def test_bare_name_when_the_path_finds_the_script_that_was_run(
    venv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = _script(venv / "bin")
    monkeypatch.setattr(sys, "argv", [str(script), "demo"])
    monkeypatch.setenv("PATH", str(script.parent))
    assert command_prefix(venv) == "digest"


def test_script_beside_the_interpreter_when_the_path_does_not_find_it(venv: Path) -> None:
    _script(venv / ".venv" / "bin")
    assert command_prefix(venv) == ".venv/bin/digest"
    assert command_prefix(venv / ".venv" / "bin") == "./digest"


def test_another_digest_on_the_path_is_not_this_one(
    venv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _script(venv / ".venv" / "bin")
    other = _script(venv / "other")
    monkeypatch.setenv("PATH", str(other.parent))
    assert command_prefix(venv) == ".venv/bin/digest"


def test_full_path_rather_than_climbing_out(venv: Path) -> None:
    script = _script(venv / ".venv" / "bin")
    (venv / "work").mkdir()
    assert command_prefix(venv / "work") == str(script)


def test_the_module_when_there_is_no_script(venv: Path) -> None:
    assert command_prefix(venv) == f"{venv}/.venv/bin/python -m digest.cli"
