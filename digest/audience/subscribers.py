"""Import subscribers from CSV into the store.

Columns (header row required): ``email`` (required), ``name``, ``categories`` and
``regions`` (values separated by ``|``; empty means everything), ``locale``. Fields are
separated by commas, or by the semicolons German Excel writes (or tabs): the delimiter
is guessed from the first lines unless given. A bad row is reported with the line it
starts on and skipped; every good row, before and after it, is imported.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from digest.config import parse_locale
from digest.core.addresses import checked_address, email_key
from digest.core.errors import AddressError, DigestError, ImportRowError
from digest.core.models import Subscriber
from digest.store import Store

__all__ = [
    "COLUMNS",
    "DELIMITERS",
    "MAX_FIELD_CHARS",
    "ImportReport",
    "export_csv",
    "import_csv",
    "parse_rows",
    "sniff_delimiter",
]

COLUMNS = ("email", "name", "categories", "regions", "locale")

#: Longest value a column may hold. An address is at most 254 characters anyway; a
#: longer field is a broken row (a quote left open swallowing the rows after it).
MAX_FIELD_CHARS = 1000
#: Longest row read at all: every column at its longest, with room for quoting.
MAX_ROW_CHARS = 2 * MAX_FIELD_CHARS * len(COLUMNS)
#: The delimiters a file may use: comma, semicolon (German Excel's "CSV"), tab.
DELIMITERS = ",;\t"
#: How much of the start of a file the delimiter is guessed from.
_SNIFF_CHARS = 64 * 1024


@dataclass
class ImportReport:
    """What an import did (or, with ``dry_run``, would do): counts and skipped rows.

    ``suppressed`` holds the lines of rows whose address is on the suppression list (or
    whose subscriber bounced, complained or unsubscribed): they are not added, updated
    or reactivated. ``errors`` has one error per row skipped as invalid.
    """

    path: str
    list_name: str
    imported: int = 0
    updated: int = 0
    unchanged: int = 0
    suppressed: list[int] = field(default_factory=list)
    errors: list[ImportRowError] = field(default_factory=list)
    dry_run: bool = False

    @property
    def added(self) -> int:
        """The subscribers new to the store (``imported``)."""
        return self.imported


@dataclass(frozen=True)
class _Record:
    """One CSV record: the physical lines it spans and its text."""

    first_line: int
    last_line: int
    text: str
    closed: bool  # False when a quoted field is still open at the end of the file


# States of the record splitter, after the csv module's (excel dialect, not strict).
_START, _UNQUOTED, _QUOTED, _QUOTE_IN_QUOTED = range(4)


def sniff_delimiter(text: str) -> str:
    """The delimiter of CSV ``text`` as :class:`csv.Sniffer` guesses it from the first
    lines; a comma when it cannot tell or the header does not hold what it guessed."""
    lines = text[:_SNIFF_CHARS].splitlines()[:20]
    header = next((line for line in lines if line.strip()), "")
    try:
        found = csv.Sniffer().sniff("\n".join(lines), delimiters=DELIMITERS).delimiter
    except csv.Error:
        return ","
    return found if found in header else ","


def _records(text: str, delimiter: str = ",") -> Iterator[_Record]:
    """Split CSV text into records, each with the line it starts on.

    The csv module counts physical lines and reports the one a record ends on, and an
    error in one record (a field over its size limit) leaves it lost in the middle of
    the file. Splitting first, the way it quotes, lets each record be read on its own.
    """
    lines = io.StringIO(text, newline="")  # splits at \n, \r\n and \r, as csv does
    state, start = _START, 0
    parts: list[str] = []
    for number, line in enumerate(lines, start=1):
        if not parts:
            start = number
        parts.append(line)
        if state != _QUOTED and '"' not in line:
            state = _START
        else:
            for char in line.rstrip("\r\n"):
                if state == _QUOTED:
                    state = _QUOTE_IN_QUOTED if char == '"' else _QUOTED
                elif char == delimiter:
                    state = _START
                elif state in (_START, _QUOTE_IN_QUOTED):
                    # a quote opens a field, or after a closing one is an escaped quote
                    state = _QUOTED if char == '"' else _UNQUOTED
            if state == _QUOTED:
                continue  # a line break inside quotes belongs to the field
            state = _START
        yield _Record(start, number, "".join(parts), closed=True)
        parts = []
    if parts:
        yield _Record(start, start + len(parts) - 1, "".join(parts), closed=False)


def _fields(record: _Record, delimiter: str = ",") -> list[str]:
    """The fields of one record, or ImportRowError saying why it cannot be read."""
    where = (
        f" (the row runs to line {record.last_line})"
        if record.last_line > record.first_line
        else ""
    )
    if not record.closed:
        raise ImportRowError(
            record.first_line, f'a quoted field opened here is never closed{where}; close the "'
        )
    if len(record.text) > MAX_ROW_CHARS:
        raise ImportRowError(
            record.first_line,
            f"the row is {len(record.text):,} characters long, more than any subscriber "
            f'needs{where}; is a quote (") left open?',
        )
    try:
        rows = list(csv.reader(io.StringIO(record.text, newline=""), delimiter=delimiter))
    except csv.Error as exc:
        raise ImportRowError(record.first_line, f"cannot read the row: {exc}") from None
    return rows[0] if rows else []


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DigestError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DigestError(
            f"{path}: line {line}: not UTF-8 text (byte 0x{data[exc.start]:02X}); "
            "save the CSV as UTF-8"
        ) from None


def parse_rows(
    path: Path,
    list_name: str,
    *,
    categories: Collection[str],
    regions: Collection[str],
    smtputf8: bool = False,
    delimiter: str | None = None,
) -> tuple[list[tuple[int, Subscriber]], list[ImportRowError]]:
    """Read and validate every row; returns the good subscribers and the row errors.

    Rows are numbered by the line of the file they start on (the header is line 1).
    ``delimiter`` None: guessed (:func:`sniff_delimiter`). Raises DigestError only for
    what spoils the whole file: it cannot be read, is not UTF-8, or its header is wrong.
    """
    good: list[tuple[int, Subscriber]] = []
    errors: list[ImportRowError] = []
    region_names = {r.casefold(): r for r in regions}
    text = _read_text(path)
    delimiter = delimiter or sniff_delimiter(text)
    records = _records(text, delimiter)
    header: list[str] = []
    for record in records:
        try:
            header = _fields(record, delimiter)
        except ImportRowError as exc:
            raise DigestError(f"{path}: {exc}") from None
        if header:
            break
    if "email" not in header:
        shown = "a tab" if delimiter == "\t" else repr(delimiter)
        raise DigestError(
            f"{path}: line 1: the header has no 'email' column (columns: {', '.join(COLUMNS)}, "
            f"separated by {shown}; --delimiter names another)"
        )
    unknown = [c for c in header if c not in COLUMNS]
    if unknown:
        raise DigestError(
            f"{path}: line 1: unknown column {unknown[0]!r} (columns: {', '.join(COLUMNS)})"
        )
    first_seen: dict[str, int] = {}
    for record in records:
        line = record.first_line
        try:
            values = _fields(record, delimiter)
            if not values:
                continue  # a blank line
            if len(values) > len(header):
                raise ImportRowError(line, "more fields than columns")
            row = dict(zip(header, values, strict=False))
            for column, value in row.items():
                if len(value) > MAX_FIELD_CHARS:
                    raise ImportRowError(
                        line,
                        f"the {column} field is {len(value):,} characters long "
                        f"(at most {MAX_FIELD_CHARS:,})",
                    )
            subscriber = _subscriber(row, line, list_name, categories, region_names, smtputf8)
            key = email_key(subscriber.email)
            if key in first_seen:
                raise ImportRowError(
                    line,
                    f"{subscriber.email} appears twice in this file (first on line "
                    f"{first_seen[key]}, in any spelling)",
                )
            first_seen[key] = line
            good.append((line, subscriber))
        except ImportRowError as exc:
            errors.append(exc)
    return good, errors


def _split(value: str | None) -> frozenset[str]:
    return frozenset(v.strip() for v in (value or "").split("|") if v.strip())


def _subscriber(
    row: dict[str, str],
    line: int,
    list_name: str,
    categories: Collection[str],
    regions: dict[str, str],
    smtputf8: bool,
) -> Subscriber:
    raw = (row.get("email") or "").strip()
    if not raw:
        raise ImportRowError(line, "the email column is empty")
    try:
        email = checked_address(raw, smtputf8=smtputf8)
    except AddressError as exc:
        raise ImportRowError(line, exc.problem) from None
    chosen = _split(row.get("categories"))
    bad = sorted(chosen - set(categories))
    if bad:
        raise ImportRowError(
            line, f"unknown category {bad[0]!r} (known: {', '.join(sorted(categories))})"
        )
    chosen_regions = set()
    for region in _split(row.get("regions")):
        if region.casefold() not in regions:
            raise ImportRowError(line, f"unknown region {region!r}")
        chosen_regions.add(regions[region.casefold()])
    locale = (row.get("locale") or "").strip() or None
    if locale:
        try:
            parse_locale(locale)
        except ValueError as exc:
            raise ImportRowError(line, str(exc)) from None
    name = " ".join((row.get("name") or "").split())
    return Subscriber(
        email=email,
        name=name,
        lists=frozenset({list_name}),
        categories=chosen,
        regions=frozenset(chosen_regions),
        locale=locale,
    )


def import_csv(
    store: Store,
    path: Path,
    list_name: str,
    *,
    categories: Collection[str],
    regions: Collection[str],
    smtputf8: bool = False,
    consent: str,
    dry_run: bool = False,
    delimiter: str | None = None,
) -> ImportReport:
    """Import the good rows of ``path`` into ``list_name``; re-importing updates in place.

    The good rows go in as one transaction: all of them or, if the store fails, none.
    ``consent`` is the operator's statement of how these readers consented; it is kept
    as proof with every new membership. ``dry_run`` checks and counts everything as the
    import would, then writes nothing. ``smtputf8``: the relay takes addresses with a
    non-ASCII local part (smtp.smtputf8). ``delimiter``: see :func:`parse_rows`.
    """
    consent = " ".join(consent.split())
    if not consent:
        raise DigestError("the consent statement is empty; say how these readers consented")
    report = ImportReport(str(path), list_name, dry_run=dry_run)
    good, report.errors = parse_rows(
        path,
        list_name,
        categories=categories,
        regions=regions,
        smtputf8=smtputf8,
        delimiter=delimiter,
    )
    counts = store.import_subscribers(good, list_name, consent=consent, dry_run=dry_run)
    report.imported, report.updated = counts.imported, counts.updated
    report.unchanged, report.suppressed = counts.unchanged, counts.suppressed
    return report


def export_csv(store: Store, list_name: str) -> str:
    """The active subscribers of ``list_name`` as CSV in the import's columns."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for subscriber, _status in store.subscriber_rows(list_name=list_name, status="active"):
        writer.writerow(
            [
                subscriber.email,
                subscriber.name,
                "|".join(sorted(subscriber.categories)),
                "|".join(sorted(subscriber.regions)),
                subscriber.locale or "",
            ]
        )
    return out.getvalue()
