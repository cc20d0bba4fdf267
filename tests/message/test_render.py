"""render: templates → MJML → HTML and text, personal placeholders, errors, size.

Golden files live in tests/message/golden/. After a deliberate change of the templates or of
compose, rewrite them with ``DIGEST_UPDATE_GOLDEN=1 pytest tests/message/test_render.py`` and
review the diff. The HTML golden file has a line break between adjacent tags so that
the diff is readable; the comparison applies the same transformation.
"""

from __future__ import annotations

import dataclasses
import os
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from digest.config import NewsletterSettings, Settings, parse_settings
from digest.core.errors import RenderError
from digest.core.models import Article, Image, Issue
from digest.issue.compose import (
    MAX_SUBJECT_LENGTH,
    compose_issue,
    cut_issue,
    format_issue,
    iso_week_window,
)
from digest.message import render
from digest.message.render import PERSONAL_FIELDS, personalize, placeholder, render_variant
from tests.issue.test_compose import BERLIN, NOW, make_article, newsletter_table

GOLDEN = Path(__file__).parent / "golden"

FIELDS = {
    "name": "Jürgen Böhm",
    "email": "juergen.boehm@example.org",
    "unsubscribe_url": "https://kommune-digital.example/u/TOKEN-123?list=wochenueberblick&x=1",
    "preferences_url": "https://kommune-digital.example/p/TOKEN-123",
}

TEASER = (
    "Im Frühjahr startet die neue Umsetzungsphase der Zukunftskommission #Digitales "
    "Bayern 5.0. Unter den Maßnahmen ist auch die Einführung eines einheitlichen "
    "kommunalen IT-Dienstleisters bis Ende 2025. Dabei gehe es um die Sicherung "
    "kommunaler Handlungsfähigkeit ebenso wie um die nationale Koordination und die "
    "Berücksichtigung EU-weiter Strategien."
)


def make_settings(**newsletter: Any) -> Settings:
    table = newsletter_table(
        teaser_length=300,
        max_per_category=6,
        utm={"utm_source": "newsletter", "utm_medium": "email"},
        categories=[
            {"key": "politik", "title": "Politik"},
            {"key": "verwaltung", "title": "E-Government"},
            {"key": "smart-city", "title": "Smart City"},
            {"key": "sicherheit", "title": "IT-Sicherheit"},
            {"key": "infrastruktur", "title": "Breitband & Infrastruktur"},
        ],
        **newsletter,
    )
    table["impressum"] = {
        **table["impressum"],
        "responsible": "Erika Mustermann (V.i.S.d.P.)",
        "url": "https://kommune-digital.example/impressum",
    }
    data = {
        "secret_key": "test-secret-of-16-chars",
        "public_url": "https://kommune-digital.example/",
        "newsletters": [table],
    }
    return parse_settings(data, environ={})


def compose_w05(newsletter: NewsletterSettings, articles: list[Article]) -> Issue:
    key, start, end = iso_week_window("2025-W05", BERLIN, NOW)
    return compose_issue(newsletter, articles, key=key, window_start=start, window_end=end, now=NOW)


def at(day: int, hour: int) -> datetime:
    return datetime(2025, 1, day, hour, 30, tzinfo=BERLIN)


