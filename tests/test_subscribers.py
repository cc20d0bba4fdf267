"""CSV import: good rows imported, bad rows reported by line and skipped."""

from __future__ import annotations

from pathlib import Path

from digest.store import Store
from digest.subscribers import import_csv

CATEGORIES = {"politik", "verwaltung", "smart-city"}
REGIONS = ["Bayern", "Hessen"]


def test_import_reports_bad_rows_and_keeps_good_ones(store: Store, tmp_path: Path) -> None:
    csv = tmp_path / "liste.csv"
    csv.write_text(
        "email,name,categories,regions,locale\n"
        "juergen@example.org,Jürgen Böhm,politik|verwaltung,,de_DE\n"
        "kein-at-zeichen,Falsch,,,\n"
        ",Leer,,,\n"
        "anna@example.com,Anna,sport,,\n"
        "Max.Muster@Example.NET,Max,,bayern,\n"
        "juergen@example.org,Doppelt,,,\n",
        encoding="utf-8",
    )
    report = import_csv(store, csv, "allgemein", categories=CATEGORIES, regions=REGIONS)
    assert (report.added, report.updated) == (2, 0)
    assert [(e.line, e.problem.split(" ")[0]) for e in report.errors] == [
        (3, "'kein-at-zeichen'"),
        (4, "the"),
        (5, "unknown"),
        (7, "juergen@example.org"),
    ]
    jb = store.subscriber_by_email("juergen@example.org")
    assert jb is not None and jb.name == "Jürgen Böhm"
    assert jb.categories == {"politik", "verwaltung"} and jb.locale == "de_DE"
    max_ = store.subscriber_by_email("Max.Muster@example.net")
    assert max_ is not None and max_.regions == {"Bayern"}
    again = import_csv(store, csv, "bayern", categories=CATEGORIES, regions=REGIONS)
    assert (again.added, again.updated) == (0, 2)
    jb = store.subscriber_by_email("juergen@example.org")
    assert jb is not None and jb.lists == {"allgemein", "bayern"}
