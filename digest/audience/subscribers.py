"""Import subscribers from CSV into the store.

Columns (header row required): ``email`` (required), ``name``, ``categories`` and
``regions`` (values separated by ``|``; empty means everything), ``locale``. Fields are
separated by commas, or by the semicolons German Excel writes (or tabs): the delimiter
is guessed from the first lines unless given. A bad row is reported with the line it
starts on and skipped; every good row, before and after it, is imported.

The file is read as a stream, a row at a time, and the store takes the rows a chunk at a
time: memory does not grow with the file. A report lists the first
:data:`~digest.store.importing.REPORTED_ROWS` skipped rows by line, and counts them all.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from digest.config import parse_locale
from digest.core.addresses import checked_address
from digest.core.errors import AddressError, DigestError, ImportRowError
from digest.core.models import Subscriber
from digest.store import Store
from digest.store.importing import REPORTED_ROWS

__all__ = [
    "COLUMNS",
    "DELIMITERS",
    "MAX_FIELD_CHARS",
    "CsvFile",
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
#: Characters of one line read at a time; a longer line comes in pieces.
_PIECE_CHARS = 64 * 1024
#: The delimiters a file may use: comma, semicolon (German Excel's "CSV"), tab.
DELIMITERS = ",;\t"
#: How much of the start of a file the delimiter is guessed from.
_SNIFF_CHARS = 64 * 1024


@dataclass
class ImportReport:
    """What an import did (or, with ``dry_run``, would do): counts and skipped rows.

    ``suppressed`` holds the lines of rows whose address is on the suppression list (or
    whose subscriber bounced, complained or unsubscribed): they are not added, updated
    or reactivated. ``errors`` has one error per row skipped as invalid. Both list the
    first :data:`~digest.store.importing.REPORTED_ROWS` rows in line order;
    ``suppressed_count`` and ``error_count`` count every row.
    """

    path: str
    list_name: str
    imported: int = 0
    updated: int = 0
    unchanged: int = 0
    suppressed: list[int] = field(default_factory=list)
    errors: list[ImportRowError] = field(default_factory=list)
    dry_run: bool = False
    suppressed_count: int = 0
    error_count: int = 0

    @property
    def added(self) -> int:
        """The subscribers new to the store (``imported``)."""
        return self.imported

    def skip(self, error: ImportRowError) -> None:
        """Count a row skipped as invalid, and list it among the first ones."""
        self.error_count += 1
        if len(self.errors) < REPORTED_ROWS:
            self.errors.append(error)


@dataclass(frozen=True)
class _Record:
    """One CSV record: the physical lines it spans and its text.

    A record longer than :data:`MAX_ROW_CHARS` is not kept: ``text`` is empty then, and
    ``length`` says how long it was.
    """

    first_line: int
    last_line: int
    text: str
    length: int
    closed: bool  # False when a quoted field is still open at the end of the file


# States of the record splitter, after the csv module's (excel dialect, not strict).
_START, _UNQUOTED, _QUOTED, _QUOTE_IN_QUOTED = range(4)


def _pieces(stream: IO[str]) -> Iterator[tuple[str, bool]]:
    """The physical lines of ``stream`` (one in pieces if long), each: text, ends a line.

    Lines end at LF, CR LF and CR, as the csv module splits them.
    """
    pending = ""
    while piece := pending or stream.readline(_PIECE_CHARS):
        pending = ""
        if len(piece) == _PIECE_CHARS and piece.endswith("\r"):
            pending = stream.readline(_PIECE_CHARS)  # a \r\n may be cut in two
            if pending.startswith("\n"):
                piece, pending = piece + "\n", pending[1:]
        yield piece, piece.endswith(("\n", "\r"))


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


def _state_after(state: int, text: str, delimiter: str = ",") -> int:
    """The splitter's state after ``text`` (no line break in it), from ``state``."""
    for char in text:
        if state == _QUOTED:
            state = _QUOTE_IN_QUOTED if char == '"' else _QUOTED
        elif char == delimiter:
            state = _START
        elif state in (_START, _QUOTE_IN_QUOTED):
            # a quote opens a field, or after a closing one is an escaped quote
            state = _QUOTED if char == '"' else _UNQUOTED
    return state


