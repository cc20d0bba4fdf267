"""CSV import of files larger than one chunk: read as a stream, the same answers."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from digest.audience.subscribers import _PIECE_CHARS, import_csv
from digest.core.errors import DigestError
from digest.store import Store
from digest.store import schema as t
from digest.store.importing import CHUNK, REPORTED_ROWS

CATEGORIES = {"politik", "verwaltung"}
REGIONS = ["Bayern", "Hessen"]
CONSENT = "Formular auf example.org, Double-Opt-in 2024"


def _import(store: Store, path: Path, **options: object):  # type: ignore[no-untyped-def]
    return import_csv(
        store, path, "allgemein", categories=CATEGORIES, regions=REGIONS, consent=CONSENT, **options
    )


def _rows(count: int, start: int = 0) -> str:
    return "".join(f"leser{n}@example.org,Leser {n}\n" for n in range(start, start + count))


def _members(store: Store) -> int:
    with store.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(t.memberships)).scalar_one()


def test_an_address_repeated_chunks_later_is_reported_with_its_first_line(
    store: Store, tmp_path: Path
) -> None:
    path = tmp_path / "gross.csv"
    # line 2 + n holds leser{n}; the repeats come several chunks after their first row
    path.write_text(
        "email,name\n"
        + _rows(3 * CHUNK)
        + "LESER10@Example.ORG,Wieder da\n"  # line 3 * CHUNK + 2
        + _rows(1, start=3 * CHUNK)
        + "leser10@example.org,Noch einmal\n"
        + "leser3000@example.org,Gleich danach\n",
        encoding="utf-8",
    )
    report = _import(store, path)
    assert report.imported == 3 * CHUNK + 1
    assert [(e.line, e.problem) for e in report.errors] == [
        (
            3 * CHUNK + 2,
            "LESER10@example.org appears twice in this file (first on line 12, in any spelling)",
        ),
        (
            3 * CHUNK + 4,
            "leser10@example.org appears twice in this file (first on line 12, in any spelling)",
        ),
        (
            3 * CHUNK + 5,
            f"leser3000@example.org appears twice in this file (first on line {3 * CHUNK + 3}, "
            "in any spelling)",
        ),
    ]
    assert report.error_count == 3
    leser = store.subscriber_by_email("leser10@example.org")
    assert leser is not None and leser.name == "Leser 10"
    assert _members(store) == 3 * CHUNK + 1
    again = _import(store, path)  # the addresses seen are forgotten between imports
    assert (again.imported, again.unchanged, again.error_count) == (0, 3 * CHUNK + 1, 3)


def test_the_report_lists_the_first_bad_rows_and_counts_them_all(
    store: Store, tmp_path: Path
) -> None:
    bad = REPORTED_ROWS + 250
    lines = ["email,name\n", "erst@example.org,Erst\n"]
    for n in range(bad):
        # an invalid address, and every fifth row the repeat of an earlier address
        lines.append("erst@example.org,Doppelt\n" if n % 5 == 0 else f"kaputt{n},Falsch\n")
        lines.append(f"gut{n}@example.org,Gut\n")
    path = tmp_path / "viele-fehler.csv"
    path.write_text("".join(lines), encoding="utf-8")
    report = _import(store, path)
    assert report.imported == bad + 1
    assert report.error_count == bad
    assert len(report.errors) == REPORTED_ROWS
    assert [e.line for e in report.errors] == [3 + 2 * n for n in range(REPORTED_ROWS)]
    assert "appears twice" in report.errors[0].problem
    assert "'kaputt1' is not a valid email address" in report.errors[1].problem


def test_suppressed_rows_are_counted_beyond_the_listed_ones(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "liste.csv"
    path.write_text("email,name\n" + _rows(REPORTED_ROWS + 30), encoding="utf-8")
    assert _import(store, path).imported == REPORTED_ROWS + 30
    for n in range(REPORTED_ROWS + 30):
        store.suppress(f"leser{n}@example.org", "hard_bounce")
    again = _import(store, path)
    assert (again.imported, again.updated, again.unchanged) == (0, 0, 0)
    assert again.suppressed_count == REPORTED_ROWS + 30
    assert again.suppressed == [2 + n for n in range(REPORTED_ROWS)]


def test_a_quote_left_open_swallows_the_rest_of_a_long_file(store: Store, tmp_path: Path) -> None:
    rows = 3 * CHUNK
    path = tmp_path / "offen.csv"
    path.write_text(
        'email,name\na@example.org,A\nb@example.org,"offen\n' + _rows(rows), encoding="utf-8"
    )
    report = _import(store, path)
    assert report.imported == 1
    [error] = report.errors
    assert error.line == 3
    assert error.problem == (
        f'a quoted field opened here is never closed (the row runs to line {rows + 3}); close the "'
    )


def test_a_line_break_cut_by_the_reader_counts_once(store: Store, tmp_path: Path) -> None:
    # the reader takes a long line in pieces; this one's \r\n falls between two
    long_name = "x" * (_PIECE_CHARS - len("b@example.org,") - 1)
    path = tmp_path / "lang.csv"
    path.write_bytes(
        (
            "email,name\r\n"
            "a@example.org,A\r\n"
            f"b@example.org,{long_name}\r\n"
            "c@example.org,C\r\n"
            "kaputt,Falsch\r\n"
            'd@example.org,"D\rzwei"\r'
            "ohne-at,Falsch\r"
        ).encode()
    )
    report = _import(store, path)
    assert [(e.line, e.problem.split()[0]) for e in report.errors] == [
        (3, "the"),
        (5, "'kaputt'"),
        (8, "'ohne-at'"),
    ]
    assert report.imported == 3


def test_a_byte_late_in_the_file_that_is_not_utf8_imports_nothing(
    store: Store, tmp_path: Path
) -> None:
    rows = 3 * CHUNK + 500  # beyond the first chunk written and the reader's first block
    path = tmp_path / "spaet.csv"
    path.write_bytes(
        ("email,name\n" + _rows(rows)).encode() + "b@example.org,Jürgen\n".encode("latin-1")
    )
    with pytest.raises(
        DigestError, match=rf"^{path}: line {rows + 2}: not UTF-8 text \(byte 0xFC\)"
    ):
        _import(store, path)
    assert store.subscriber_by_email("leser0@example.org") is None
    assert _members(store) == 0
    path.write_bytes(("email,name\n" + _rows(2)).encode())
    assert _import(store, path).imported == 2  # the store and its connection are fine


def test_a_dry_run_of_a_long_file_counts_repeats_and_writes_nothing(
    store: Store, tmp_path: Path
) -> None:
    path = tmp_path / "probe.csv"
    path.write_text("email,name\n" + _rows(2 * CHUNK) + _rows(5), encoding="utf-8")
    dry = _import(store, path, dry_run=True)
    assert (dry.imported, dry.error_count) == (2 * CHUNK, 5)
    assert _members(store) == 0
    real = _import(store, path)
    assert (real.imported, real.error_count) == (2 * CHUNK, 5)
    assert [e.line for e in real.errors] == [e.line for e in dry.errors]


async def test_the_command_lists_the_first_bad_rows_and_counts_the_rest(tmp_path: Path) -> None:
    import shutil

    from tests.cli.test_cli import digest
    from tests.conftest import ROOT

    shutil.copy(ROOT / "config.toml", tmp_path / "config.toml")
    bad = REPORTED_ROWS + 3
    (tmp_path / "liste.csv").write_text(
        "email,name\n" + "".join(f"kaputt{n},Falsch\n" for n in range(bad)) + _rows(2),
        encoding="utf-8",
    )
    code, out, err = await digest(
        "subscribers",
        "import",
        "liste.csv",
        "--list",
        "allgemein",
        "--consent",
        "Demo",
        cwd=tmp_path,
    )
    assert code == 1
    warnings = err.strip().splitlines()
    assert len(warnings) == REPORTED_ROWS + 1
    assert warnings[0] == (
        "warning: liste.csv: line 2: 'kaputt0' is not a valid email address: "
        "An email address must have an @-sign.; row skipped"
    )
    assert warnings[-1] == (
        f"warning: liste.csv: 3 more rows skipped; only the first {REPORTED_ROWS} are listed"
    )
    lines = ", ".join(str(n) for n in range(2, 22))
    assert out.strip() == (
        f"liste.csv: 2 imported, 0 updated, 0 unchanged, 0 suppressed, {bad} skipped "
        f"(lines {lines}, …) in list 'allgemein'"
    )
