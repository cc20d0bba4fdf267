"""The lock files in requirements/ hold what pyproject.toml asks for: every dependency, of
digest and of its extras, pinned at a version within its range and with the hashes of its
files; and what the app lock pins, the test lock pins alike. Read from the files alone."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
APP_LOCK = "requirements/app.txt"
TEST_LOCK = "requirements/test.txt"
TOOLS = "requirements/tools.in"
# What the lock files are resolved for (see their header): a marker is evaluated for it.
TARGET = {
    "python_version": "3.11",
    "python_full_version": "3.11.0",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}


@dataclass(frozen=True)
class Pin:
    version: str
    hashes: frozenset[str]


def read_lock(name: str, text: str) -> dict[str, Pin]:
    """The pins of a lock file (``name==version --hash=...`` lines), by canonical name."""
    pins: dict[str, Pin] = {}
    for number, line in _logical_lines(text):
        first, *options = line.split()
        try:
            req = Requirement(first)
        except InvalidRequirement:
            req = None
        specs = list(req.specifier) if req else []
        if not req or len(specs) != 1 or specs[0].operator != "==":
            raise ValueError(f"{name} line {number} is not a pinned requirement: {line}")
        hashes = frozenset(o.split("=", 1)[1] for o in options if o.startswith("--hash="))
        pins[canonicalize_name(req.name)] = Pin(specs[0].version, hashes)
    return pins


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Lines without comments, continuations (a trailing backslash) joined, numbered."""
    found: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = re.sub(r"(^|\s)#.*$", "", raw).rstrip()
        start, sofar = pending or (number, "")
        if line.endswith("\\"):
            pending = (start, f"{sofar} {line[:-1].strip()}")
            continue
        pending = None
        joined = f"{sofar} {line.strip()}".strip()
        if joined:
            found.append((start, joined))
    return found


def wanted(pyproject: dict, tools_in: str, extras: list[str]) -> list[tuple[Requirement, str]]:
    """Each requirement a lock must satisfy for digest with ``extras``, and where it is from."""
    project = pyproject["project"]
    wants = [(r, "pyproject.toml") for r in project["dependencies"]]
    for extra in extras:
        source = f"pyproject.toml's extra {extra}"
        wants += [(r, source) for r in project["optional-dependencies"][extra]]
    wants += [(r, "pyproject.toml's [build-system]") for r in pyproject["build-system"]["requires"]]
    wants += [(line, TOOLS) for _, line in _logical_lines(tools_in)]
    return [(Requirement(text), source) for text, source in wants]


def lock_problems(
    lock: str, pins: dict[str, Pin], wants: list[tuple[Requirement, str]]
) -> list[str]:
    """One sentence per requirement of ``wants`` that the pins of ``lock`` do not meet."""
    problems = []
    for req, source in wants:
        if req.marker and not req.marker.evaluate(TARGET):
            continue  # not needed on what the lock is for
        pin = pins.get(canonicalize_name(req.name))
        if pin is None:
            problems.append(f"{lock} pins no {req.name}, which {source} asks for as {req}")
        elif not req.specifier.contains(pin.version, prereleases=True):
            problems.append(f"{lock} pins {req.name} {pin.version}, outside {source}'s {req}")
    for name, pin in pins.items():
        if not pin.hashes:
            problems.append(f"{lock} pins {name} {pin.version} without a hash")
    return [f"{problem}: run `make lock`." for problem in problems]


def same_pins(app: dict[str, Pin], test: dict[str, Pin]) -> list[str]:
    """What the app lock pins and the test lock does not pin alike (tests test what runs)."""
    problems = []
    for name, pin in app.items():
        other = test.get(name)
        if other != pin:
            theirs = other.version if other else "nothing"
            theirs += " with other hashes" if other and other.version == pin.version else ""
            problems.append(f"{APP_LOCK} pins {name} {pin.version} but {TEST_LOCK} {theirs}")
    return [f"{problem}: run `make lock`." for problem in problems]


def _problems(pyproject_text: str, app_text: str, test_text: str) -> list[str]:
    pyproject = tomllib.loads(pyproject_text)
    tools_in = (ROOT / TOOLS).read_text()
    all_extras = sorted(pyproject["project"]["optional-dependencies"])
    app, test = read_lock(APP_LOCK, app_text), read_lock(TEST_LOCK, test_text)
    app_extras = [e for e in all_extras if e != "test"]
    return (
        lock_problems(TEST_LOCK, test, wanted(pyproject, tools_in, all_extras))
        + lock_problems(APP_LOCK, app, wanted(pyproject, tools_in, app_extras))
        + same_pins(app, test)
    )


def _read(path: str) -> str:
    return (ROOT / path).read_text()


def test_lock_files_hold_what_pyproject_asks_for() -> None:
    problems = _problems(_read("pyproject.toml"), _read(APP_LOCK), _read(TEST_LOCK))
    assert not problems, "\n".join(problems)


def test_lock_files_pin_the_cluster_and_postgres_extras() -> None:
    for lock in (APP_LOCK, TEST_LOCK):
        pins = read_lock(lock, _read(lock))
        assert {"procrastinate", "psycopg", "psycopg-binary", "pip", "setuptools"} <= set(pins)
    assert {"pytest", "playwright", "mypy"} <= set(read_lock(TEST_LOCK, _read(TEST_LOCK)))


def test_a_stale_lock_is_named_by_package() -> None:
    pyproject = _read("pyproject.toml")
    assert '"httpx>=0.27",' in pyproject and '"pytest>=8",' in pyproject
    newer = pyproject.replace('"httpx>=0.27",', '"httpx>=99",', 1)
    newer = newer.replace('"pytest>=8",', '"pytest>=8",\n    "left-out-pkg>=1",', 1)
    problems = _problems(newer, _read(APP_LOCK), _read(TEST_LOCK))
    version = read_lock(TEST_LOCK, _read(TEST_LOCK))["httpx"].version
    assert problems == [
        f"{TEST_LOCK} pins httpx {version}, outside pyproject.toml's httpx>=99: run `make lock`.",
        f"{TEST_LOCK} pins no left-out-pkg, which pyproject.toml's extra test asks for as "
        "left-out-pkg>=1: run `make lock`.",
        f"{APP_LOCK} pins httpx {version}, outside pyproject.toml's httpx>=99: run `make lock`.",
    ]


def test_a_pin_without_hash_or_unlike_the_other_lock_is_named() -> None:
    app, test = _read(APP_LOCK), _read(TEST_LOCK)
    version = read_lock(TEST_LOCK, test)["click"].version
    test, found = re.subn(
        r"^(click==\S+) \\\n(?:    --hash=\S+(?: \\)?\n)+", r"\1\n", test, flags=re.M
    )
    assert found == 1, "click is pinned with hashes in the test lock"
    app = app.replace(f"click=={version} ", "click==0.1 ", 1)
    problems = _problems(_read("pyproject.toml"), app, test)
    assert problems == [
        f"{TEST_LOCK} pins click {version} without a hash: run `make lock`.",
        f"{APP_LOCK} pins click 0.1, outside pyproject.toml's click>=8.1: run `make lock`.",
        f"{APP_LOCK} pins click 0.1 but {TEST_LOCK} {version}: run `make lock`.",
    ]


def test_a_line_that_is_no_pin_is_refused() -> None:
    refused = r"^x\.txt line 2 is not a pinned requirement: httpx>=0\.27 --hash=sha256:00$"
    with pytest.raises(ValueError, match=refused):
        read_lock("x.txt", "# header\nhttpx>=0.27 \\\n    --hash=sha256:00\n")
