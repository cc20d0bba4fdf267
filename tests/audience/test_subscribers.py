"""CSV import: good rows imported, bad rows reported by line and skipped."""

from __future__ import annotations

from pathlib import Path

from digest.audience.subscribers import import_csv
from digest.store import Store

CATEGORIES = {"politik", "verwaltung", "smart-city"}
REGIONS = ["Bayern", "Hessen"]
CONSENT = "Formular auf example.org, Double-Opt-in 2024"


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
    report = import_csv(
        store, csv, "allgemein", categories=CATEGORIES, regions=REGIONS, consent=CONSENT
    )
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
    again = import_csv(
        store, csv, "bayern", categories=CATEGORIES, regions=REGIONS, consent=CONSENT
    )
    assert (again.added, again.updated) == (0, 2)
    jb = store.subscriber_by_email("juergen@example.org")
    assert jb is not None and jb.lists == {"allgemein", "bayern"}


def _import(store: Store, path: Path, text: str, **options: object) -> object:
    path.write_text(text, encoding="utf-8")
    return import_csv(
        store, path, "allgemein", categories=CATEGORIES, regions=REGIONS, consent=CONSENT, **options
    )


def test_addresses_differing_in_case_are_one_subscriber(store: Store, tmp_path: Path) -> None:
    first = tmp_path / "eins.csv"
    first.write_text("email,name\nAnna.Case@example.com,Anna\n", encoding="utf-8")
    second = tmp_path / "zwei.csv"
    second.write_text("email,name\nanna.case@EXAMPLE.com,Anna C.\n", encoding="utf-8")
    assert (
        import_csv(
            store, first, "allgemein", categories=CATEGORIES, regions=REGIONS, consent=CONSENT
        ).added
        == 1
    )
    again = import_csv(
        store, second, "bayern", categories=CATEGORIES, regions=REGIONS, consent=CONSENT
    )
    assert (again.added, again.updated) == (0, 1)
    [anna] = store.active_subscribers()
    # the spelling first given stays for display; the rest is updated
    assert (anna.email, anna.name) == ("Anna.Case@example.com", "Anna C.")
    assert anna.lists == {"allgemein", "bayern"}
    assert store.subscriber_by_email("ANNA.CASE@example.com") == anna
    assert anna.id is not None
    store.unsubscribe(anna.id, "wochenueberblick")
    assert store.active_subscribers(newsletter="wochenueberblick") == []


def test_one_file_with_two_spellings_reports_the_second(store: Store, tmp_path: Path) -> None:
    report = _import(
        store,
        tmp_path / "liste.csv",
        "email,name\nAnna.Case@example.com,Anna\nanna.case@example.com,Anna klein\n",
    )
    assert report.added == 1  # type: ignore[attr-defined]
    [error] = report.errors  # type: ignore[attr-defined]
    assert error.line == 3 and "first on line 2" in error.problem


def test_an_oversized_field_skips_its_row_only(store: Store, tmp_path: Path) -> None:
    huge = "x" * 200_000  # over the csv module's own field limit (131072)
    report = _import(
        store,
        tmp_path / "liste.csv",
        "email,name\n"
        "a@example.org,A\n"
        f"b@example.org,{huge}\n"
        'c@example.org,"Zwei\nZeilen"\n'
        f'd@example.org,"{huge}"\n'
        "e@example.org,E\n"
        f"{'f' * 300}@example.org,F\n"
        "g@example.org,G\n",
    )
    assert report.added == 4  # type: ignore[attr-defined]
    assert {s.email for s in store.active_subscribers()} == {
        "a@example.org",
        "c@example.org",
        "e@example.org",
        "g@example.org",
    }
    errors = report.errors  # type: ignore[attr-defined]
    assert [e.line for e in errors] == [3, 6, 8]
    assert "characters long" in errors[0].problem
    assert "too long" in errors[2].problem


def test_bad_rows_are_numbered_by_the_line_they_start_on(store: Store, tmp_path: Path) -> None:
    report = _import(
        store,
        tmp_path / "liste.csv",
        "email,name\n"
        '"a@example.org","Name über\n'
        "drei\n"
        'Zeilen"\n'
        "kaputt,Falsch\n"
        "\n"
        'b@example.org,"eins\r\nzwei"\r\n'
        'ohne-at,"auch\nzwei"\n'
        "c@example.org,C\n"
        'd@example.org,"offen\n'
        "e@example.org,E\n",
    )
    assert [(e.line, e.problem.split()[0]) for e in report.errors] == [  # type: ignore[attr-defined]
        (5, "'kaputt'"),
        (9, "'ohne-at'"),
        (12, "a"),
    ]
    assert "never closed" in report.errors[-1].problem  # type: ignore[attr-defined]
    assert report.added == 3  # type: ignore[attr-defined]


def test_non_ascii_local_part_needs_smtputf8(store: Store, tmp_path: Path) -> None:
    text = "email,name\njürgen@example.org,Jürgen\nanna@bücher.example,Anna\n"
    report = _import(store, tmp_path / "liste.csv", text)
    [error] = report.errors  # type: ignore[attr-defined]
    assert error.line == 2
    assert "non-ASCII local part needs an SMTPUTF8 relay" in error.problem
    assert "smtp.smtputf8 = true" in error.problem
    assert store.subscriber_by_email("anna@bücher.example") is not None  # IDNA domain is fine
    allowed = _import(store, tmp_path / "liste.csv", text, smtputf8=True)
    assert allowed.errors == [] and allowed.added == 1  # type: ignore[attr-defined]


def test_a_file_that_is_not_utf8_names_the_line(store: Store, tmp_path: Path) -> None:
    import pytest

    from digest.core.errors import DigestError

    path = tmp_path / "latin1.csv"
    path.write_bytes("email,name\na@example.org,A\nb@example.org,Jürgen\n".encode("latin-1"))
    with pytest.raises(DigestError, match="line 3: not UTF-8"):
        import_csv(
            store, path, "allgemein", categories=CATEGORIES, regions=REGIONS, consent=CONSENT
        )


def test_a_locale_must_be_a_plain_identifier(store: Store, tmp_path: Path) -> None:
    report = _import(
        store,
        tmp_path / "locales.csv",
        "email,locale\n"
        "eins@example.org,de_DE;rm -rf\n"
        "zwei@example.org,de_DE.UTF-8\n"
        "drei@example.org,en_GB\n",
    )
    assert [e.line for e in report.errors] == [2, 3]  # type: ignore[attr-defined]
    assert "unknown locale" in report.errors[0].problem  # type: ignore[attr-defined]
    [drei] = store.active_subscribers()
    assert (drei.email, drei.locale) == ("drei@example.org", "en_GB")
