"""``digest editors``: the accounts of the editors' area."""

from __future__ import annotations

import sys

import click

from digest.cli.base import cli, common, example, state
from digest.core.errors import DigestError


@cli.group(epilog=example("digest editors add erika --email erika@example.org"))
def editors() -> None:
    """Accounts of the editors' area of `digest serve` (/admin).

    Editors edit and approve issues; admins also see readers' personal data and handle
    their requests (search, export, unsubscribe, erase).
    """


_ROLE = click.Choice(["editor", "admin"])


@editors.command(
    "add", epilog=example("digest editors add erika --email erika@example.org --role admin")
)
@click.argument("name")
@click.option("--email", required=True, help="Address that receives the review requests.")
@click.option(
    "--role",
    type=_ROLE,
    default="editor",
    show_default=True,
    help="editor: edits and approves issues; admin: also handles readers' requests.",
)
@click.option(
    "--password-stdin", is_flag=True, help="Read the password from standard input (one line)."
)
@common
def add_editor_command(name: str, email: str, role: str, password_stdin: bool) -> None:
    """Create the editor NAME; the password is asked twice (or read with --password-stdin).

    Only an argon2 hash of the password is stored.
    """
    from digest.issue.editors import add_editor
    from digest.ops import jobs

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    settings = state().settings()
    store = jobs.open_store(settings)
    try:
        editor = add_editor(store, name, email, password, role=role)
    finally:
        store.close()
    click.echo(f"added {editor.role} {editor.name} <{editor.email}>")


@editors.command("list", epilog=example("digest editors list"))
@common
def list_editors() -> None:
    """One tab-separated line per editor: name, email address, created, role."""
    from digest.ops import jobs

    settings = state().settings()
    store = jobs.open_store(settings)
    try:
        found = store.editors()
    finally:
        store.close()
    for editor in found:
        created = f"{editor.created_at:%Y-%m-%d %H:%M} UTC"
        click.echo(f"{editor.name}\t{editor.email}\t{created}\t{editor.role}")
    if not found:
        click.echo("no editors; add one with `digest editors add NAME --email ADDRESS`")


@editors.command("role", epilog=example("digest editors role erika admin"))
@click.argument("name")
@click.argument("role", type=_ROLE)
@common
def role_command(name: str, role: str) -> None:
    """Give the editor NAME the ROLE editor or admin; it holds from their next page on."""
    from digest.issue.editors import set_role
    from digest.ops import jobs

    settings = state().settings()
    store = jobs.open_store(settings)
    try:
        set_role(store, name, role)
    finally:
        store.close()
    click.echo(f"{name} is now an {role}")


@editors.command("remove", epilog=example("digest editors remove erika"))
@click.argument("name")
@common
def remove_editor(name: str) -> None:
    """Delete the editor NAME and end their logins; their edits keep their name."""
    from digest.ops import jobs

    settings = state().settings()
    store = jobs.open_store(settings)
    try:
        removed = store.remove_editor(name)
    finally:
        store.close()
    if not removed:
        raise DigestError(f"no editor named {name!r}")
    click.echo(f"removed editor {name}")
