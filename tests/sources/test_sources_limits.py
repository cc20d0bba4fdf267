"""Every value a feed gives is bounded at collect time, whatever its format.

Over-long text is shortened at a word boundary with "…", over-long URLs are not used,
over-long HTML is cut before it is sanitized, and HTML nested absurdly deep fails its
source. Each cut is a warning naming what was cut.
"""

from __future__ import annotations

import html
import json
import multiprocessing
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from digest.config import Settings, SourceSettings
from digest.core import limits
from digest.core.errors import SourceError
from digest.core.models import Article
from digest.sources import fetch_source, new_http_client, parse_feed_with_warnings
from digest.sources.bounds import bound_markup, html_depth_exceeds, shorten
from digest.sources.collect import collect_newsletter
from digest.store import Store
from tests.sources.test_sources_feed import NEWSLETTER, source

LINK = "https://kommune-digital.example/a/1"
DATE = "2025-02-03T10:00:00Z"


def rss_feed(
    title: str = "Titel",
    link: str = LINK,
    description: str = "",
    author: str = "",
    label: str = "",
    image: tuple[str, str] | None = None,
    content: str = "",
) -> bytes:
    parts = [f"<title>{html.escape(title)}</title>", f"<link>{html.escape(link)}</link>"]
    parts.append("<pubDate>Mon, 03 Feb 2025 10:00:00 +0100</pubDate>")
    if description:
        parts.append(f"<description>{html.escape(description)}</description>")
    if content:
        parts.append(f"<content:encoded>{html.escape(content)}</content:encoded>")
    if author:
        parts.append(f"<author>{html.escape(author)}</author>")
    if label:
        parts.append(f'<category domain="label">{html.escape(label)}</category>')
    if image:
        url, alt = image
        parts.append(
            f'<media:content url="{html.escape(url)}" medium="image"/>'
            f"<media:description>{html.escape(alt)}</media:description>"
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0" '
        'xmlns:media="http://search.yahoo.com/mrss/" '
        'xmlns:content="http://purl.org/rss/1.0/modules/content/">'
        f"<channel><title>T</title><item>{''.join(parts)}</item></channel></rss>"
    ).encode()


def json_feed(
    title: str = "Titel",
    link: str = LINK,
    description: str = "",
    author: str = "",
    label: str = "",
    image: tuple[str, str] | None = None,
    content: str = "",
) -> bytes:
    item: dict[str, object] = {"id": "1", "url": link, "title": title, "date_published": DATE}
    if description:
        item["summary"] = description  # plain text in JSON Feed
    if content:
        item["content_html"] = content
    if author:
        item["authors"] = [{"name": author}]
    extension: dict[str, str] = {}
    if label:
        extension["label"] = label
    if image:
        item["image"], extension["image_alt"] = image
    if extension:
        item["_digest"] = extension
    document = {"version": "https://jsonfeed.org/version/1.1", "title": "T", "items": [item]}
    return json.dumps(document).encode()


Feed = Callable[..., bytes]
FORMATS = pytest.mark.parametrize("feed", [rss_feed, json_feed], ids=["rss", "json"])


def parse(data: bytes) -> tuple[list[Article], list[str]]:
    return parse_feed_with_warnings(data, source(), NEWSLETTER)


def words(n: int) -> str:
    return " ".join(f"wort{i}" for i in range(n))


# --- the helpers -----------------------------------------------------------------------------


def test_shorten_cuts_at_a_word_boundary_with_an_ellipsis() -> None:
    assert shorten("kurz", 10) == "kurz"
    assert shorten("eins zwei drei vier", 12) == "eins zwei…"
    assert shorten("x" * 50, 10) == "x" * 9 + "…"
    for n in range(1, 200):
        assert len(shorten(words(n), 40)) <= 40


def test_bound_markup_never_cuts_inside_a_tag_or_entity() -> None:
    markup = '<p>Ein &amp; zwei <a href="https://example.org/x">drei</a> vier</p>' * 50
    for limit in range(20, 400, 7):
        cut = bound_markup(markup, limit)
        assert len(cut) <= limit and cut.endswith("…")
        assert cut.count("<") == cut.count(">")
        assert not cut.rpartition("&")[2].startswith("am") or cut.count("&") == cut.count(";")


# --- plain-text fields -----------------------------------------------------------------------


@FORMATS
def test_huge_title_is_shortened_with_a_warning(feed: Feed) -> None:
    [article], warnings = parse(feed(title=words(200_000)))
    assert len(article.title) <= limits.MAX_TITLE
    assert article.title.endswith("…") and article.title.startswith("wort0 wort1 ")
    assert article.title[:-1].split()[-1].startswith("wort")  # not cut inside a word
    assert f"1 item with a title longer than {limits.MAX_TITLE} characters shortened" in warnings


@FORMATS
def test_title_of_markup_cut_before_cleaning_still_says_so(feed: Feed) -> None:
    [article], warnings = parse(feed(title="<b></b>" * 5_000 + "Ende"))
    assert article.title == "…"
    assert any("title longer than" in w for w in warnings)


