"""``digest subscribers``: import, list, export and erase subscribers."""

from __future__ import annotations

from pathlib import Path

import click

from digest.cli.base import CannotWrite, cli, common, echo_err, example, state
from digest.config import Settings
from digest.core.errors import DigestError


@cli.group(epilog=example("digest subscribers list --list allgemein --status active"))
def subscribers() -> None:
    """Manage subscribers: import, list, export, erase."""


@subscribers.command(
    "import",
    epilog=example(
        "digest subscribers import subscribers/allgemein.csv --list allgemein "
        '--consent "Messe 2024, Formular mit Double-Opt-in" --dry-run'
    ),
)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--list", "list_name", required=True, help="List the subscribers join.")
@click.option(
    "--consent",
    required=True,
    metavar="TEXT",
    help="How these readers consented; kept as proof with each new membership.",
)
@click.option("--dry-run", is_flag=True, help="Check and count every row, write nothing.")
@click.option(
    "--delimiter",
    metavar="CHAR",
    callback=lambda _ctx, _param, value: _delimiter(value),
    help='What separates the fields: "," or ";" or "tab" (default: guessed from the file).',
)
@common
def import_(file: Path, list_name: str, consent: str, dry_run: bool, delimiter: str | None) -> None:
    """Import subscribers from a CSV file into a list.

    Columns: email, name, categories, regions, locale (categories and regions separated
    by "|"; empty means everything). Fields are separated by commas, or by semicolons as
    German Excel saves "CSV": the delimiter is guessed unless --delimiter names it. Each
    bad row is reported with the line it starts on (the first 1000 of them; the rest are
    counted) and skipped; every good row is imported, and the exit code is then 1 so
    that a script notices. Addresses are unique in any spelling: a row whose address
    differs from a stored one only in case updates that subscriber. An address on the
    suppression list (unsubscribed, bounced, complained, erased) is counted as suppressed
    and neither added nor reactivated. The good rows go in as one transaction: all of
    them, or none if the store fails.
    """
    from digest.audience.subscribers import import_csv
    from digest.ops import jobs

    settings = state().settings()
    categories = {c.key for n in settings.newsletters for c in n.categories}
    regions = {r for n in settings.newsletters for r in n.regions}
    store = jobs.open_store(settings)
    try:
        report = import_csv(
            store,
            file,
            list_name,
            categories=categories,
            regions=regions,
            smtputf8=settings.smtp.smtputf8,
            consent=consent,
            dry_run=dry_run,
            delimiter=delimiter,
        )
    finally:
        store.close()
    if unused := _unused_list(settings, list_name):
        echo_err(f"warning: {unused}")
    for error in report.errors:
        echo_err(f"warning: {file}: {error}; row skipped")
    unlisted = report.error_count - len(report.errors)
    if unlisted:
        echo_err(
            f"warning: {file}: {unlisted} more rows skipped; "
            f"only the first {len(report.errors)} are listed"
        )
    for line in report.suppressed[:20]:
        echo_err(f"note: {file}: line {line}: the address is suppressed; row not imported")
    skipped = f"{report.error_count} skipped"
    if report.errors:
        lines = ", ".join(str(e.line) for e in report.errors[:20])
        more = ", …" if report.error_count > 20 else ""
        skipped += f" (lines {lines}{more})"
    click.echo(
        f"{file}: {report.imported} imported, {report.updated} updated, "
        f"{report.unchanged} unchanged, {report.suppressed_count} suppressed, {skipped} "
        f"in list {list_name!r}" + ("; dry run, nothing written" if dry_run else "")
    )
    if report.error_count:
        raise SystemExit(1)


def _delimiter(value: str | None) -> str | None:
    """The --delimiter as one character ("tab" and "\\t" for a tab)."""
    if value is None:
        return None
    if value.lower() in ("tab", "\\t"):
        return "\t"
    if len(value) != 1 or value in '"|\r\n' or value.isalnum():
        raise click.BadParameter(
            f"{value!r} is not a delimiter; give one character such as ',' or ';', or 'tab'"
        )
    return value


def _unused_list(settings: Settings, list_name: str) -> str | None:
    """What to say when no segment of any newsletter draws on ``list_name``."""
    import difflib

    from digest.audience.memberships import newsletters_by_list

    used = sorted(newsletters_by_list(settings))
    if list_name in used:
        return None
    # Both ways round: SequenceMatcher's ratio depends on the order of its arguments.
    score = {
        name: max(
            difflib.SequenceMatcher(None, list_name, name).ratio(),
            difflib.SequenceMatcher(None, name, list_name).ratio(),
        )
        for name in used
    }
    close = [name for name in sorted(used, key=lambda n: -score[n]) if score[name] >= 0.5]
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return (
        f"no segment of any newsletter draws on the list {list_name!r}, so its readers "
        f"get no newsletter (lists in use: {', '.join(used) or 'none'}){hint}"
    )


