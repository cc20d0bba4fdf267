"""What a regular (non-editable) install carries: every package, and the bundled templates.

The digest's message templates live in templates/ at the top of the project; a wheel
carries them as digest/templates/. The installed copy is built from a copy of the
sources (a wheel when this setuptools can build one, else the files a wheel holds, by
setuptools' build_py) into a new virtual environment whose only other entries are the
dependencies, and run from a folder outside the project.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = sorted(p.name for p in (ROOT / "templates").glob("*.j2"))


def _listed_packages() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    packages: list[str] = config["tool"]["setuptools"]["packages"]
    return packages


def test_every_package_is_listed() -> None:
    setuptools = pytest.importorskip("setuptools")
    found = setuptools.find_packages(str(ROOT), include=["digest", "digest.*"])
    assert sorted(_listed_packages()) == sorted([*found, "digest.templates"])


def _run(*command: str | Path, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIGEST_", "PYTHON"))}
    done = subprocess.run(
        [str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"{command}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _can_build_wheels() -> bool:
    return (
        importlib.util.find_spec("wheel") is not None
        or importlib.util.find_spec("setuptools.command.bdist_wheel") is not None
    )


def _install(source: Path, site_packages: Path, tmp_path: Path) -> None:
    """Put what a wheel of ``source`` holds into ``site_packages``."""
    if _can_build_wheels():
        dist = tmp_path / "dist"
        _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
             "-w", dist, source, cwd=tmp_path)  # fmt: skip
        [wheel] = dist.glob("digest-*.whl")
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(site_packages)
    else:
        _run(sys.executable, "-c", "from setuptools import setup; setup()",
             "build_py", "--build-lib", site_packages, cwd=source)  # fmt: skip


def test_an_installed_copy_renders_with_the_bundled_templates(tmp_path: Path) -> None:
    pytest.importorskip("setuptools")
    source = tmp_path / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "digest", source / "digest", ignore=ignore)
    shutil.copytree(ROOT / "templates", source / "templates")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)

    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    site_packages = Path(
        _run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=venv)
        .strip()
    )  # fmt: skip
    # The dependencies from this environment, a folder on the path (its .pth files unread).
    (site_packages / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _install(source, site_packages, tmp_path)
    shutil.rmtree(source)  # nothing of the project left to fall back on

    installed = site_packages / "digest" / "templates"
    assert sorted(p.name for p in installed.glob("*.j2")) == TEMPLATES
    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(ROOT / "config.toml", site / "config.toml")
    shutil.copytree(ROOT / "examples", site / "examples")
    found = _run(python, "-c", "from digest.message import render; print(render.BUNDLED_TEMPLATES)",
                 cwd=site)  # fmt: skip
    assert Path(found.strip()) == installed
    _run(python, "-m", "digest.cli", "collect", cwd=site)
    html = _run(python, "-m", "digest.cli", "preview", "wochenueberblick", "--week", "2025-W05",
                cwd=site)  # fmt: skip
    assert "</html>" in html and "Wochenüberblick" in html
    text = _run(python, "-m", "digest.cli", "preview", "wochenueberblick", "--week", "2025-W05",
                "--format", "text", cwd=site)  # fmt: skip
    assert "Bayern:" in text