@FORMATS
def test_author_label_and_image_description_are_bounded(feed: Feed) -> None:
    data = feed(
        author="x@example.org (" + words(50_000) + ")",
        label=words(50_000),
        image=("https://kommune-digital.example/bild.jpg", words(50_000)),
    )
    [article], warnings = parse(data)
    assert article.author and len(article.author) <= limits.MAX_AUTHOR
    assert article.label and len(article.label) <= limits.MAX_LABEL
    assert article.image and len(article.image.alt) <= limits.MAX_IMAGE_ALT
    assert article.image.alt.endswith("…")
    for what, limit in [
        ("an author name", limits.MAX_AUTHOR),
        ("a label", limits.MAX_LABEL),
        ("an image description", limits.MAX_IMAGE_ALT),
    ]:
        assert f"1 item with {what} longer than {limit} characters shortened" in warnings


def test_short_values_are_left_alone_without_warnings() -> None:
    [article], warnings = parse(rss_feed(title="Bayern: Kurz", author="Lea", label="Neu"))
    assert (article.title, article.author, article.label) == ("Bayern: Kurz", "Lea", "Neu")
    assert warnings == []


# --- URLs ------------------------------------------------------------------------------------


@FORMATS
def test_over_long_link_warning_names_the_reason(feed: Feed) -> None:
    articles, warnings = parse(feed(link=LINK + "?q=" + "a" * limits.MAX_URL))
    assert articles == []
    assert warnings == [f"1 item with a link longer than {limits.MAX_URL} characters skipped"]


@FORMATS
def test_over_long_image_url_leaves_the_article_without_a_picture(feed: Feed) -> None:
    image = ("https://kommune-digital.example/bild.jpg?" + "a" * limits.MAX_URL, "Bild")
    [article], warnings = parse(feed(image=image))
    assert article.image is None
    assert warnings == [
        f"1 item with an image URL longer than {limits.MAX_URL} characters left without a picture"
    ]


def test_over_long_links_inside_html_are_dropped() -> None:
    href = "https://kommune-digital.example/?" + "a" * limits.MAX_URL
    [article], _ = parse(rss_feed(description=f'<p><a href="{href}">Link</a></p>'))
    assert href not in article.summary and "Link" in article.summary


def test_link_of_exactly_the_limit_is_kept() -> None:
    link = LINK + "?q=" + "a" * (limits.MAX_URL - len(LINK) - 3)
    assert len(link) == limits.MAX_URL
    [article], _ = parse(rss_feed(link=link))
    assert article.link == link


# --- HTML ------------------------------------------------------------------------------------


def test_huge_summary_is_cut_before_sanitizing() -> None:
    paragraph = "<p>" + words(50) + " &amp; <a href='https://example.org/'>mehr</a></p>"
    [article], warnings = parse(rss_feed(description=paragraph * 100))
    assert len(article.summary) <= limits.MAX_SUMMARY
    assert article.summary.endswith("</p>") and "…" in article.summary[-20:]
    assert f"1 item with a summary longer than {limits.MAX_SUMMARY} characters shortened" in (
        warnings
    )


@FORMATS
def test_huge_content_is_bounded(feed: Feed) -> None:
    [article], warnings = parse(feed(content="<p>" + words(100_000) + "</p>"))
    assert len(article.content) <= limits.MAX_CONTENT
    assert len(article.summary) <= limits.MAX_SUMMARY  # the teaser falls back on content
    assert f"1 item with content longer than {limits.MAX_CONTENT} characters shortened" in (
        warnings
    )


