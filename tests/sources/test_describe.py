"""The rules by which an article page's descriptions make a teaser, one at a time.

Each rule was found on a real page of tests/sources/pages/real (named with the test);
the whole corpus runs in test_teaser_corpus.py.
"""

from __future__ import annotations

import pytest

from digest.sources.describe import Described, choose, clean, describe_page, flaw

LEAD = (
    "Der Landtag hat am Donnerstag das Digitalgesetz beschlossen. Es verpflichtet alle "
    "Kommunen, ihre Bauanträge ab Juli nur noch digital anzunehmen. Die Opposition "
    "kritisierte die knappen Fristen und die fehlenden Mittel für kleine Gemeinden."
)
BODY = (
    "In der Debatte verwies die Ministerin auf die Erfahrungen der Modellkommunen, die "
    "seit zwei Jahren digitale Bauanträge annehmen und die Bearbeitungszeit halbiert "
    "haben. Die kommunalen Spitzenverbände begrüßten das Gesetz grundsätzlich, forderten "
    "aber eine Übergangsfrist für Gemeinden mit weniger als fünftausend Einwohnern."
)


def page(head: str = "", body: str = "", title: str = "Landtag beschließt Digitalgesetz") -> bytes:
    return (
        f'<!doctype html><html lang="de"><head><meta charset="utf-8"><title>{title}</title>'
        f"{head}</head><body><article><h1>{title}</h1>{body}</article></body></html>"
    ).encode()


def described(*candidates: tuple[str, str], sites: tuple[str, ...] = ()) -> Described:
    return Described(("Landtag beschließt Digitalgesetz",), sites, candidates)


# clean: bmas-1 (soft hyphens), kas-1 (zero-width spaces before a caption)
def test_clean_drops_soft_hyphens_and_zero_width_spaces() -> None:
    text = "Die Anfor&shy;derungen an Impf- und Genesenen\u00adnachweise\u200b\u200b neu geregelt"
    assert clean(text) == "Die Anforderungen an Impf- und Genesenennachweise neu geregelt"


# a leading date: nnz-1, kyffhaeuser-nachrichten-1 (description), osthessen-news-1 and
# arbeitsagentur-1 (main text)
@pytest.mark.parametrize(
    "dated",
    [
        f"06.11.2023, 11.41 Uhr : {LEAD}",
        f"06.11.23 - {LEAD}",
        f"01.02.2022 {LEAD}",
    ],
)
def test_a_date_the_description_opens_with_is_left_out(dated: str) -> None:
    found = describe_page(page(f'<meta name="description" content="{dated}">'))
    assert found.candidates[0] == ("meta description", LEAD)


def test_a_sentence_that_opens_with_a_date_keeps_it() -> None:
    text = "28.01.2025 war der Tag, an dem der Landtag das Digitalgesetz beschloss."
    found = describe_page(page(f'<meta name="description" content="{text}">'))
    assert found.candidates[0][1] == text


def test_a_date_the_main_text_opens_with_is_left_out() -> None:
    found = describe_page(page(body=f"<p>06.11.23 - {LEAD}</p><p>{BODY}</p>"))
    assert found.candidates[-1][0] == "main text"
    assert found.candidates[-1][1].startswith(LEAD)


# the site's tagline: iwr-pressedienst-1, rechtambild-1 (its name and a dash), zoll-1 (a label)
@pytest.mark.parametrize(
    ("text", "sites"),
    [
        ("Recht am Bild - Informationen rund um das Urheber- und Fotorecht.", ["Recht am Bild"]),
        (
            "IWR-Pressedienst.de - Deutschlands führender Spezialdienst für die Versendung von"
            " Original-Pressemitteilungen aus der Energiewirtschaft",
            ["IWR-Pressedienst"],
        ),
        ("Fachmeldung vom 18.10.2021 aus dem Bereich Steuern", []),
        ("Pressemitteilung Nr. 12 vom 3. Mai 2021 des Ministeriums für Digitales", []),
    ],
)
def test_the_sites_tagline_makes_no_teaser(text: str, sites: list[str]) -> None:
    assert flaw(text, ["Landtag beschließt Digitalgesetz"], sites) == "the site's tagline"


@pytest.mark.parametrize(
    ("text", "sites"),
    [
        # The site's name opens a sentence, with no dash or bar after it (zdh-1, amnesty-1).
        (
            "ZDH-Generalsekretär Schwannecke äußert sich zum Stopp der Förderprogramme.",
            ["ZDH"],
        ),
        ("Amnesty - und mit ihr viele Organisationen - fordert ein Verbot autonomer Waffen.", []),
        # A dash after the first words, which are not the site's.
        (
            "Frankfurt/Main (dpa) - Für einen Roman hat Frank Witzel den Buchpreis erhalten.",
            ["RNZ"],
        ),
        # A date in a sentence, not a label of the page.
        (
            "Meldung vom 3. Mai 2021: Der Landtag hat heute das Digitalgesetz mit großer "
            "Mehrheit beschlossen und die Fristen für kleine Gemeinden verlängert.",
            [],
        ),
    ],
)
def test_descriptions_that_are_no_tagline(text: str, sites: list[str]) -> None:
    assert flaw(text, ["Landtag beschließt Digitalgesetz"], sites) is None