GOLDEN_ARTICLES = [
    make_article(
        "k21-1001",
        at(28, 9),
        title="Bayern: Einheitlicher kommunaler IT-Dienstleister geplant",
        link="https://kommune-digital.example/meldung/1001?ref=rss#start",
        summary=f"<p>{TEASER}</p>",
        region="Bayern",
        image=Image("https://kommune-digital.example/bilder/bayern-flaggen.jpg", "bayern-Flaggen"),
    ),
    make_article(
        "k21-1002",
        at(29, 14),
        title="Digitalisierung: IT-Budgets zusammenziehen",
        summary="<p>Dr. Martin Hagen spricht über Registermodernisierung &amp; "
        "mehr Zentralisierung bei der Steuerung von IT-Gro&szlig;projekten.</p>",
        label="Interview",
    ),
    make_article(
        "k21-1003",
        at(27, 8),
        "verwaltung",
        title="Hessen: Kommunale Verwaltungsdigitalisierung wird gestärkt",
        summary="",
        content="<div><p>Das Land Hessen und die kommunalen Spitzenverbände wollen die "
        "Verwaltungsdigitalisierung weiter unterstützen.</p><p>Die Koordinierungsstelle "
        "OZG-Kommunal wird zur Kompetenzstelle erweitert.</p></div>",
        region="Hessen",
    ),
    make_article(
        "k21-1004",
        at(31, 16),
        "smart-city",
        title="Wolfsburg: Neuer smarter Geschäftsbereich",
        summary="Informationstechnologie und Smart City sind jetzt ein Geschäftsbereich.",
        image=Image("https://kommune-digital.example/bilder/organigramm.png"),
        label="Bericht",
    ),
]


@pytest.fixture
def settings() -> Settings:
    return make_settings()


@pytest.fixture
def newsletter(settings: Settings) -> NewsletterSettings:
    return settings.newsletters[0]


@pytest.fixture
def issue(newsletter: NewsletterSettings) -> Issue:
    return compose_w05(newsletter, GOLDEN_ARTICLES)


def readable_html(html: str) -> str:
    return html.replace("><", ">\n<")


def check_golden(name: str, actual: str) -> None:
    path = GOLDEN / name
    if os.environ.get("DIGEST_UPDATE_GOLDEN") == "1":
        path.write_text(actual, encoding="utf-8")
        return
    assert path.exists(), f"no golden file {path}: run with DIGEST_UPDATE_GOLDEN=1"
    expected = path.read_text(encoding="utf-8")
    assert actual == expected, (
        f"{name} differs from tests/message/golden/{name}; if the change is intended, rerun with "
        "DIGEST_UPDATE_GOLDEN=1 and review the diff"
    )


# --- golden files ---------------------------------------------------------------------------


def test_golden_issue(issue: Issue) -> None:
    check_golden("issue.txt", format_issue(issue))


def test_golden_html_and_text(
    settings: Settings, newsletter: NewsletterSettings, issue: Issue
) -> None:
    html, text = personalize(render_variant(settings, newsletter, issue), FIELDS)
    check_golden("digest.html", readable_html(html))
    check_golden("digest.txt", text)


# --- email standards --------------------------------------------------------------------------


@pytest.fixture
def personal_html_text(
    settings: Settings, newsletter: NewsletterSettings, issue: Issue
) -> tuple[str, str]:
    return personalize(render_variant(settings, newsletter, issue), FIELDS)


def test_html_language_images_and_tables(personal_html_text: tuple[str, str]) -> None:
    html, _ = personal_html_text
    assert html.startswith('<!doctype html><html lang="de"')
    images = re.findall(r"<img\b[^>]*>", html)
    assert len(images) == 2
    for img in images:
        assert re.search(r'\salt="[^"]+"', img), img
    assert 'alt="Wolfsburg: Neuer smarter Geschäftsbereich"' in html  # no alt: the title
    tables = re.findall(r"<table\b[^>]*>", html)
    assert tables
    for table in tables:
        assert 'role="presentation"' in table, table


def test_both_parts_have_unsubscribe_preferences_and_impressum(
    personal_html_text: tuple[str, str],
) -> None:
    html, text = personal_html_text
    escaped_unsubscribe = FIELDS["unsubscribe_url"].replace("&", "&amp;")
    assert (
        f'<a href="{escaped_unsubscribe}" style="color:#1d3557;font-weight:bold;">Abmelden</a>'
        in html
    )
    assert f"Abmelden: {FIELDS['unsubscribe_url']}\n" in text
    assert f'<a href="{FIELDS["preferences_url"]}"' in html and "Einstellungen ändern" in html
    assert f"Einstellungen ändern: {FIELDS['preferences_url']}\n" in text
    for part in (html, text):
        # the archive is off by default: no link to it
        assert "/archive/" not in part
        assert "Kommune Digital Verlag GmbH" in part
        assert "Beispielstraße 12, 10115 Berlin" in part
        assert "Verantwortlich: Erika Mustermann (V.i.S.d.P.)" in part
        assert "https://kommune-digital.example/impressum" in part
        assert re.search(r"juergen\.boehm@example\.org,\s+weil Sie den Newsletter", part)


