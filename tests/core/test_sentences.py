"""sentences: where a cut lands in German (and English) text full of abbreviations, ordinals,
dates, quotes and numbers. Each case says where the cut must land; a splitter that takes
every full stop before a space for the end of a sentence lands elsewhere."""

from __future__ import annotations

import pytest

from digest.core.sentences import ABBREVIATIONS, cut_text, last_sentence_end

# The sentence a cut falls back to when the next one holds no end of its own.
FIRST = "Der Kreistag hat am Montag über den Haushalt beraten."
TAIL = "Danach beraten die Ausschüsse über die Kosten und die Reihenfolge der Abschnitte."

# Sentences with full stops that end no sentence, each followed by a space.
NO_END_INSIDE = [
    "Die Stadt plant z. B. neue Radwege an der Hauptstraße.",
    "Es gibt viele Gründe, z.B. Kosten und Personal.",
    "Die Linie Nr. 5 fährt ab dem 28.01.2025 öfter.",
    "Dr. Müller stellt das Konzept im Rathaus vor.",
    "Prof. Dr. Schmidt leitet das Amt seit Jahren.",
    "Das Konzept wird am 14. Mai im Rathaus vorgestellt.",
    "Nach Art. 3 GG sind alle Menschen vor dem Gesetz gleich.",
    "Laut § 5 Abs. 2 BauGB ist der Bau zulässig.",
    "Die Sanierung kostet ca. 3 Millionen Euro, sagt das Amt.",
    "Bürger bzw. Anwohner können Einwände erheben.",
    "Beteiligt sind u. a. die Stadtwerke und das Land.",
    "Details stehen auf S. 12 des Berichts.",
    "Der 1. FC Köln gewinnt das Derby gegen Gladbach.",
    "Die Frist endet am 15. Jan. 2025 um Mitternacht.",
    "Die Sitzung beginnt im Jan. mit einer Anhörung.",
    "Seit dem 3. Okt. 1990 ist Deutschland vereint.",
    "Im 19. Jh. wurde die Brücke über den Main gebaut.",
    "Die 2. Bundesliga startet im August in die Saison.",
    "Das Projekt kostet 2.5 Mio. Euro und wird 2026 fertig.",
    "Die Kosten liegen bei ca. 2 Mrd. Euro im Jahr.",
    "Die Preise gelten inkl. MwSt. und zzgl. Versand.",
    "Der Landrat, Dipl.-Ing. Meier, eröffnet die Brücke.",
    "Die Messe zählte 12 Tsd. Besucher an drei Tagen.",
    "Der Bahnhof liegt an der Hauptstr. 5 in Bonn.",
    "Geöffnet ist Mo.–Fr. von 8 bis 16 Uhr.",
    "Das Fest ist am Sa., 12. Juli, auf dem Marktplatz.",
    "Der Beschluss (vgl. Anlage 2) gilt ab sofort.",
    "St. Pauli spielt am Sonntag vor vollem Haus.",
    "Der Förderverein e. V. lädt zur Sitzung ein.",
    "Der Antrag wurde i. d. R. innerhalb einer Woche bewilligt.",
    "Die Kosten trägt die Stadtverw. übergangsweise allein.",
    "Er sagte, dass … die Kosten weiter steigen.",
    "Mr. Smith went to Washington on Monday.",
    "The U.S. economy grew 2.5% in 2024, Dr. Jones said.",
    "He arrived at 5 p.m. on Monday, e.g. after the vote.",
]


@pytest.mark.parametrize("sentence", NO_END_INSIDE)
def test_a_cut_does_not_land_on_an_abbreviation_ordinal_or_date(sentence: str) -> None:
    text = f"{FIRST} {sentence} {TAIL}"
    # Every full stop of the sentence but its last lies within the limit.
    limit = len(FIRST) + len(sentence)
    assert cut_text(text, limit) == FIRST
    # Its own end is found once it fits.
    assert cut_text(text, limit + 1) == f"{FIRST} {sentence}"