def test_the_site_names_come_from_og_site_name_and_the_title() -> None:
    found = describe_page(
        page(
            '<meta property="og:site_name" content="Landesportal">'
            '<meta name="description" content="Kommunalportal - Nachrichten und Hintergründe'
            ' aus den Städten und Gemeinden des Landes">',
            f"<p>{LEAD}</p><p>{BODY}</p>",
            title="Landtag beschließt Digitalgesetz - Kommunalportal",
        )
    )
    assert found.sites == ("Landesportal", "Kommunalportal")
    assert choose(found).startswith("Der Landtag hat am Donnerstag")


# points on lines of their own: cducsu-1
def test_points_on_lines_of_their_own_become_sentences() -> None:
    points = (
        "Mark Helfrich über das Potenzial der Technologie im Kampf gegen den Klimawandel&nbsp;\n"
        "Hohe Speicher- und Transportfähigkeit als wesentliche Vorteile\n"
        "Deutschland will Vorreiter und Weltmarktführer werden&nbsp;"
    )
    found = describe_page(page(f'<meta name="description" content="{points}">'))
    assert found.candidates[0][1] == (
        "Mark Helfrich über das Potenzial der Technologie im Kampf gegen den Klimawandel. "
        "Hohe Speicher- und Transportfähigkeit als wesentliche Vorteile. "
        "Deutschland will Vorreiter und Weltmarktführer werden."
    )


@pytest.mark.parametrize(
    "lines",
    [
        "Der Landtag hat das Digitalgesetz beschlossen.\nEs gilt ab Juli",  # sentences
        "Der Landtag hat das Gesetz für die\nKommunen des Landes beschlossen",  # one, wrapped
    ],
)
def test_lines_that_are_sentences_or_one_sentence_stay_as_they_are(lines: str) -> None:
    found = describe_page(page(f'<meta name="description" content="{lines}">'))
    assert found.candidates[0][1] == " ".join(lines.split())


# a heading above the text, its line break escaped once too often: volksstimme-1
def test_a_short_heading_above_the_text_becomes_a_sentence() -> None:
    text = f"Digitalgesetz beschlossen\\n {LEAD}"
    found = describe_page(page(f'<meta name="description" content="{text}">'))
    assert found.candidates[0][1] == f"Digitalgesetz beschlossen. {LEAD}"


def test_a_literal_line_break_is_no_text() -> None:
    assert clean("Bauanträge digital\\n ab Juli\\n") == "Bauanträge digital ab Juli"
    assert clean("Pfad C:\\neu anlegen") == "Pfad C:\\neu anlegen"


# words hyphenated as in print: mluk-brandenburg-1
def test_words_hyphenated_as_in_print_are_mended_where_the_main_text_has_them_whole() -> None:
    broken = (
        "Zum Ende des Jagdjahres ist die landesweite Erle-gungsprämie für Schwarzwild "
        "ausgelaufen. In drei Jahren zahl-te das Land 3,3 Millionen Euro an links-grüne "
        "Jägerinnen und Jäger aus."
    )
    main = (
        "Zum Ende des Jagdjahres ist die landesweite Erlegungsprämie für Schwarzwild "
        "ausgelaufen. In drei Jahren zahlte das Land 3,3 Millionen Euro an links-grüne "
        "Jägerinnen und Jäger aus. Die Prämie galt seit 2018."
    )
    teaser = choose(described(("meta description", broken), ("main text", main)))
    assert teaser == (
        "Zum Ende des Jagdjahres ist die landesweite Erlegungsprämie für Schwarzwild "
        "ausgelaufen. In drei Jahren zahlte das Land 3,3 Millionen Euro an links-grüne "
        "Jägerinnen und Jäger aus."
    )


def test_without_the_main_text_hyphenated_words_stay() -> None:
    text = "Die Bürger-Initiative hat die Unter-schriften dem Landtag am Montag übergeben."
    assert choose(described(("meta description", text))) == text


# cut without a mark: katholisch-at-1 (meta), piratenpartei-1 (og: and the main text)
def test_a_description_that_starts_a_longer_one_inside_a_word_was_cut() -> None:
    whole = (
        '"Plattform für Alleinerziehende" zum Tag der Kinderrechte: Betreuungszeiten auch '
        "außerhalb der Unterrichtszeit sicherstellen"
    )
    cut = whole[: whole.index("sicherstellen") + len("sichers")]
    teaser = choose(described(("meta description", cut), ("og:description", whole)))
    assert teaser == whole