def test_with_the_archive_on_both_parts_link_to_the_issue_page_first(issue: Issue) -> None:
    settings = make_settings(archive=True)
    url = "https://kommune-digital.example/archive/wochenueberblick/2025-W05"
    html, text = personalize(render_variant(settings, settings.newsletters[0], issue), FIELDS)
    assert text.startswith(f"Im Browser ansehen: {url}\n\nKommune Digital")
    link = f'<a href="{url}" style="color:#1d3557;">Im Browser ansehen</a>'
    assert html.count(link) == 1
    # above the newsletter's name, the first text of the body after the preheader
    assert html.index(link) < html.index(">Kommune Digital – Wochenüberblick</div>")


def test_archive_copy_has_no_personal_line_or_link(issue: Issue) -> None:
    settings = make_settings(archive=True)
    variant = render_variant(settings, settings.newsletters[0], issue, archive=True)
    for part in (variant.html, variant.text):
        for field in PERSONAL_FIELDS:
            if field != "greeting":
                assert placeholder(field, variant.marker) not in part, field
        assert "Im Browser ansehen" not in part and "/archive/" not in part
        assert "Abmelden" not in part and "Einstellungen ändern" not in part
        assert "https://kommune-digital.example/subscribe/wochenueberblick" in part
        assert "Diesen Newsletter abonnieren" in part
        assert "Kommune Digital Verlag GmbH" in part  # the Impressum stays
    assert "<mj-preview" not in variant.html and "display:none" not in variant.html
    no_signup = make_settings(archive=True, signup=False)
    variant = render_variant(no_signup, no_signup.newsletters[0], issue, archive=True)
    assert "/subscribe/" not in variant.html and "/subscribe/" not in variant.text


def test_text_part_has_the_same_article_links(
    issue: Issue, personal_html_text: tuple[str, str]
) -> None:
    html, text = personal_html_text
    for item in (i for s in issue.sections for i in s.items):
        assert f"mehr…: {item.url}\n" in text
        assert f'href="{item.url.replace("&", "&amp;")}"' in html
    assert "[28.01.2025] Im Frühjahr startet" in text
    assert "INTERVIEW\nDigitalisierung: IT-Budgets zusammenziehen\n" in text


def test_greeting_with_and_without_name(settings: Settings, issue: Issue) -> None:
    variant = render_variant(settings, settings.newsletters[0], issue)
    html, text = personalize(variant, FIELDS)
    assert "Guten Tag Jürgen Böhm," in html and "\nGuten Tag Jürgen Böhm,\n" in text
    html, text = personalize(variant, {**FIELDS, "name": "  "})
    assert "Guten Tag," in html and "\nGuten Tag,\n" in text
    html, _ = personalize(variant, {**FIELDS, "greeting": "Liebe Leserin,"})
    assert "Liebe Leserin," in html


def test_preheader_from_titles_or_config(settings: Settings, issue: Issue) -> None:
    newsletter = settings.newsletters[0]
    html = render_variant(settings, newsletter, issue).html
    preview = re.search(r'<div style="display:none;[^"]*">([^<]*)', html)
    assert preview
    assert preview[1].startswith(
        "Digitalisierung: IT-Budgets zusammenziehen · "
        "Bayern: Einheitlicher kommunaler IT-Dienstleister geplant · "
        "Hessen: Kommunale Verwaltungsdigitalisierung wird gestärkt&#847;"
    )
    custom = dataclasses.replace(newsletter, preheader="Die Woche in den Kommunen")
    assert ">Die Woche in den Kommunen&#847;" in render_variant(settings, custom, issue).html