@subscribers.command(
    "list", epilog=example("digest subscribers list --list allgemein --status unsubscribed")
)
@click.option("--list", "list_name", help="Only the subscribers of this list.")
@click.option(
    "--status",
    help="Only subscribers with this status (active, unsubscribed, bounced, complained, "
    "suppressed, erased); on --list, the state of that membership.",
)
@common
def list_(list_name: str | None, status: str | None) -> None:
    """Show how many subscribers have each status, then one row per subscriber.

    Rows are tab-separated: email, name, status, and each list with the state of that
    membership (allgemein:unsubscribed,bayern:active). A reader unsubscribes from a
    newsletter (one click, the preferences, a mail): a membership is 'unsubscribed'
    once its reader has left every newsletter whose segments draw on that list. The
    status is 'unsubscribed' once no membership is active; with --list, it is the
    state of that membership.
    """
    from digest.audience.memberships import list_subscribers
    from digest.ops import jobs

    settings = state().settings()
    store = jobs.open_store(settings)
    try:
        counts, rows = list_subscribers(settings, store, list_name=list_name, status=status)
    finally:
        store.close()
    total = sum(counts.values())
    parts = ", ".join(f"{n} {name}" for name, n in sorted(counts.items()))
    where = f" in list {list_name!r}" if list_name else ""
    click.echo(f"{total} subscribers{where}" + (f": {parts}" if parts else ""))
    for row in rows:
        subscriber = row.subscriber
        click.echo(f"{subscriber.email}\t{subscriber.name}\t{row.status}\t{row.memberships_text()}")


@subscribers.command(
    "export",
    epilog=example(
        "digest subscribers export anna@example.org > anna.json\n"
        "    digest subscribers export --list allgemein -o allgemein.csv"
    ),
)
@click.argument("email", required=False)
@click.option("--list", "list_name", help="Write this list as CSV (the import's columns).")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to this file instead of stdout (readable by its owner only).",
)
@common
def export(email: str | None, list_name: str | None, output: Path | None) -> None:
    """Export everything held about EMAIL as JSON, or a list as CSV.

    For EMAIL (DSGVO Art. 15 and 20): attributes, memberships and unsubscriptions,
    consent proofs, sign-ups (also those waiting for their confirmation) and the mail
    queued for them, every delivery (issue, time, state, SMTP reply), the suppression
    entries of the address, also when no subscriber has it, and when an admin searched,
    viewed, exported, unsubscribed or erased it in /admin (the audit log). With --list: the list's
    active subscribers, in columns the import reads back.
    """
    from digest.audience.requests import export_document, export_json
    from digest.audience.subscribers import export_csv
    from digest.ops import jobs

    if (email is None) == (list_name is None):
        raise click.UsageError("give either EMAIL or --list NAME")
    settings = state().settings()
    store = jobs.open_store(settings)
    try:
        if list_name is not None:
            text = export_csv(store, list_name)
        else:
            assert email is not None
            document = export_document(store, email)
            if document is None:
                raise DigestError(f"nothing is held about the address {email}")
            text = export_json(document)
    finally:
        store.close()
    if output:
        from digest.core.files import write_private

        try:
            write_private(output, text.encode("utf-8"))
        except OSError as exc:
            raise CannotWrite(f"cannot write {output}: {exc.strerror or exc}") from exc
        click.echo(f"wrote {output}")
    else:
        click.echo(text, nl=False)


@subscribers.command("erase", epilog=example("digest subscribers erase anna@example.org --yes"))
@click.argument("email")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@common
def erase(email: str, yes: bool) -> None:
    """Delete the personal data of EMAIL and never mail the address again (DSGVO Art. 17).

    The subscriber's address, name, interests, memberships and consent proofs are
    deleted, and so are sign-ups waiting for their confirmation and their queued mail;
    delivery rows keep only issue, state and time. A keyed hash of the address
    stays on the suppression list, so a later import does not add it again. An address
    nobody has is suppressed all the same, and the exit code is 1.
    """
    from digest.ops import jobs

    if not yes:
        click.confirm(f"Erase every personal data of {email}? This cannot be undone", abort=True)
    settings = state().settings()
    store = jobs.open_store(settings)
    try:
        erased = store.erase(email)
    finally:
        store.close()
    if not erased:
        raise DigestError(
            f"no subscriber or sign-up has the address {email}; it is suppressed all the same"
        )
    click.echo(f"erased {email}; the address stays on the suppression list")