def test_a_subtitle_the_main_text_opens_with_is_no_cut_description() -> None:
    subtitle = "Tareq Salem über sein Leben als Flüchtling während der Corona-Pandemie"
    main = f"{subtitle} in Italien und Hamburg. Nikolai Huke: Wo sind Sie eingereist?"
    assert choose(described(("og:description", subtitle), ("main text", main))) == subtitle


# a cut description the main text carries: osthessen-news-1, tegernseerstimme-1,
# correctiv-1, nnz-1
def test_the_main_text_goes_on_where_the_site_cut_its_lead() -> None:
    cut = LEAD[: LEAD.index("Fristen") + 3] + "..."
    teaser = choose(described(("meta description", cut), ("main text", f"{LEAD} {BODY}")))
    assert teaser == f"{LEAD} {BODY}"


def test_the_main_text_goes_on_where_a_cut_description_left_it() -> None:
    cut = f"{LEAD[:120]} Foto: Landtag Hessen Die Opposition kritisierte die…"
    teaser = choose(described(("meta description", cut), ("main text", f"{LEAD} {BODY}")))
    assert teaser == f"{LEAD} {BODY}"


def test_the_main_text_goes_on_where_a_cut_description_with_a_heading_left_it() -> None:
    # arbeit-und-arbeitsrecht-1, thebigbone-1: rubrics or a heading the text has not
    cut = f"Rechtsprechung, Kommunalrecht: {LEAD[:150]}..."
    teaser = choose(described(("meta description", cut), ("main text", f"{LEAD} {BODY}")))
    assert teaser == f"{LEAD} {BODY}"


def test_a_cut_description_from_further_down_gives_way_to_the_articles_opening() -> None:
    cut = f"{BODY[:150]}…"
    teaser = choose(described(("og:description", cut), ("main text", f"{LEAD} {BODY}")))
    assert teaser == f"{LEAD} {BODY}"


def test_a_lead_the_site_ends_in_dots_gives_its_complete_sentences() -> None:
    lead = f"{LEAD[: LEAD.index(' Die Opposition')]} Die Opposition sprach von Chaos..."
    main = f"{lead} {BODY}"
    teaser = choose(described(("meta description", lead), ("main text", main)))
    assert teaser == LEAD[: LEAD.index(" Die Opposition")]


def test_a_complete_description_comes_before_the_rest_of_a_cut_one() -> None:
    cut = f"{LEAD[:100]} ..."
    whole = "Das Digitalgesetz verpflichtet alle Kommunen zu digitalen Bauanträgen ab Juli."
    candidates = (("meta description", cut), ("JSON-LD", whole), ("main text", f"{LEAD} {BODY}"))
    assert choose(described(*candidates)) == whole


# captions and credits: kas-1, iwr-pressedienst-1, amnesty-1
@pytest.mark.parametrize(
    "caption",
    [
        "<figure><img src='a.jpg'><figcaption>Die Ministerin im Landtag. Foto: dpa"
        "</figcaption></figure>",
        "<div class='o-media__image-alt'><p>Auf dem Foto zu sehen: Die Ministerin mit den"
        " Abgeordneten im Plenarsaal des Landtags.</p></div>",
        "<p class='image-description'>Die Ministerin im Plenarsaal (Archivaufnahme).</p>"
        "<p class='image-copyright'>© Landtag Hessen</p>",
        "<a class='pressemeldung-foto mit-bildunterschrift' href='a.jpg'>Von links nach rechts:"
        " die Ministerin, der Präsident<br><em>© Landtag</em></a>",
        "<p>Foto: Michael von Lingen (Copyright)</p>",
    ],
)
def test_photo_captions_and_credits_are_left_out_of_the_main_text(caption: str) -> None:
    found = describe_page(page(body=f"{caption}<p>{LEAD}</p><p>{BODY}</p>"))
    assert found.candidates == (("main text", f"{LEAD} {BODY}"[:2_200]),)


# symbols as SEO templates use them: a sun, as in "TWO FOR FASHION ☀️ Eine Strohtasche …"
@pytest.mark.parametrize("mark", ["☀️", "★", "✓", "➤", "→", "▶", "⭐", "🔥"])
def test_symbols_and_emoji_make_an_seo_template(mark: str) -> None:
    text = f"Digitalgesetz {mark} Alle Fakten zum neuen Gesetz für Kommunen und Bürger."
    assert flaw(text, ["Landtag beschließt Digitalgesetz"]) == "an SEO template"