# --- personal placeholders ---------------------------------------------------------------------


def test_placeholders_survive_compilation_and_are_all_filled(
    settings: Settings, newsletter: NewsletterSettings, issue: Issue
) -> None:
    variant = render_variant(settings, newsletter, issue)
    for field in PERSONAL_FIELDS:
        if field not in ("name", "preferences_url"):  # not printed by the bundled templates
            assert placeholder(field, variant.marker) in variant.html, field
            assert placeholder(field, variant.marker) in variant.text, field
    html, text = personalize(variant, FIELDS)
    assert "%%DIGEST-" not in html and "%%DIGEST-" not in text


def test_feed_text_cannot_name_a_placeholder(
    settings: Settings, newsletter: NewsletterSettings
) -> None:
    """A link asking for the reader's unsubscribe URL gets the text it wrote, nothing else."""
    forged = make_article(
        "forged",
        at(28, 10),
        title="Titel %%DIGEST:unsubscribe_url%% %%DIGEST:code%%",
        link="https://evil.example/r?u=%%DIGEST:unsubscribe_url%%",
    )
    issue = compose_w05(newsletter, [forged])
    variant = render_variant(settings, newsletter, issue)
    guessed = variant.marker[:-1] + ("0" if variant.marker[-1] != "0" else "1")
    assert guessed != variant.marker
    html, text = personalize(variant, FIELDS)
    assert FIELDS["unsubscribe_url"] in text  # the footer's own link is filled in
    for part in (html, text):
        assert "evil.example/r?u=%%DIGEST:unsubscribe_url%%" in part
        assert f"u={FIELDS['unsubscribe_url']}" not in part
    assert render_variant(settings, newsletter, issue).marker != variant.marker


def test_missing_personal_field_is_an_error(
    settings: Settings, newsletter: NewsletterSettings, issue: Issue
) -> None:
    variant = render_variant(settings, newsletter, issue)
    fields = {k: v for k, v in FIELDS.items() if k != "unsubscribe_url"}
    with pytest.raises(RenderError, match="unsubscribe_url"):
        personalize(variant, fields)


def test_personal_values_are_escaped_in_html_only(
    settings: Settings, newsletter: NewsletterSettings, issue: Issue
) -> None:
    variant = render_variant(settings, newsletter, issue)
    name = '<script>alert("x")</script> %%DIGEST:unsubscribe_url%%'
    html, text = personalize(variant, {**FIELDS, "name": name})
    assert "<script>" not in html
    assert (
        "Guten Tag &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; %%DIGEST:unsubscribe_url%%,"
        in html
    )
    assert f"Guten Tag {name}," in text  # text/plain shows it as typed, not expanded again


def test_hostile_article_fields_are_escaped(
    settings: Settings, newsletter: NewsletterSettings
) -> None:
    hostile = make_article(
        "evil",
        at(28, 10),
        title="<img src=x onerror=alert(1)>",
        link="javascript:alert(1)",
        summary="<script>alert(2)</script><b onclick=alert(3)>fett</b>",
        label="<i>x</i>",
        image=Image("https://example.org/bild.jpg", '" onerror="alert(5)'),
    )
    bad_image = make_article("evil-2", at(29, 10), image=Image("javascript:alert(4)"))
    issue = compose_w05(newsletter, [hostile, bad_image])
    html, text = personalize(render_variant(settings, newsletter, issue), FIELDS)
    assert "<img src=x" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "alert(2)" not in html and "onclick" not in html
    assert "javascript:" not in html
    assert len(re.findall(r"<img\b", html)) == 1  # the javascript: image is left out
    assert 'alt="&#34; onerror=&#34;alert(5)"' in html
    assert "&lt;I&gt;X&lt;/I&gt;" in html
    assert "<img src=x onerror=alert(1)>" in text  # plain text is not markup
    assert "javascript:" not in text