def _records(stream: IO[str], delimiter: str = ",") -> Iterator[_Record]:
    """Split CSV text into records, each with the line it starts on.

    The csv module counts physical lines and reports the one a record ends on, and an
    error in one record (a field over its size limit) leaves it lost in the middle of
    the file. Splitting first, the way it quotes, lets each record be read on its own.
    A record is kept in memory up to :data:`MAX_ROW_CHARS` only (a quote left open can
    swallow the rest of the file).
    """
    state, start, number, length = _START, 1, 0, 0
    parts: list[str] = []
    for piece, ends_line in _pieces(stream):
        if length == 0:
            start = number + 1
        length += len(piece)
        if length <= MAX_ROW_CHARS:
            parts.append(piece)
        else:
            parts.clear()
        if state != _QUOTED and ends_line and '"' not in piece:
            state = _START
        else:
            state = _state_after(state, piece.rstrip("\r\n") if ends_line else piece, delimiter)
        if not ends_line:
            continue
        number += 1
        if state == _QUOTED:
            continue  # a line break inside quotes belongs to the field
        state = _START
        yield _Record(start, number, "".join(parts), length, closed=True)
        parts, length = [], 0
    if length:  # the file ends in this record: inside quotes, or without a line break
        last = number if ends_line else number + 1
        yield _Record(start, last, "".join(parts), length, closed=state != _QUOTED)


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
    if record.length > MAX_ROW_CHARS:
        raise ImportRowError(
            record.first_line,
            f"the row is {record.length:,} characters long, more than any subscriber "
            f'needs{where}; is a quote (") left open?',
        )
    try:
        rows = list(csv.reader(io.StringIO(record.text, newline=""), delimiter=delimiter))
    except csv.Error as exc:
        raise ImportRowError(record.first_line, f"cannot read the row: {exc}") from None
    return rows[0] if rows else []