def test_sanitizing_cannot_grow_a_summary_past_its_limit() -> None:
    # Every "<" becomes "&lt;": the cleaned markup is four times the raw one.
    [article], _ = parse(rss_feed(description="<p>" + "< " * (limits.MAX_SUMMARY // 2)))
    assert len(article.summary) <= limits.MAX_SUMMARY


def nested(depth: int, tag: str = "div") -> str:
    return f"<{tag}>" * depth + "tief" + f"</{tag}>" * depth


@FORMATS
def test_html_nested_deeper_than_the_limit_fails_the_source(feed: Feed) -> None:
    with pytest.raises(SourceError) as caught:
        parse(feed(content=nested(5_000)))
    assert caught.value.reason == (
        f"an item's HTML is nested deeper than {limits.MAX_HTML_DEPTH} levels"
    )


def test_atom_xhtml_content_nested_too_deep_fails_the_source() -> None:
    data = (
        '<feed xmlns="http://www.w3.org/2005/Atom"><title>T</title><id>u</id>'
        f"<entry><id>e</id><title>T</title><link href='{LINK}'/><published>{DATE}</published>"
        '<content type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml">'
        f"{nested(3_000)}</div></content></entry></feed>"
    ).encode()
    with pytest.raises(SourceError, match="nested deeper than"):
        parse(data)


@pytest.mark.parametrize(
    "markup",
    [
        nested(limits.MAX_HTML_DEPTH - 5),
        "<p>Absatz" * 1_000,  # unclosed paragraphs close each other
        "<ul>" + "<li>Punkt" * 1_000 + "</ul>",
        "<p>Bild<br><img src='x.png'><hr>" * 1_000,
        "<div></div>" * 5_000,
        "<b>fett</b> <i>kursiv</i> " * 5_000,
        "<script>" + "<div>" * 1_000 + "</script>",
        "<!--" + "<div>" * 1_000 + "-->",
    ],
    ids=["just-below", "open-p", "open-li", "void", "siblings", "inline", "script", "comment"],
)
def test_ordinary_markup_is_not_too_deep(markup: str) -> None:
    assert not html_depth_exceeds(markup, limits.MAX_HTML_DEPTH)


@pytest.mark.parametrize(
    "markup",
    [
        nested(limits.MAX_HTML_DEPTH + 1),
        '<div title="</div>">' * 1_000,  # an end tag inside an attribute value is no end tag
        "<div><!--</div>-->" * 1_000,
        "<div><script></div></script>" * 1_000,
        "<div/>" * 1_000,  # in HTML, "/>" does not close a <div>
        "<ul><li>" * 1_000,
    ],
    ids=["just-above", "attribute", "comment", "script", "self-closing", "nested-lists"],
)
def test_markup_that_nests_deep_is_found(markup: str) -> None:
    assert html_depth_exceeds(markup, limits.MAX_HTML_DEPTH)


# --- a deep source fails, the others are collected ------------------------------------------


async def test_collect_fails_only_the_source_with_deep_html(
    tmp_path: Path, store: Store, demo_settings: Settings
) -> None:
    (tmp_path / "tief.rss").write_bytes(rss_feed(description=nested(5_000)))
    (tmp_path / "gut.rss").write_bytes(rss_feed(title="Gut"))
    newsletter = replace(
        NEWSLETTER,
        sources=(
            SourceSettings("Tief", "tief.rss", "politik", max_bytes=10_000_000),
            SourceSettings("Gut", "gut.rss", "politik"),
        ),
    )
    settings = replace(demo_settings, base_dir=tmp_path)
    report = await collect_newsletter(
        settings, store, newsletter, now=datetime(2025, 2, 4, tzinfo=UTC)
    )
    [failed] = report.failed
    assert failed.name == "Tief"
    assert failed.error == f"an item's HTML is nested deeper than {limits.MAX_HTML_DEPTH} levels"
    assert report.new == 1


# --- parsing is bounded in time --------------------------------------------------------------

# Flat markup no depth check refuses, but feedparser needs seconds for (about 3 s here).
SLOW_FEED = rss_feed(title="<b></b>" * 150_000)


async def test_parsing_is_killed_at_the_source_deadline(tmp_path: Path) -> None:
    (tmp_path / "langsam.rss").write_bytes(SLOW_FEED)
    slow = SourceSettings("Langsam", "langsam.rss", "politik", timeout=0.3)
    async with new_http_client() as client:
        with pytest.raises(SourceError) as caught:
            await fetch_source(slow, NEWSLETTER, None, client=client, base_dir=tmp_path)
    assert caught.value.reason == "timed out after 0.3 s parsing the feed"
    assert multiprocessing.active_children() == []  # the parser was killed, not left running


async def test_collect_fails_only_the_source_that_parses_too_long(
    tmp_path: Path, store: Store, demo_settings: Settings
) -> None:
    (tmp_path / "langsam.rss").write_bytes(SLOW_FEED)
    (tmp_path / "gut.rss").write_bytes(rss_feed(title="Gut"))
    newsletter = replace(
        NEWSLETTER,
        sources=(
            SourceSettings("Langsam", "langsam.rss", "politik", timeout=0.3),
            SourceSettings("Gut", "gut.rss", "politik"),
        ),
    )
    settings = replace(demo_settings, base_dir=tmp_path)
    report = await collect_newsletter(
        settings, store, newsletter, now=datetime(2025, 2, 4, tzinfo=UTC)
    )
    [failed] = report.failed
    assert (failed.name, failed.error) == ("Langsam", "timed out after 0.3 s parsing the feed")
    assert report.new == 1


async def test_errors_of_the_parser_arrive_as_source_errors(tmp_path: Path) -> None:
    (tmp_path / "kaputt.rss").write_bytes(b"kein Feed")
    (tmp_path / "gut.rss").write_bytes(rss_feed(title="Gut"))
    async with new_http_client() as client:
        with pytest.raises(SourceError) as caught:
            await fetch_source(
                source("kaputt.rss"), NEWSLETTER, None, client=client, base_dir=tmp_path
            )
        assert caught.value.source == "test"
        assert caught.value.reason.startswith("not a feed: ")
        result = await fetch_source(
            source("gut.rss"), NEWSLETTER, None, client=client, base_dir=tmp_path
        )
    assert [a.title for a in result.articles] == ["Gut"]