# --- compiled once per variant -----------------------------------------------------------------


def test_mjml_is_compiled_once_for_all_recipients(
    settings: Settings,
    newsletter: NewsletterSettings,
    issue: Issue,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []
    compile_for_real = render.mjml2html

    def counting_mjml2html(source: str, **options: Any) -> str:
        calls.append(len(source))
        return compile_for_real(source, **options)

    monkeypatch.setattr(render, "mjml2html", counting_mjml2html)
    variant = render_variant(settings, newsletter, issue)
    for n in range(100):
        html, text = personalize(variant, {**FIELDS, "email": f"leser{n}@example.org"})
        assert f"leser{n}@example.org" in html and f"leser{n}@example.org" in text
    assert len(calls) == 1


def test_variant_carries_the_cut_and_its_content_key(
    settings: Settings, newsletter: NewsletterSettings, issue: Issue
) -> None:
    bayern = cut_issue(issue, None, frozenset({"Bayern"}), newsletter=newsletter)
    whole, cut = (render_variant(settings, newsletter, i) for i in (issue, bayern))
    assert whole.content_key != cut.content_key
    assert cut.issue is bayern and cut.issue_key == "2025-W05"
    assert "Hessen: Kommunale" in whole.html and "Hessen: Kommunale" not in cut.html
    assert "Hessen: Kommunale" not in cut.text


# --- size -----------------------------------------------------------------------------------


def thirty_articles(newsletter: NewsletterSettings) -> list[Article]:
    categories = [c.key for c in newsletter.categories]
    start = datetime(2025, 1, 27, 6, tzinfo=BERLIN)
    return [
        make_article(
            f"k21-{n:04d}",
            start + timedelta(hours=5 * n),
            categories[n % len(categories)],
            title=f"Bayern: Einheitlicher kommunaler IT-Dienstleister geplant ({n})",
            link=f"https://www.kommune-digital.example/meldung_{45000 + n}"
            "_Einheitlicher+kommunaler+IT-Dienstleister+geplant.html",
            summary=f"<p>{TEASER}</p>",
            image=Image(
                f"https://www.kommune-digital.example/bilder/2025/01/meldung-{45000 + n}.jpg",
                "Bayerische Flaggen vor dem Landtag in München",
            ),
            label="Interview" if n % 3 == 0 else None,
            region="Bayern",
        )
        for n in range(30)
    ]


def test_html_of_a_full_digest_stays_below_gmail_clipping(settings: Settings) -> None:
    newsletter = settings.newsletters[0]
    issue = compose_w05(newsletter, thirty_articles(newsletter))
    assert len(issue.articles) == 30
    html, text = personalize(render_variant(settings, newsletter, issue), FIELDS)
    size = len(html.encode("utf-8"))
    print(f"HTML of a 30-article digest: {size} bytes; text part: {len(text.encode())} bytes")
    assert size < 90_000


# --- errors ---------------------------------------------------------------------------------------


def with_override(settings: Settings, folder: Path) -> tuple[Settings, NewsletterSettings]:
    newsletter = dataclasses.replace(settings.newsletters[0], templates=str(folder))
    return dataclasses.replace(settings, newsletters=(newsletter,)), newsletter


def test_syntax_error_names_template_and_line(
    settings: Settings, issue: Issue, tmp_path: Path
) -> None:
    (tmp_path / "digest.mjml.j2").write_text(
        "<mjml>\n  <mj-body>\n    {% for x in %}\n  </mj-body>\n</mjml>\n", encoding="utf-8"
    )
    settings, newsletter = with_override(settings, tmp_path)
    with pytest.raises(RenderError) as info:
        render_variant(settings, newsletter, issue)
    assert info.value.template == "digest.mjml.j2"
    assert info.value.line == 3
    assert "digest.mjml.j2, line 3" in str(info.value)


def test_undefined_variable_names_template_and_line(
    settings: Settings, issue: Issue, tmp_path: Path
) -> None:
    (tmp_path / "digest.txt.j2").write_text(
        "{{ newsletter.name }}\n\n{% for section in issue.sections %}\n"
        "{{ section.title }}\n{{ section.subtitle }}\n{% endfor %}\n",
        encoding="utf-8",
    )
    settings, newsletter = with_override(settings, tmp_path)
    with pytest.raises(RenderError) as info:
        render_variant(settings, newsletter, issue)
    assert (info.value.template, info.value.line) == ("digest.txt.j2", 5)
    assert "digest.txt.j2, line 5" in str(info.value)
    assert "subtitle" in str(info.value)


def test_missing_included_template(settings: Settings, issue: Issue, tmp_path: Path) -> None:
    (tmp_path / "digest.txt.j2").write_text("a\n{% include 'footer.txt.j2' %}\n", encoding="utf-8")
    settings, newsletter = with_override(settings, tmp_path)
    with pytest.raises(RenderError, match=r"template footer\.txt\.j2: not found in"):
        render_variant(settings, newsletter, issue)


def test_mjml_errors_are_render_errors(settings: Settings, issue: Issue, tmp_path: Path) -> None:
    settings, newsletter = with_override(settings, tmp_path)
    (tmp_path / "digest.mjml.j2").write_text("<mjml><mj-body><mj-text>", encoding="utf-8")
    with pytest.raises(RenderError, match="digest.mjml.j2: MJML does not compile"):
        render_variant(settings, newsletter, issue)
    (tmp_path / "digest.mjml.j2").write_text(
        "<mjml><mj-body><mj-sektion></mj-sektion></mj-body></mjml>", encoding="utf-8"
    )
    with pytest.raises(RenderError, match="unknown MJML element <mj-sektion>"):
        render_variant(settings, newsletter, issue)


def test_override_folder_replaces_only_the_files_it_has(
    settings: Settings, issue: Issue, tmp_path: Path
) -> None:
    (tmp_path / "digest.txt.j2").write_text("Eigene Fassung: {{ issue.week_label }}\n", "utf-8")
    settings, newsletter = with_override(settings, tmp_path)
    variant = render_variant(settings, newsletter, issue)
    assert variant.text == "Eigene Fassung: KW 5/2025\n"
    assert "Bayern: Einheitlicher kommunaler IT-Dienstleister geplant" in variant.html


HUGE_TITLE = "Förderprogramm " * 700_000  # about 10 MB, as a hostile feed item sends


def test_subject_is_bounded_whatever_the_title() -> None:
    settings = make_settings(subject="{{ name }} – {{ top_title }}")
    [newsletter] = settings.newsletters
    issue = compose_w05(newsletter, [make_article("a", at(28, 9), title=HUGE_TITLE)])
    assert len(issue.subject) <= MAX_SUBJECT_LENGTH
    assert issue.subject.startswith(f"{newsletter.name} – Förderprogramm Förderprogramm")
    assert issue.subject.endswith("Förderprogramm…")
    short = compose_w05(newsletter, [make_article("a", at(28, 9), title="Kurz")])
    assert short.subject == f"{newsletter.name} – Kurz"


def test_preheader_is_bounded_whatever_the_titles() -> None:
    settings = make_settings()
    [newsletter] = settings.newsletters
    title = "Förderprogramm " * 20_000
    articles = [make_article(uid, at(28, 9), title=title) for uid in "abc"]
    variant = render_variant(settings, newsletter, compose_w05(newsletter, articles))
    hidden = re.search(r'<div style="display:none;[^>]*>(.*?)&#847;', variant.html)
    assert hidden is not None
    assert len(hidden[1]) <= render.MAX_PREHEADER_LENGTH and hidden[1].endswith("…")
