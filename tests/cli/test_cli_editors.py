"""`digest editors add/list/remove` and `digest approve`, run as a person runs them."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from digest.config import load_settings
from digest.ops.jobs import open_store
from tests.cli.test_cli import _env, site  # noqa: F401  (the fixture)


async def digest_with_input(*args: str, cwd: Path, stdin: str = "") -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "digest.cli", *args, cwd=cwd, env=_env(),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(stdin.encode()), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_add_list_and_remove_editors(site: Path) -> None:  # noqa: F811
    add = ("editors", "add", "erika", "--email", "erika@example.org", "--password-stdin")
    code, out, _ = await digest_with_input(*add, cwd=site, stdin="correct horse battery\n")
    assert code == 0 and "added editor erika" in out
    code, _, err = await digest_with_input(*add, cwd=site, stdin="correct horse battery\n")
    assert code == 1 and "already an editor named 'erika'" in err
    code, _, err = await digest_with_input(
        "editors", "add", "kurz", "--email", "k@example.org", "--password-stdin",
        cwd=site, stdin="short\n",
    )  # fmt: skip
    assert code == 1 and "at least 10 characters" in err
    code, out, _ = await digest_with_input("editors", "list", cwd=site)
    assert code == 0 and out.startswith("erika\terika@example.org\t")
    store = open_store(load_settings(site / "config.toml"))
    try:
        [editor] = store.editors()
        assert editor.password_hash.startswith("$argon2id$")
        assert "correct horse" not in editor.password_hash
    finally:
        store.close()
    code, out, _ = await digest_with_input("editors", "remove", "erika", cwd=site)
    assert code == 0
    code, _, err = await digest_with_input("editors", "remove", "erika", cwd=site)
    assert code == 1 and "no editor named 'erika'" in err


async def test_roles_are_given_when_added_and_changed_later(site: Path) -> None:  # noqa: F811
    password = "correct horse battery\n"
    add = ("editors", "add", "anna", "--email", "anna@example.org", "--password-stdin")
    code, out, _ = await digest_with_input(*add, "--role", "admin", cwd=site, stdin=password)
    assert code == 0 and "added admin anna" in out
    code, out, _ = await digest_with_input(
        "editors", "add", "erika", "--email", "erika@example.org", "--password-stdin",
        cwd=site, stdin=password,
    )  # fmt: skip
    assert code == 0 and "added editor erika" in out  # without --role: the lesser role
    code, _, err = await digest_with_input(
        "editors", "add", "max", "--email", "max@example.org", "--role", "owner",
        "--password-stdin", cwd=site, stdin=password,
    )  # fmt: skip
    assert code != 0 and "'owner' is not one of 'editor', 'admin'" in err
    code, out, _ = await digest_with_input("editors", "list", cwd=site)
    roles = {line.split("\t")[0]: line.split("\t")[-1] for line in out.splitlines()}
    assert code == 0 and roles == {"anna": "admin", "erika": "editor"}

    code, out, _ = await digest_with_input("editors", "role", "erika", "admin", cwd=site)
    assert code == 0 and out.strip() == "erika is now an admin"
    code, out, _ = await digest_with_input("editors", "role", "anna", "editor", cwd=site)
    assert code == 0 and out.strip() == "anna is now an editor"
    code, _, err = await digest_with_input("editors", "role", "niemand", "admin", cwd=site)
    assert code == 1 and err.strip() == "error: no editor named 'niemand'"
    code, _, err = await digest_with_input("editors", "role", "erika", "chef", cwd=site)
    assert code != 0 and "'chef' is not one of 'editor', 'admin'" in err
    store = open_store(load_settings(site / "config.toml"))
    try:
        assert {e.name: e.role for e in store.editors()} == {"anna": "editor", "erika": "admin"}
    finally:
        store.close()


async def test_approve_records_who_and_refuses_nothing_twice(site: Path) -> None:  # noqa: F811
    config = site / "config.toml"
    text = config.read_text()
    config.write_text(
        text.replace('id = "wochenueberblick"\n', 'id = "wochenueberblick"\nreview = "required"\n')
    )
    args = ("approve", "wochenueberblick", "--week", "2025-W05", "--editor", "erika")
    code, out, _ = await digest_with_input(*args, cwd=site)
    assert code == 0 and "2025-W05: approved" in out
    code, out, _ = await digest_with_input(*args, cwd=site)
    assert code == 0 and "was approved before" in out
    store = open_store(load_settings(config))
    try:
        approval = store.approval("wochenueberblick", "2025-W05")
        assert approval is not None and approval.approved_by == "erika"
    finally:
        store.close()
    code, _, err = await digest_with_input("approve", "wochenueberblick", "--week", "W5", cwd=site)
    assert code != 0 and "bad week" in err
