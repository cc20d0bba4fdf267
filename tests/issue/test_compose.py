"""compose: the window, teasers, links, grouping, subject and cuts of an issue."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from digest.config import NewsletterSettings, parse_settings
from digest.core.errors import ComposeError
from digest.core.i18n import format_day, format_long_day, format_window
from digest.core.models import Article, Issue
from digest.issue.compose import (
    compose_issue,
    content_key,
    cut_issue,
    iso_week_window,
    link_with_utm,
    teaser_for,
)

BERLIN = ZoneInfo("Europe/Berlin")
NOW = datetime(2025, 2, 3, 7, 0, tzinfo=BERLIN)  # Monday of KW 6/2025, the usual run


def newsletter_table(**overrides: Any) -> dict[str, Any]:
    """One ``[[newsletters]]`` table of a small test configuration."""
    raw: dict[str, Any] = {
        "id": "wochenueberblick",
        "name": "Kommune Digital – Wochenüberblick",
        "sender": "Kommune Digital <newsletter@kommune-digital.example>",
        "subject": "{{ name }} {{ week_label }}: {{ top_title }}",
        "timezone": "Europe/Berlin",
        "locale": "de_DE",
        "max_per_category": 2,
        "teaser_length": 80,
        "utm": {"utm_source": "newsletter", "utm_campaign": "wochenueberblick-{week}"},
        "impressum": {
            "publisher": "Kommune Digital Verlag GmbH",
            "address": "Beispielstraße 12, 10115 Berlin",
            "contact": "redaktion@kommune-digital.example",
            "responsible": "Erika Mustermann",
        },
        "categories": [
            {"key": "politik", "title": "Politik"},
            {"key": "verwaltung", "title": "E-Government"},
            {"key": "smart-city", "title": "Smart City"},
        ],
    }
    raw.update(overrides)
    return raw


def make_newsletter(**overrides: Any) -> NewsletterSettings:
    data = {"secret_key": "test-secret-of-16-chars", "newsletters": [newsletter_table(**overrides)]}
    return parse_settings(data, environ={}).newsletters[0]


def make_article(
    uid: str, published: datetime, category: str = "politik", **fields: Any
) -> Article:
    values: dict[str, Any] = {
        "source": "test",
        "title": f"Meldung {uid}",
        "link": f"https://kommune-digital.example/meldung/{uid}",
        "summary": f"Zusammenfassung von {uid}.",
    }
    values.update(fields)
    return Article(uid=uid, published=published, category=category, **values)


def at(day: int, hour: int = 10, month: int = 1) -> datetime:
    return datetime(2025, month, day, hour, tzinfo=BERLIN)


def compose(articles: list[Article], newsletter: NewsletterSettings | None = None) -> Issue:
    key, start, end = iso_week_window("2025-W05", BERLIN, NOW)
    return compose_issue(
        newsletter or make_newsletter(),
        articles,
        key=key,
        window_start=start,
        window_end=end,
        now=NOW,
    )


def titles(issue: Issue) -> dict[str, list[str]]:
    return {s.category: [i.article.title for i in s.items] for s in issue.sections}


# --- the window ------------------------------------------------------------------------


def test_week_window_is_monday_to_monday_in_the_zone() -> None:
    key, start, end = iso_week_window("2025-W05", BERLIN, NOW)
    assert key == "2025-W05"
    assert start == datetime(2025, 1, 27, 0, 0, tzinfo=BERLIN)
    assert end == datetime(2025, 2, 3, 0, 0, tzinfo=BERLIN)
    assert start.tzinfo is BERLIN and end.tzinfo is BERLIN


def elapsed(start: datetime, end: datetime) -> timedelta:
    # Subtracting two datetimes of the same zone gives wall-clock time; compare in UTC.
    return end.astimezone(UTC) - start.astimezone(UTC)


def test_week_with_spring_dst_switch_has_167_hours() -> None:
    _, start, end = iso_week_window("2025-W13", BERLIN, NOW)
    assert (start.hour, end.hour) == (0, 0)
    assert (start.utcoffset(), end.utcoffset()) == (timedelta(hours=1), timedelta(hours=2))
    assert elapsed(start, end) == timedelta(hours=167)


def test_week_with_autumn_dst_switch_has_169_hours() -> None:
    _, start, end = iso_week_window("2025-W43", BERLIN, NOW)
    assert start == datetime(2025, 10, 20, tzinfo=BERLIN)
    assert elapsed(start, end) == timedelta(hours=169)


def test_week_one_starts_in_the_previous_year() -> None:
    _, start, end = iso_week_window("2025-W01", BERLIN, NOW)
    assert start == datetime(2024, 12, 30, tzinfo=BERLIN)
    assert end == datetime(2025, 1, 6, tzinfo=BERLIN)


def test_week_53_exists_only_in_long_years() -> None:
    key, start, end = iso_week_window("2026-W53", BERLIN, NOW)
    assert key == "2026-W53"
    assert start == datetime(2026, 12, 28, tzinfo=BERLIN)
    assert end == datetime(2027, 1, 4, tzinfo=BERLIN)
    with pytest.raises(ComposeError):
        iso_week_window("2025-W53", BERLIN, NOW)


def test_no_week_means_the_previous_week_in_the_zone() -> None:
    assert iso_week_window(None, BERLIN, NOW)[0] == "2025-W05"
    # Sunday 23:30 UTC is already Monday in Berlin: the previous week is W05, not W04.
    late_sunday_utc = datetime(2025, 2, 2, 23, 30, tzinfo=UTC)
    assert iso_week_window(None, BERLIN, late_sunday_utc)[0] == "2025-W05"
    assert iso_week_window(None, ZoneInfo("UTC"), late_sunday_utc)[0] == "2025-W04"
    new_year = datetime(2025, 1, 1, 12, tzinfo=BERLIN)
    assert iso_week_window(None, BERLIN, new_year)[0] == "2024-W52"


def test_week_key_is_normalised() -> None:
    assert iso_week_window(" 2025-w05 ", BERLIN, NOW)[0] == "2025-W05"


def test_bad_week_names_the_format() -> None:
    with pytest.raises(ComposeError) as info:
        iso_week_window("2025-W99", BERLIN, NOW)
    assert str(info.value) == "bad week '2025-W99': use YYYY-Www, e.g. 2025-W05"


@pytest.mark.parametrize("week", ["2025-W00", "2025-5", "25-W05", "2025W05", "", "KW 5"])
def test_other_bad_weeks(week: str) -> None:
    with pytest.raises(ComposeError, match="use YYYY-Www"):
        iso_week_window(week, BERLIN, NOW)


# --- teasers ----------------------------------------------------------------------------


def test_short_text_is_not_cut() -> None:
    assert teaser_for("Kurzer Text.", 300) == "Kurzer Text."
    exact = "x" * 10
    assert teaser_for(exact, 10) == exact


def test_teaser_strips_tags_and_decodes_entities() -> None:
    html = '<p>Bund &amp; L&auml;nder&nbsp;<a href="/x">planen</a> &#8222;OZG&#8220;</p>'
    assert teaser_for(html, 300) == "Bund & Länder planen „OZG“"


def test_teaser_separates_blocks_and_drops_scripts() -> None:
    html = "<h2>Titel</h2><p>Erster\n\n  Absatz</p><script>alert(1)</script><p>Zweiter</p>"
    assert teaser_for(html, 300) == "Titel Erster Absatz Zweiter"


def test_teaser_is_cut_at_a_word_boundary_with_ellipsis() -> None:
    text = "Die Stadt Wolfsburg bündelt Informationstechnologie und Smart City"
    teaser = teaser_for(text, 30)
    assert teaser == "Die Stadt Wolfsburg bündelt…"
    assert len(teaser) <= 30


def test_teaser_drops_punctuation_before_the_ellipsis() -> None:
    assert teaser_for("Bund, Länder; Kommunen: alle gemeinsam", 14) == "Bund, Länder…"
    assert teaser_for("Bund, Länder; Kommunen: alle gemeinsam", 25) == "Bund, Länder; Kommunen…"


def test_teaser_cuts_inside_a_word_only_when_it_alone_is_too_long() -> None:
    assert teaser_for("Donaudampfschifffahrtsgesellschaft", 10) == "Donaudamp…"


@pytest.mark.parametrize("limit", range(1, 70))
def test_teaser_respects_every_limit_and_keeps_whole_words(limit: int) -> None:
    text = "Hessen: Kommunale Verwaltungsdigitalisierung wird gestärkt, sagt das Land."
    teaser = teaser_for(f"<p>{text}</p>", limit)
    assert len(teaser) <= limit
    assert teaser.endswith("…")
    kept = teaser.removesuffix("…")
    assert text.startswith(kept)
    if len(kept) >= len("Hessen"):  # longer than the first word: no hard cut
        rest = text[len(kept) :]
        assert not rest[0].isalnum()


LONG = (
    "Die Stadt plant z. B. neue Radwege, die Nr. 5 fährt ab dem 28.01.2025 öfter. "
    "Dr. Müller stellt das Konzept am 14. Mai im Rathaus vor. "
    "Danach beraten die Ausschüsse über die Kosten, die Reihenfolge der Abschnitte und "
    "die Beteiligung der Anwohner, die bis zum Sommer Einwände erheben können."
)


@pytest.mark.parametrize("limit", [140, 160, 200])
def test_teaser_ends_at_the_last_sentence_that_fits(limit: int) -> None:
    assert teaser_for(f"<p>{LONG}</p>", limit) == (
        "Die Stadt plant z. B. neue Radwege, die Nr. 5 fährt ab dem 28.01.2025 öfter. "
        "Dr. Müller stellt das Konzept am 14. Mai im Rathaus vor."
    )


@pytest.mark.parametrize("limit", [80, 100, 130])
def test_abbreviations_and_dates_are_no_sentence_ends(limit: int) -> None:
    # Within these limits only the first sentence ends; "z. B.", "Nr. 5", "28.01.2025",
    # "Dr." and "14." do not end one.
    assert teaser_for(LONG, limit) == (
        "Die Stadt plant z. B. neue Radwege, die Nr. 5 fährt ab dem 28.01.2025 öfter."
    )
    first_only = "Dr. Müller stellt das Konzept am 14. Mai im Rathaus vor, nicht früher"
    teaser = teaser_for(first_only + " und nicht später.", 60)
    assert teaser.endswith("…") and first_only.startswith(teaser[:-1])


@pytest.mark.parametrize("limit", [60, 80, 100])
def test_longer_abbreviations_are_no_sentence_ends(limit: int) -> None:
    text = (
        "Die Sanierung kostet rund 3,5 Mio. Euro, sagt Prof. Schmidt vom Bauamt der Stadt "
        "am Montag im Ausschuss für Bauen."
    )
    teaser = teaser_for(text, limit)
    assert teaser.endswith("…") and text.startswith(teaser[:-1])
    assert len(teaser) > limit - 15


def test_a_sentence_under_a_third_of_the_limit_is_cut_at_a_word_instead() -> None:
    text = "Berlin. " + "Der Senat beschließt ein neues Gesetz zur Verwaltung " * 5
    teaser = teaser_for(text, 90)
    assert teaser.endswith("…") and len(teaser) > 60 and len(teaser) <= 90


# --- links ------------------------------------------------------------------------------


UTM = {"utm_source": "newsletter", "utm_medium": "email", "utm_campaign": "wb-{week}"}


def test_utm_parameters_are_added_with_the_issue_key() -> None:
    url = link_with_utm("https://example.org/meldung/1", UTM, "2025-W05")
    assert url == (
        "https://example.org/meldung/1"
        "?utm_source=newsletter&utm_medium=email&utm_campaign=wb-2025-W05"
    )


def test_utm_keeps_query_and_fragment() -> None:
    url = link_with_utm("https://example.org/a?id=5&x=%C3%A4#top", UTM, "2025-W05")
    assert url.startswith("https://example.org/a?id=5&x=%C3%A4&utm_source=newsletter&")
    assert url.endswith("utm_campaign=wb-2025-W05#top")


def test_utm_does_not_overwrite_parameters_of_the_link() -> None:
    url = link_with_utm("https://example.org/a?utm_source=rss", UTM, "2025-W05")
    assert url == "https://example.org/a?utm_source=rss&utm_medium=email&utm_campaign=wb-2025-W05"


def test_utm_values_are_encoded_and_empty_utm_changes_nothing() -> None:
    assert link_with_utm("https://e.org/", {"utm_term": "a b&c"}, "k").endswith("utm_term=a+b%26c")
    assert link_with_utm("https://e.org/x?a=1", {}, "k") == "https://e.org/x?a=1"


# --- composing --------------------------------------------------------------------------


def test_articles_are_grouped_in_category_order_newest_first_and_limited() -> None:
    issue = compose(
        [
            make_article("v1", at(28), "verwaltung"),
            make_article("p1", at(27), "politik"),
            make_article("p2", at(29), "politik"),
            make_article("p3", at(30), "politik"),
            make_article("x1", at(28), "sport"),  # not a category of the newsletter
        ]
    )
    assert titles(issue) == {
        "politik": ["Meldung p3", "Meldung p2"],
        "verwaltung": ["Meldung v1"],
    }
    assert [s.title for s in issue.sections] == ["Politik", "E-Government"]


def test_only_articles_inside_the_window_count() -> None:
    issue = compose(
        [
            make_article("first", datetime(2025, 1, 27, 0, 0, tzinfo=BERLIN)),
            make_article("before", datetime(2025, 1, 26, 23, 59, tzinfo=BERLIN)),
            make_article("end", datetime(2025, 2, 3, 0, 0, tzinfo=BERLIN)),
            make_article("utc", datetime(2025, 2, 2, 22, 59, tzinfo=UTC)),  # 23:59 Berlin
        ]
    )
    assert titles(issue) == {"politik": ["Meldung utc", "Meldung first"]}


def test_teaser_from_summary_else_content_and_link_with_utm() -> None:
    issue = compose(
        [
            make_article("a", at(28), summary="<p>Die &uuml;bliche Zusammenfassung</p>"),
            make_article("b", at(29), "verwaltung", summary="", content="<p>Nur Inhalt</p>"),
        ]
    )
    first, second = (s.items[0] for s in issue.sections)
    assert first.teaser == "Die übliche Zusammenfassung"
    assert second.teaser == "Nur Inhalt"
    assert first.url == (
        "https://kommune-digital.example/meldung/a"
        "?utm_source=newsletter&utm_campaign=wochenueberblick-2025-W05"
    )


def test_subject_and_labels_in_german() -> None:
    issue = compose(
        [
            make_article("v", at(31), "verwaltung", title="Jüngste Meldung"),
            make_article("p", at(28), title="Größere Änderungen in Baden-Württemberg"),
        ]
    )
    assert issue.week_label == "KW 5/2025"
    assert issue.date_label == "27.01.2025 – 02.02.2025"
    # top_title: the newest article of the first section, not the newest overall
    assert issue.subject == (
        "Kommune Digital – Wochenüberblick KW 5/2025: Größere Änderungen in Baden-Württemberg"
    )


def test_subject_is_one_line_and_offers_every_name() -> None:
    template = "{{ name }}\r\n{{ week }}/{{ year }} | {{ date_label }} |  {{ top_title }}"
    newsletter = make_newsletter(subject=template)
    issue = compose([make_article("p", at(28), title="Zeile\r\nBcc: x@example.org")], newsletter)
    assert issue.subject == (
        "Kommune Digital – Wochenüberblick 5/2025 | 27.01.2025 – 02.02.2025 | "
        "Zeile Bcc: x@example.org"
    )


def test_bad_subject_template_is_a_compose_error() -> None:
    with pytest.raises(ComposeError, match="subject template.*nope"):
        compose([make_article("p", at(28))], make_newsletter(subject="{{ nope }}"))


def test_duplicate_uids_keep_the_latest_revision() -> None:
    old = make_article("p", at(28), title="Alt")
    new = dataclasses.replace(old, title="Neu", updated=at(29))
    assert titles(compose([new, old])) == {"politik": ["Neu"]}


def test_empty_window_gives_an_empty_issue() -> None:
    issue = compose([])
    assert issue.is_empty and issue.sections == ()
    assert issue.subject == "Kommune Digital – Wochenüberblick KW 5/2025:"


# --- cuts and content keys ----------------------------------------------------------------


def regional_issue() -> Issue:
    return compose(
        [
            make_article("p-by", at(30), "politik", region="Bayern"),
            make_article("p-he", at(29), "politik", region="Hessen"),
            make_article("v-all", at(28), "verwaltung"),
            make_article("s-he", at(27), "smart-city", region="Hessen"),
        ]
    )


def test_cut_by_region_keeps_articles_without_region() -> None:
    cut = cut_issue(regional_issue(), None, frozenset({"Bayern"}))
    assert titles(cut) == {"politik": ["Meldung p-by"], "verwaltung": ["Meldung v-all"]}


def test_cut_by_category_drops_empty_sections() -> None:
    cut = cut_issue(regional_issue(), frozenset({"smart-city", "verwaltung"}), None)
    assert titles(cut) == {"verwaltung": ["Meldung v-all"], "smart-city": ["Meldung s-he"]}
    both = cut_issue(regional_issue(), frozenset({"smart-city"}), frozenset({"Bayern"}))
    assert both.is_empty


def test_cut_without_limits_is_the_whole_issue() -> None:
    issue = regional_issue()
    assert cut_issue(issue, None, None) == issue


def test_cut_renders_the_subject_again_when_given_the_newsletter() -> None:
    issue = regional_issue()
    cut = cut_issue(issue, frozenset({"verwaltung"}), None, newsletter=make_newsletter())
    assert issue.subject.endswith(": Meldung p-by")
    assert cut.subject.endswith(": Meldung v-all")
    assert cut_issue(issue, frozenset({"verwaltung"}), None).subject == issue.subject


def test_content_key_is_stable_and_follows_the_content() -> None:
    issue = regional_issue()
    key = content_key(issue)
    assert len(key) == 16 and int(key, 16) >= 0
    assert content_key(regional_issue()) == key
    assert content_key(cut_issue(issue, None, None)) == key
    bayern = cut_issue(issue, None, frozenset({"Bayern"}))
    hessen = cut_issue(issue, None, frozenset({"Hessen"}))
    assert len({key, content_key(bayern), content_key(hessen)}) == 3
    other_week = dataclasses.replace(issue, key="2025-W06")
    assert content_key(other_week) != key


# --- dates --------------------------------------------------------------------------------


def test_day_formats_in_the_zone_and_locale() -> None:
    late = datetime(2025, 1, 29, 23, 30, tzinfo=UTC)  # already Thursday in Berlin
    assert format_day(late, "de_DE", BERLIN) == "30.01.2025"
    assert format_long_day(late, "de_DE", BERLIN) == "Donnerstag, 30. Januar 2025"
    assert format_long_day(late, "en_US", BERLIN) == "Thursday, January 30, 2025"


def test_window_label_ends_on_the_last_included_day() -> None:
    _, start, end = iso_week_window("2025-W13", BERLIN, NOW)
    assert format_window(start, end, "de_DE", BERLIN) == "24.03.2025 – 30.03.2025"


def test_inline_tags_add_no_space_but_blocks_do() -> None:
    from digest.issue.compose import plain_text

    assert (
        plain_text("die <strong>elektronische Akte</strong>, ein <a href='x'>Portal</a>.")
        == "die elektronische Akte, ein Portal."
    )
    assert plain_text("<p>Erster Absatz.</p><p>Zweiter<br>Satz</p>") == (
        "Erster Absatz. Zweiter Satz"
    )