def _not_utf8(path: Path) -> DigestError:
    """The error saying on which line ``path`` stops being UTF-8 (read again to find it)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    with path.open("rb") as data:
        while True:
            block = data.read(1 << 20)
            try:
                decoder.decode(block, final=not block)
            except UnicodeDecodeError as exc:
                # its input: the bytes held back from the block before, then this block
                line += exc.object.count(b"\n", 0, exc.start)
                return DigestError(
                    f"{path}: line {line}: not UTF-8 text (byte 0x{exc.object[exc.start]:02X}); "
                    "save the CSV as UTF-8"
                )
            if not block:
                return DigestError(f"{path}: not UTF-8 text; save the CSV as UTF-8")
            line += block.count(b"\n")


class CsvFile:
    """The CSV file at ``path``, read a record at a time; the header is read on opening.

    Raises DigestError for what spoils the whole file: it cannot be read, is not UTF-8,
    or its header is wrong (on opening, or for a byte that is not UTF-8, when reached).
    """

    def __init__(self, path: Path, delimiter: str | None = None) -> None:
        self.path = path
        try:
            self.stream = path.open(encoding="utf-8-sig", newline="")
        except OSError as exc:
            raise DigestError(f"cannot read {path}: {exc.strerror}") from None
        try:
            if delimiter is None:  # guessed from the start of the file, then read again
                try:
                    delimiter = sniff_delimiter(self.stream.read(_SNIFF_CHARS))
                except UnicodeDecodeError:
                    delimiter = ","  # reading the rows says where
                self.stream.seek(0)
            self.delimiter = delimiter
            self.records = self._read()  # one iterator: the header, then the rows
            self.header = self._header()
        except BaseException:
            self.stream.close()
            raise

    def _header(self) -> list[str]:
        header: list[str] = []
        for record in self.records:
            try:
                header = _fields(record, self.delimiter)
            except ImportRowError as exc:
                raise DigestError(f"{self.path}: {exc}") from None
            if header:
                break
        if "email" not in header:
            shown = "a tab" if self.delimiter == "\t" else repr(self.delimiter)
            raise DigestError(
                f"{self.path}: line 1: the header has no 'email' column "
                f"(columns: {', '.join(COLUMNS)}, separated by {shown}; --delimiter names "
                "another)"
            )
        unknown = [c for c in header if c not in COLUMNS]
        if unknown:
            raise DigestError(
                f"{self.path}: line 1: unknown column {unknown[0]!r} "
                f"(columns: {', '.join(COLUMNS)})"
            )
        return header

    def __iter__(self) -> Iterator[_Record]:
        return self.records

    def _read(self) -> Iterator[_Record]:
        try:
            yield from _records(self.stream, self.delimiter)
        except UnicodeDecodeError:
            raise _not_utf8(self.path) from None
        except OSError as exc:
            raise DigestError(f"cannot read {self.path}: {exc.strerror}") from None

    def close(self) -> None:
        self.stream.close()


def parse_rows(
    rows: CsvFile,
    list_name: str,
    *,
    categories: Collection[str],
    regions: Collection[str],
    smtputf8: bool = False,
) -> Iterator[tuple[int, Subscriber] | ImportRowError]:
    """Read and check the rows after the header, one at a time.

    Yields (line, subscriber) for a good row and ImportRowError for a bad one; rows are
    numbered by the line of the file they start on (the header is line 1). Whether an
    address appears twice is for the store to tell (digest.store.importing).
    """
    checker = _Checker(list_name, categories, regions, smtputf8)
    for record in rows:
        line = record.first_line
        try:
            values = _fields(record, rows.delimiter)
            if not values:
                continue  # a blank line
            if len(values) > len(rows.header):
                raise ImportRowError(line, "more fields than columns")
            row = dict(zip(rows.header, values, strict=False))
            for column, value in row.items():
                if len(value) > MAX_FIELD_CHARS:
                    raise ImportRowError(
                        line,
                        f"the {column} field is {len(value):,} characters long "
                        f"(at most {MAX_FIELD_CHARS:,})",
                    )
            yield line, checker.subscriber(row, line)
        except ImportRowError as exc:
            yield exc


def _split(value: str | None) -> frozenset[str]:
    return frozenset(v.strip() for v in (value or "").split("|") if v.strip())


#: Distinct values of a column checked once and remembered, up to this many.
_REMEMBERED = 1000


class _Checker:
    """Makes the subscriber of one row, or says why the row is bad.

    The categories, regions and locale of a row are mostly the values of rows before it:
    each distinct value is checked once (the first :data:`_REMEMBERED` of them).
    """

    def __init__(
        self, list_name: str, categories: Collection[str], regions: Collection[str], smtputf8: bool
    ) -> None:
        self.lists = frozenset({list_name})
        self.categories = frozenset(categories)
        self.region_names = {r.casefold(): r for r in regions}
        self.smtputf8 = smtputf8
        # (column, value) -> the value as a subscriber holds it, or (a str) its problem
        self.checked: dict[tuple[str, str], frozenset[str] | str] = {}

    def _value(
        self, column: str, value: str, line: int, check: Callable[[str], frozenset[str]]
    ) -> frozenset[str]:
        """``check(value)``, remembered; ImportRowError on ``line`` if it raised ValueError."""
        key = (column, value)
        if key in self.checked:
            result = self.checked[key]
        else:
            try:
                result = check(value)
            except ValueError as exc:
                result = str(exc)
            if len(self.checked) < _REMEMBERED:
                self.checked[key] = result
        if isinstance(result, str):
            raise ImportRowError(line, result)
        return result

    def _categories(self, value: str) -> frozenset[str]:
        chosen = _split(value)
        bad = sorted(chosen - self.categories)
        if bad:
            known = ", ".join(sorted(self.categories))
            raise ValueError(f"unknown category {bad[0]!r} (known: {known})")
        return chosen

    def _regions(self, value: str) -> frozenset[str]:
        chosen = set()
        for region in _split(value):
            if region.casefold() not in self.region_names:
                raise ValueError(f"unknown region {region!r}")
            chosen.add(self.region_names[region.casefold()])
        return frozenset(chosen)

    @staticmethod
    def _locale(value: str) -> frozenset[str]:
        parse_locale(value)  # ValueError if unknown
        return frozenset()  # nothing to keep: the locale is stored as given

    def subscriber(self, row: dict[str, str], line: int) -> Subscriber:
        raw = (row.get("email") or "").strip()
        if not raw:
            raise ImportRowError(line, "the email column is empty")
        try:
            email = checked_address(raw, smtputf8=self.smtputf8)
        except AddressError as exc:
            raise ImportRowError(line, exc.problem) from None
        categories = self._value("categories", row.get("categories") or "", line, self._categories)
        regions = self._value("regions", row.get("regions") or "", line, self._regions)
        locale = (row.get("locale") or "").strip() or None
        if locale:
            self._value("locale", locale, line, self._locale)
        return Subscriber(
            email=email,
            name=" ".join((row.get("name") or "").split()),
            lists=self.lists,
            categories=categories,
            regions=regions,
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
    non-ASCII local part (smtp.smtputf8). ``delimiter``: None to guess it
    (:func:`sniff_delimiter`).
    """
    consent = " ".join(consent.split())
    if not consent:
        raise DigestError("the consent statement is empty; say how these readers consented")
    report = ImportReport(str(path), list_name, dry_run=dry_run)
    rows = CsvFile(path, delimiter)
    try:
        parsed = parse_rows(
            rows, list_name, categories=categories, regions=regions, smtputf8=smtputf8
        )
        counts = store.import_subscribers(
            _good(parsed, report), list_name, consent=consent, dry_run=dry_run
        )
    finally:
        rows.close()
    report.imported, report.updated = counts.imported, counts.updated
    report.unchanged, report.suppressed = counts.unchanged, counts.suppressed
    report.suppressed_count = counts.suppressed_count
    # the first REPORTED_ROWS skipped rows are among the first of each kind
    report.errors = sorted(report.errors + counts.repeated, key=lambda e: e.line)[:REPORTED_ROWS]
    report.error_count += counts.repeated_count
    return report


def _good(
    parsed: Iterator[tuple[int, Subscriber] | ImportRowError], report: ImportReport
) -> Iterator[tuple[int, Subscriber]]:
    """The good rows of ``parsed``; the bad ones go to ``report``."""
    for row in parsed:
        if isinstance(row, ImportRowError):
            report.skip(row)
        else:
            yield row


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