# Sentences that end where a cautious splitter sees no end: after closing quotes, a date,
# a number, a URL, an ellipsis, a telephone number, a question or an exclamation. The
# sentence after them opens with an abbreviation, where a naive splitter would cut.
ENDS_HERE = [
    "Die Ministerin sagte am Montag: „Wir bauen die Verwaltung um.“",
    "„Wer zahlt das?“, fragte der Abgeordnete im Ausschuss.",
    "Der Rat fragte den Bürgermeister: „Wann kommt die Bahn?“",
    "Die Ministerin sagte am Montag: »Wir bauen die Verwaltung um.«",
    "Das Gesetz gilt in allen Ämtern seit dem 28.01.2025.",
    "Die Stadt zahlt für jeden Antrag genau 1.000 Euro.",
    "Das Projekt kostet nach der Schätzung 2.5 Mio. Euro.",
    "Mehr Informationen gibt es unter www.stadt-koeln.de/verkehr.",
    "Die Seite https://example.org/a.html nennt alle Details.",
    "Bayern: Der Landtag beschließt das neue Digitalgesetz.",
    "Die Verhandlungen mit dem Land dauern noch an...",
    "Das Amt ist erreichbar unter Tel. 0221 12345.",
    "Wer zahlt die neuen Radwege in der Innenstadt?",
    "Die Stadt rät allen Anwohnern zur Vorsicht!",
    "Es sprach Oberbürgermeisterin Reker (parteilos).",
    "The council met on Jan. 5 in the town hall.",
]


NEXT = "Danach prüft z. B. der Ausschuss die Kosten."


@pytest.mark.parametrize("sentence", ENDS_HERE)
def test_a_cut_lands_after_quotes_dates_numbers_and_urls(sentence: str) -> None:
    text = f"{sentence} {NEXT} {TAIL}"
    past_the_abbreviation = len(sentence) + len(" Danach prüft z. B. der")
    assert cut_text(text, past_the_abbreviation) == sentence
    assert last_sentence_end(text, len(sentence) + len(NEXT)) == len(sentence)
    assert last_sentence_end(text, len(sentence) + 1 + len(NEXT)) == len(sentence) + 1 + len(NEXT)


def test_sentences_of_several_kinds_in_a_row_are_each_found() -> None:
    sentences = [
        "Was tun?",
        "Die Stadt rät zur Vorsicht!",
        "Die Verhandlungen dauern an...",
        "Ein Ergebnis steht noch aus.",
    ]
    text = " ".join(sentences)
    ends = [len(" ".join(sentences[: n + 1])) for n in range(len(sentences))]
    for end in ends:
        assert last_sentence_end(text, end) == end
        assert last_sentence_end(text, end + 1) == end
    assert last_sentence_end(text, ends[0] - 1) is None


def test_a_headline_without_a_full_stop_is_no_sentence() -> None:
    text = (
        "Landtag beschließt Digitalgesetz\n\nDer Landtag hat am Donnerstag das "
        "Digitalgesetz beschlossen und damit den Weg für digitale Bauanträge frei gemacht."
    )
    assert last_sentence_end(text, 60) is None
    teaser = cut_text(text, 60)
    assert teaser.endswith("…") and text.startswith(teaser[:-1])


def test_only_ends_from_at_least_count() -> None:
    text = f"{FIRST} {TAIL} Mehr folgt."
    assert last_sentence_end(text, len(text), len(FIRST) + 1) == len(text)
    assert last_sentence_end(text, len(text) - 1, len(FIRST) + 1) == len(FIRST) + 1 + len(TAIL)
    assert last_sentence_end(text, len(FIRST) + 10, len(FIRST) + 1) is None
    assert last_sentence_end(text, len(FIRST) + 10, len(FIRST)) == len(FIRST)


def test_a_quote_that_closes_past_the_limit_is_not_cut_inside() -> None:
    quote = "„Wir bauen die Verwaltung um. Das dauert, und es kostet Geld.“"
    text = f"{FIRST} Die Ministerin sagte: {quote} Die Opposition widersprach."
    inside = text.index("um.") + len("um.")
    assert last_sentence_end(text, inside + 5) == len(FIRST)


@pytest.mark.parametrize("abbreviation", sorted(ABBREVIATIONS))
def test_every_added_abbreviation_ends_no_sentence(abbreviation: str) -> None:
    sentence = f"Das nennt {abbreviation.capitalize()}. Kommission im Bericht."
    text = f"{FIRST} {sentence} {TAIL}"
    assert cut_text(text, len(FIRST) + len(sentence)) == FIRST


def test_a_long_text_is_cut_at_a_sentence_near_the_limit() -> None:
    sentence = "Der Rat beschließt am 14. Mai z. B. neue Radwege für ca. 2 Mio. Euro. "
    text = sentence * 2000
    # The fifth sentence's "am 14." lies within the limit; the sentence ends past it.
    teaser = cut_text(text, 320)
    assert teaser == (sentence * 4).strip()
