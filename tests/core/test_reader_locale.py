"""Which locale a reader's texts are in: their own where we have its texts, else the
newsletter's (the send itself is tested in tests/delivery/test_reader_locale.py)."""

from __future__ import annotations

import pytest

from digest.core.i18n import reader_locale


@pytest.mark.parametrize(
    ("own", "expected"),
    [
        (None, "de_DE"),
        ("", "de_DE"),
        ("en_GB", "en_GB"),  # the en catalogue, British dates
        ("en-gb", "en_GB"),  # as a browser or a spreadsheet spells it
        ("en", "en"),
        ("de_AT", "de_AT"),
        ("fr", "de_DE"),  # no French texts: the newsletter's, never two languages
        ("fr_FR", "de_DE"),
        ("xx_XX", "de_DE"),  # not a locale
        ("und", "de_DE"),  # Babel would read it as en_US
        ("de_DE;rm -rf", "de_DE"),  # Babel would read it as de
        ("de_DE.UTF-8", "de_DE"),
        ("x" * 10_000, "de_DE"),
    ],
)
def test_a_readers_own_locale_where_we_have_its_texts(own: str | None, expected: str) -> None:
    assert reader_locale(own, "de_DE") == expected


def test_without_texts_for_either_the_reader_keeps_their_dates() -> None:
    # A newsletter in a language without a catalogue reads the English message ids; a
    # reader of another such language gets the same texts and their own dates.
    assert reader_locale("es_ES", "fr_FR") == "es_ES"
    assert reader_locale("de_DE", "fr_FR") == "de_DE"
