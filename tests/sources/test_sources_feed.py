"""Feed sources: parsing RSS, Atom and JSON Feed into Articles, and fetching them.

Fetch tests talk to a real HTTP server on 127.0.0.1 (http.server in a thread).
"""

from __future__ import annotations

import gzip
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from digest.config import CategorySettings, Impressum, NewsletterSettings, SourceSettings
from digest.core.errors import SourceError
from digest.core.models import Article, Image
from digest.sources import (
    USER_AGENT,
    FetchResult,
    FetchState,
    fetch_source,
    new_http_client,
    parse_feed,
    parse_feed_with_warnings,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "feeds"
FEEDPARSER_TESTS = ROOT.parent / "shared" / "data" / "feedparser-tests"

NEWSLETTER = NewsletterSettings(
    id="kommune",
    name="Kommune Digital",
    sender="Kommune Digital <digest@kommune-digital.example>",
    impressum=Impressum("Kommune Digital Verlag", "Berlin", "redaktion@example.org", "A. B."),
    categories=(
        CategorySettings("politik", "Politik"),
        CategorySettings("verwaltung", "E-Government"),
        CategorySettings("technik", "Technik"),
    ),
    sources=(),
    segments=(),
    category_map={"ozg": "verwaltung", "it-sicherheit": "technik"},
)


def source(url: str = "feed.xml", **kwargs: object) -> SourceSettings:
    return SourceSettings(name="test", url=url, default_category="politik", **kwargs)  # type: ignore[arg-type]


def parse(data: str | bytes, **kwargs: str | None) -> list[Article]:
    raw = data.encode() if isinstance(data, str) else data
    return parse_feed(raw, source(), NEWSLETTER, **kwargs)


def parse_with_warnings(data: str, **kwargs: str | None) -> tuple[list[Article], list[str]]:
    return parse_feed_with_warnings(data.encode(), source(), NEWSLETTER, **kwargs)


def rss(*items: str, channel: str = "") -> str:
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<rss version="2.0" xmlns:media="http://search.yahoo.com/mrss/">\n'
        "<channel><title>Test</title><link>https://kommune-digital.example/</link>"
        f"{channel}{''.join(items)}</channel></rss>"
    )


def item(
    title: str = "Ein Titel",
    link: str = "https://kommune-digital.example/a/1",
    date: str = "Mon, 03 Feb 2025 10:00:00 +0100",
    extra: str = "",
) -> str:
    parts = [f"<title>{title}</title>" if title else ""]
    parts.append(f"<link>{link}</link>" if link else "")
    parts.append(f"<pubDate>{date}</pubDate>" if date else "")
    return f"<item>{''.join(parts)}{extra}</item>"


def atom(*entries: str, base: str = "") -> str:
    xml_base = f' xml:base="{base}"' if base else ""
    return (
        f'<?xml version="1.0" encoding="utf-8"?>\n<feed xmlns="http://www.w3.org/2005/Atom"'
        f"{xml_base}><title>Test</title><id>urn:test</id>"
        f"<updated>2025-02-03T00:00:00Z</updated>{''.join(entries)}</feed>"
    )


def entry(body: str, uid: str = "urn:entry:1", published: str = "2025-02-03T10:00:00+01:00") -> str:
    return f"<entry><id>{uid}</id><published>{published}</published>{body}</entry>"


def json_feed(*items: object, **feed: object) -> str:
    document = {"version": "https://jsonfeed.org/version/1.1", "title": "Test", **feed}
    return json.dumps({**document, "items": list(items)})


# --- mapping an entry to an Article --------------------------------------------------------


def test_rss_item_maps_to_article() -> None:
    feed = rss(
        item(
            title="Bayern: Neues Portal\n  für  Bürger &amp; Betriebe",
            link="https://kommune-digital.example/meldungen/portal",
            extra=(
                '<guid isPermaLink="false">km:1</guid>'
                "<author>redaktion@kommune.digital (Lea Krämer)</author>"
                "<description>&lt;p&gt;Kurz.&lt;/p&gt;</description>"
            ),
        )
    )
    [article] = parse(feed)
    assert article.uid == "km:1"
    assert article.source == "test"
    assert article.title == "Bayern: Neues Portal für Bürger & Betriebe"
    assert article.link == "https://kommune-digital.example/meldungen/portal"
    assert article.published == datetime(2025, 2, 3, 9, 0, tzinfo=UTC)
    assert article.updated is None
    assert article.region == "Bayern"
    assert article.category == "politik"
    assert article.author == "Lea Krämer"
    assert article.summary == "<p>Kurz.</p>"


@pytest.mark.parametrize(
    "raw",
    [
        "Zeile eins\nZeile zwei",
        "Zeile eins\r\nZeile zwei",
        "Zeile eins&#13;&#10;Zeile zwei",
        "  Zeile eins \u2028 Zeile zwei\x85",
        "Zeile eins&lt;br&gt;\tZeile zwei",
        "<![CDATA[Zeile eins<br/>\nZeile zwei]]>",
    ],
)
def test_title_is_one_line_of_plain_text(raw: str) -> None:
    [article] = parse(rss(item(title=raw)))
    assert article.title == "Zeile eins Zeile zwei"


def test_title_markup_and_entities_become_plain_text() -> None:
    feed = atom(
        entry(
            '<title type="html">&lt;b&gt;Ulm&lt;/b&gt; &amp;amp; Neu-Ulm'
            "&lt;script&gt;x&lt;/script&gt;</title>"
            '<link href="https://kommune-digital.example/a"/>'
        )
    )
    [article] = parse(feed)
    assert article.title == "Ulm & Neu-Ulm"


@pytest.mark.parametrize(
    ("title", "tags", "region"),
    [
        ("Bayern: Titel", "", "Bayern"),
        ("bayern: Titel", "", "Bayern"),
        ("NORDRHEIN-WESTFALEN: Titel", "", "Nordrhein-Westfalen"),
        ("Baden-Württemberg: Titel", "<category>Bayern</category>", "Baden-Württemberg"),
        (
            "München: Stadtrat tagt",
            "<category>Politik</category><category>Bayern</category>",
            "Bayern",
        ),
        ("IT-Planungsrat: Beschluss", "", None),
        ("Bayern:Titel ohne Leerzeichen", "", None),
        ("Titel über Bayern: nicht vorn", "", None),
        ("Titel", '<category domain="label">Sachsen</category>', None),
    ],
)
def test_region_from_title_prefix_or_tag(title: str, tags: str, region: str | None) -> None:
    [article] = parse(rss(item(title=title, extra=tags)))
    assert article.region == region
    assert article.title == title  # the prefix stays: it is what the site shows


@pytest.mark.parametrize(
    ("tags", "category"),
    [
        ("<category>OZG</category>", "verwaltung"),  # category_map, casefolded
        ("<category>Sonstiges</category><category>it-SICHERHEIT</category>", "technik"),
        ("<category>E-Government</category>", "verwaltung"),  # a category's title
        ("<category>TECHNIK</category>", "technik"),  # a category's key
        (
            "<category>Bayern</category><category>OZG</category><category>Technik</category>",
            "verwaltung",
        ),  # first hit wins
        ("<category>Sonstiges</category>", "politik"),  # the source's default
        ('<category domain="label">Technik</category>', "politik"),  # labels never count
        ("", "politik"),
    ],
)
def test_category_from_tags(tags: str, category: str) -> None:
    [article] = parse(rss(item(extra=tags)))
    assert article.category == category


def test_category_from_atom_tag_label() -> None:
    feed = atom(
        entry(
            '<title>T</title><link href="https://x.example/a"/><category term="k-17" label="OZG"/>'
        )
    )
    assert parse(feed)[0].category == "verwaltung"


def test_label_from_rss_domain_atom_scheme_and_json() -> None:
    [from_rss] = parse(rss(item(extra='<category domain="label">Interview</category>')))
    [from_atom] = parse(
        atom(
            entry(
                '<title>T</title><link href="https://x.example/a"/>'
                '<category term="Bericht" scheme="label"/><category term="Technik"/>'
            )
        )
    )
    [from_json] = parse(
        json_feed(
            {
                "id": "1",
                "url": "https://x.example/a",
                "title": "T",
                "date_published": "2025-02-03T10:00:00+01:00",
                "_digest": {"label": "Kommentar"},
            }
        )
    )
    assert (from_rss.label, from_atom.label, from_json.label) == (
        "Interview",
        "Bericht",
        "Kommentar",
    )
    assert from_atom.category == "technik"
    assert parse(rss(item()))[0].label is None


def test_image_from_media_content_with_media_description_as_alt() -> None:
    feed = rss(
        item(
            extra=(
                "<description>Die Zusammenfassung.</description>"
                '<media:content url="https://img.example/a.jpg" type="image/jpeg" medium="image">'
                "<media:description>Ein Rathaus &amp; ein Platz</media:description></media:content>"
                '<enclosure url="https://img.example/b.png" type="image/png" length="1"/>'
            )
        )
    )
    [article] = parse(feed)
    assert article.image == Image("https://img.example/a.jpg", "Ein Rathaus & ein Platz")
    # feedparser reads <media:description> as the item's description (feedparser#53)
    assert article.summary == "Die Zusammenfassung."
    assert article.content == ""


def test_image_from_media_thumbnail_and_ignores_video() -> None:
    feed = rss(
        item(
            extra=(
                '<media:content url="https://v.example/clip.mp4" type="video/mp4"/>'
                '<media:thumbnail url="https://img.example/thumb?id=3"/>'
            )
        )
    )
    assert parse(feed)[0].image == Image("https://img.example/thumb?id=3", "")


def test_image_from_rss_enclosure_only_when_image() -> None:
    audio = '<enclosure url="https://a.example/podcast.mp3" type="audio/mpeg" length="1"/>'
    picture = '<enclosure url="https://a.example/bild.webp" type="image/webp" length="1"/>'
    assert parse(rss(item(extra=audio)))[0].image is None
    assert parse(rss(item(extra=audio + picture)))[0].image == Image("https://a.example/bild.webp")


def test_image_from_atom_enclosure_with_title_as_alt() -> None:
    feed = atom(
        entry(
            '<title>T</title><link href="https://x.example/a"/>'
            '<link rel="enclosure" type="image/jpeg" href="https://img.example/c.jpg" '
            'title="Regal mit Fundsachen"/>'
        )
    )
    assert parse(feed)[0].image == Image("https://img.example/c.jpg", "Regal mit Fundsachen")


def test_image_from_first_img_in_content() -> None:
    feed = atom(
        entry(
            '<title>T</title><link href="https://x.example/a"/>'
            '<summary type="html">&lt;img src="https://img.example/s.jpg" alt="aus summary"&gt;'
            "</summary>"
            '<content type="html">&lt;p&gt;Text &lt;img src="/bilder/k.jpg" alt="Karte"&gt;'
            '&lt;img src="/bilder/zwei.jpg"&gt;&lt;/p&gt;</content>'
        ),
        base="https://kommune-digital.example/feeds/",
    )
    [article] = parse(feed)
    assert article.image == Image("https://kommune-digital.example/bilder/k.jpg", "Karte")
    assert "<img" not in article.content


def test_relative_links_in_html_follow_the_xml_base_of_their_element() -> None:
    feed = atom(
        entry(
            '<title>T</title><link href="https://x.example/a"/>'
            '<content type="html" xml:base="https://kommune-digital.example/meldungen/">'
            '&lt;p&gt;&lt;a href="portal"&gt;Portal&lt;/a&gt; '
            '&lt;img src="bild.jpg"&gt;&lt;/p&gt;</content>'
        ),
        base="https://andere.example/feeds/",
    )
    [article] = parse(feed)
    assert 'href="https://kommune-digital.example/meldungen/portal"' in article.content
    assert article.image == Image("https://kommune-digital.example/meldungen/bild.jpg", "")


@pytest.mark.parametrize(
    "url", ["javascript:alert(1)", "data:image/png;base64,AAAA", "ftp://img.example/a.jpg"]
)
def test_image_must_be_absolute_http(url: str) -> None:
    feed = rss(item(extra=f'<media:content url="{url}" type="image/jpeg"/>'))
    assert parse(feed)[0].image is None


def test_relative_image_resolves_against_the_feed_or_is_dropped() -> None:
    media = '<media:content url="/bilder/x.jpg" type="image/jpeg"/>'
    [with_base] = parse(rss(item(extra=media)))
    assert with_base.image == Image("https://kommune-digital.example/bilder/x.jpg")
    without_base = rss(item(extra=media)).replace(
        "<link>https://kommune-digital.example/</link>", ""
    )
    assert parse(without_base)[0].image is None


def test_relative_links_resolve_against_base_url() -> None:
    feed = rss(
        item(
            link="/meldungen/eins",
            extra='<description>&lt;a href="../x"&gt;x&lt;/a&gt;</description>',
        )
    )
    [article] = parse(feed, base_url="https://kommune-digital.example/feeds/politik.rss")
    assert article.link == "https://kommune-digital.example/meldungen/eins"
    assert 'href="https://kommune-digital.example/x"' in article.summary


def test_relative_links_resolve_against_feed_link_without_base_url() -> None:
    [article] = parse(rss(item(link="meldungen/zwei")))
    assert article.link == "https://kommune-digital.example/meldungen/zwei"
    assert article.uid == article.link


def test_atom_xml_base_resolves_links() -> None:
    feed = atom(entry('<title>T</title><link href="meldung/3"/>'), base="https://a.example/de/")
    assert parse(feed)[0].link == "https://a.example/de/meldung/3"


def test_unusable_items_are_skipped_with_counted_warnings() -> None:
    feed = rss(
        item(),
        item(link="", extra="<guid isPermaLink='false'>nur-id</guid>"),
        item(link=""),
        item(link="javascript:alert(1)"),
        item(link="data:text/html,hallo"),
        item(title=""),
        item(title="   "),
        item(date=""),
        item(date="kein Datum"),
    )
    articles, warnings = parse_with_warnings(feed)
    assert len(articles) == 1
    assert sorted(warnings) == sorted(
        [
            "1 item without a link skipped",
            "1 item without a link or id skipped",
            "2 items with a link that is not http(s) skipped",
            "2 items without a title skipped",
            "2 items without a date skipped",
        ]
    )


def test_updated_date_stands_in_for_missing_published() -> None:
    feed = atom(
        '<entry><id>urn:u</id><title>T</title><link href="https://x.example/a"/>'
        "<updated>2025-02-01T08:00:00Z</updated></entry>"
    )
    [article] = parse(feed)
    assert article.published == article.updated == datetime(2025, 2, 1, 8, 0, tzinfo=UTC)


def test_summary_and_content_are_sanitized() -> None:
    dirty = (
        '<p style="color:red" onclick="x()">Hallo <a href="javascript:alert(1)">j</a> '
        '<a href="https://ok.example/" onmouseover="x()" target="_blank">ok</a>'
        '<script>alert(1)</script><iframe src="https://evil.example/"></iframe>'
        '<img src="x" onerror="alert(1)"><h2>Zwischentitel</h2><em>e</em></p>'
    )
    item_json = {
        "id": "1",
        "url": "https://x.example/a",
        "title": "T",
        "content_html": dirty,
        "date_published": "2025-02-03T10:00:00+01:00",
    }
    [article] = parse(json_feed(item_json))
    assert article.content == article.summary
    assert article.content == (
        '<p>Hallo <a rel="noopener noreferrer">j</a> '
        '<a href="https://ok.example/" rel="noopener noreferrer">ok</a></p>'
        "Zwischentitel<em>e</em><p></p>"  # <h2> closed the <p>, as in a browser
    )


def test_plain_text_content_is_escaped_not_parsed() -> None:
    feed = atom(
        entry(
            '<title>T</title><link href="https://x.example/a"/>'
            '<content type="text">Preis &lt; 5 € &amp; &lt;b&gt; bleibt Text</content>'
        )
    )
    assert parse(feed)[0].content == "Preis &lt; 5 € &amp; &lt;b&gt; bleibt Text"


@pytest.mark.parametrize(
    ("author", "name"),
    [
        ("<author>redaktion@kommune-digital.example (Tobias Kern)</author>", "Tobias Kern"),
        ("<author>Lea (lea@kommune.berlin)</author>", "Lea"),
        ("<author>lea@kommune.berlin</author>", None),
        (
            '<dc:creator xmlns:dc="http://purl.org/dc/elements/1.1/">Jana Wessels</dc:creator>',
            "Jana Wessels",
        ),
        (
            '<dc:creator xmlns:dc="http://purl.org/dc/elements/1.1/">Jana &lt;j@x.digital&gt;'
            "</dc:creator>",
            "Jana",
        ),
        ("", None),
    ],
)
def test_author_is_plain_name(author: str, name: str | None) -> None:
    assert parse(rss(item(extra=author)))[0].author == name


def test_json_feed_items() -> None:
    feed = json_feed(
        {
            "id": 42,
            "url": "/meldungen/kiel",
            "title": "Schleswig-Holstein: Kiel startet App",
            "summary": "Bus & Fähre <gemeinsam>",
            "content_html": '<p>Mehr <img src="/i.jpg" alt="inline"></p>',
            "image": "https://img.example/kiel.jpg",
            "date_published": "2025-02-04T10:00:00+01:00",
            "date_modified": "2025-02-05T10:00:00Z",
            "authors": [{"name": "Henrik Jaspersen"}],
            "tags": ["Smart City", "OZG"],
            "_digest": {"image_alt": "Fähre auf der Förde", "label": "Interview"},
        },
        {"id": "ohne-datum", "url": "https://x.example/b", "title": "T"},
        "kein Objekt",
        home_page_url="https://kommune-digital.example/smart-city",
    )
    articles, warnings = parse_with_warnings(feed)
    [article] = articles
    assert article.uid == "42"
    assert article.link == "https://kommune-digital.example/meldungen/kiel"
    assert article.region == "Schleswig-Holstein"
    assert article.category == "verwaltung"
    assert article.summary == "Bus &amp; Fähre &lt;gemeinsam&gt;"
    assert article.content == "<p>Mehr </p>"
    assert article.image == Image("https://img.example/kiel.jpg", "Fähre auf der Förde")
    assert article.published == datetime(2025, 2, 4, 9, 0, tzinfo=UTC)
    assert article.updated == datetime(2025, 2, 5, 10, 0, tzinfo=UTC)
    assert article.author == "Henrik Jaspersen"
    assert article.label == "Interview"
    assert sorted(warnings) == [
        "1 item that are not objects skipped",
        "1 item without a date skipped",
    ]


def test_json_feed_1_0_author_and_content_text() -> None:
    feed = json.dumps(
        {
            "version": "https://jsonfeed.org/version/1",
            "items": [
                {
                    "id": "a",
                    "url": "https://x.example/a",
                    "title": "T",
                    "content_text": "a < b",
                    "date_published": "2025-02-03T10:00:00Z",
                    "author": {"name": "Max"},
                }
            ],
        }
    )
    [article] = parse(feed, content_type="application/json")
    assert (article.author, article.content, article.summary) == ("Max", "a &lt; b", "a &lt; b")


def test_duplicates_are_kept_for_the_caller() -> None:
    assert len(parse(rss(item(), item()))) == 2


def test_empty_feed_is_no_error() -> None:
    assert parse(rss()) == []
    assert parse(json_feed()) == []


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ("", "not a feed: the document is empty"),
        ("   \n", "not a feed"),
        ("<html><body><p>Hallo</p></body></html>", "not a feed: no RSS or Atom element found"),
        ("<!DOCTYPE html><html><body><p>Hallo<br></body></html>", "not a feed: XML syntax error"),
        (
            '<rss version="2.0"><channel><title>x</title></chanel></rss>',
            "not a feed: XML syntax error at line 1 (mismatched tag)",
        ),
        ('{"version": "https://jsonfeed.org/version/1.1", "items": [', "not a feed: invalid JSON"),
        ('{"title": "kein Feed"}', "not a feed: JSON without a JSON Feed version"),
        (
            '{"version": "https://jsonfeed.org/version/1.1", "items": {}}',
            "not a feed: JSON Feed without a list of items",
        ),
        ("[" * 100_000, "not a feed"),
        ("Einfach nur Text.", "not a feed"),
    ],
)
def test_not_a_feed_is_source_error(data: str, reason: str) -> None:
    with pytest.raises(SourceError) as caught:
        parse(data)
    assert caught.value.source == "test"
    assert caught.value.reason.startswith(reason)
    assert "\n" not in caught.value.reason


@pytest.mark.parametrize(
    "data",
    [
        # ill-formed, so feedparser's lenient parser runs, and fails on the character reference
        b'<rss version="2.0"><channel><item><title>a &#x110000; b</title></item></chanel></rss>',
        # a non-ASCII byte in the declared encoding's name
        b'<?xml version="1.0" encoding="utf\x8e8"?><rss version="2.0"><channel/></rss>',
    ],
)
def test_feedparser_crashes_become_source_errors(data: bytes) -> None:
    with pytest.raises(SourceError, match="^source 'test': not a feed: feedparser failed with"):
        parse(data)


def test_ill_formed_feed_with_entries_is_read_with_a_warning() -> None:
    feed = rss(item(title="Erst &amp; gut"), item(title="Zwei &nbsp; und kaputt")).replace(
        "</channel></rss>", ""
    )
    articles, warnings = parse_with_warnings(feed)
    assert [a.title for a in articles] == ["Erst & gut", "Zwei und kaputt"]
    assert len(warnings) == 1 and warnings[0].startswith("feed is not well-formed")


def test_wrong_declared_encoding_is_read_with_a_warning() -> None:
    data = rss(item(title="Thüringen: Grüße")).encode("latin-1")
    articles, warnings = parse_feed_with_warnings(
        data, source(), NEWSLETTER, content_type="application/rss+xml; charset=utf-8"
    )
    assert [a.title for a in articles] == ["Thüringen: Grüße"]
    assert articles[0].region == "Thüringen"
    assert len(warnings) == 1 and warnings[0].startswith("encoding problem")


def test_text_xml_without_charset_uses_the_xml_declaration() -> None:
    data = rss(item(title="Thüringen: Grüße")).encode()
    articles, warnings = parse_feed_with_warnings(
        data, source(), NEWSLETTER, content_type="text/xml"
    )
    assert [a.title for a in articles] == ["Thüringen: Grüße"]
    assert warnings == []


def test_bytes_are_never_taken_for_a_file_name(tmp_path: Path) -> None:
    secret = tmp_path / "feed.xml"
    secret.write_text(rss(item()))
    with pytest.raises(SourceError):
        parse(str(secret).encode())


# --- the demo feeds -----------------------------------------------------------------------


def demo_feeds() -> list[Path]:
    return sorted(p for p in EXAMPLES.glob("*") if p.suffix in (".rss", ".atom", ".xml", ".json"))


@pytest.mark.parametrize("path", demo_feeds() or [None], ids=lambda p: p.name if p else "none")
def test_demo_feed(path: Path | None) -> None:
    if path is None:
        pytest.skip(f"no demo feeds in {EXAMPLES}")
    articles, warnings = parse_feed_with_warnings(path.read_bytes(), source(), NEWSLETTER)
    assert articles and warnings == []
    regions = set(NEWSLETTER.regions)
    for article in articles:
        assert article.title and "\n" not in article.title and "\r" not in article.title
        assert article.link.startswith("https://")
        assert article.published.tzinfo is not None
        prefix = article.title.partition(": ")[0]
        if prefix in regions:
            assert article.region == prefix
        assert article.region is None or article.region in regions
        if article.title.startswith("IT-Planungsrat:"):
            assert article.region is None
        if article.image:
            assert article.image.url.startswith("https://")
            assert article.image.alt != article.summary
    assert len({a.uid for a in articles}) == len(articles)


def test_demo_feeds_have_images_with_alt_text_and_labels() -> None:
    if not demo_feeds():
        pytest.skip(f"no demo feeds in {EXAMPLES}")
    articles = [a for p in demo_feeds() for a in parse(p.read_bytes())]
    assert any(a.image and a.image.alt for a in articles)
    assert any(a.label for a in articles)


# --- robustness over feedparser's own test corpus -------------------------------------------

needs_corpus = pytest.mark.skipif(
    not FEEDPARSER_TESTS.is_dir(), reason=f"feedparser test corpus not found at {FEEDPARSER_TESTS}"
)


def corpus_files(folder: str) -> list[Path]:
    return sorted(p for p in (FEEDPARSER_TESTS / folder).rglob("*") if p.is_file())


@needs_corpus
@pytest.mark.parametrize("folder", ["illformed", "wellformed"])
def test_corpus_parses_or_raises_source_error(folder: str) -> None:
    files = corpus_files(folder)
    assert files
    failures = []
    for path in files:
        try:
            parse_feed(path.read_bytes(), source(), NEWSLETTER)
        except SourceError as exc:
            assert exc.reason and "\n" not in exc.reason, path
        except Exception as exc:  # includes warnings, turned into errors by pytest's config
            failures.append(f"{path.relative_to(FEEDPARSER_TESTS)}: {exc!r}")
    assert failures == []


DANGEROUS = (
    "<script",
    "javascript:",
    "vbscript:",
    "<iframe",
    "<object",
    "<embed",
    "<applet",
    "<style",
    "expression(",
)


class _AttributeCheck(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name.startswith("on"):
                self.problems.append(f"event handler {name} on <{tag}>")
            if name in ("href", "src") and (value or "").strip().lower().startswith(
                ("data:", "javascript:", "vbscript:")
            ):
                self.problems.append(f"{name}={value!r} on <{tag}>")


def dangers(text: str) -> list[str]:
    lowered = text.lower()
    found = [needle for needle in DANGEROUS if needle in lowered]
    if "<" in text:
        check = _AttributeCheck()
        check.feed(text)
        check.close()
        found += check.problems
    return found


def with_required_fields(data: bytes) -> bytes:
    """Give every entry an id, link, title and date, so its markup is not skipped unseen.

    The file's own elements come later and win; a dangerous link still gets its item skipped.
    """
    atom_fields = (
        b'<title>Filler</title><id>urn:filler</id><link href="https://filler.example/"/>'
        b"<updated>2025-01-01T00:00:00Z</updated>"
    )
    rss_fields = (
        b"<title>Filler</title><guid>urn:filler</guid><link>https://filler.example/</link>"
        b"<pubDate>Wed, 01 Jan 2025 00:00:00 GMT</pubDate>"
    )
    return re.sub(
        rb"<(entry|item)(\s[^>]*)?>",
        lambda m: m.group(0) + (atom_fields if m.group(1) == b"entry" else rss_fields),
        data,
    )


@needs_corpus
def test_corpus_sanitize_cases_leave_nothing_dangerous() -> None:
    files = corpus_files("wellformed/sanitize")
    assert files
    failures = []
    checked = 0
    for path in files:
        for data in (path.read_bytes(), with_required_fields(path.read_bytes())):
            try:
                articles = parse_feed(data, source(), NEWSLETTER)
            except SourceError:
                continue
            for article in articles:
                checked += 1
                fields = {
                    "title": article.title,
                    "summary": article.summary,
                    "content": article.content,
                    "link": article.link,
                    "image": article.image.url if article.image else "",
                    "alt": article.image.alt if article.image else "",
                    "author": article.author or "",
                    "label": article.label or "",
                }
                for name, value in fields.items():
                    if found := dangers(value):
                        failures.append(f"{path.name} {name}: {found} in {value[:120]!r}")
    assert failures == []
    assert checked > len(files) // 2  # most cases really produced an article to check


def test_danger_check_catches_what_it_should() -> None:
    assert dangers('<a href="data:text/html,x">x</a>')
    assert dangers('<p onclick="x()">x</p>')
    assert dangers("<p>JavaScript:alert</p>")
    assert not dangers("<p>onclick= ist nur Text &lt;b&gt;</p>")


# --- fetching over HTTP from a real local server --------------------------------------------

Route = Callable[[BaseHTTPRequestHandler], None]


class FeedServer:
    """A real HTTP server on 127.0.0.1 with routes per test and a log of the requests."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                server.requests.append((self.path, dict(self.headers.items())))
                route = server.routes.get(self.path)
                if route is None:
                    self.send_error(404)
                else:
                    route(self)

            def log_message(self, format: str, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: object, client_address: object) -> None:
                pass  # the client gave up (timeouts, size cap): nothing to report

        self.httpd = Server((host, 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://{host}:{self.port}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> FeedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


def respond(
    body: bytes, status: int = 200, content_type: str = "application/rss+xml", **headers: str
) -> Route:
    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            handler.send_header(name.replace("_", "-"), value)
        handler.end_headers()
        handler.wfile.write(body)

    return route


@pytest.fixture
def server() -> Iterator[FeedServer]:
    with FeedServer() as running:
        yield running


async def fetch(
    url: str, state: FetchState | None = None, tmp: Path = Path("."), **kwargs: object
) -> FetchResult:
    kwargs.setdefault("allow_private", True)  # the test server listens on 127.0.0.1
    async with new_http_client() as client:
        return await fetch_source(
            source(url, **kwargs), NEWSLETTER, state, client=client, base_dir=tmp
        )


FEED = rss(item(title="Sachsen: Glasfaser", link="/meldungen/glasfaser")).encode()


async def test_fetch_with_etag_then_not_modified(server: FeedServer) -> None:
    def conditional(handler: BaseHTTPRequestHandler) -> None:
        if handler.headers.get("If-None-Match") == '"v1"':
            handler.send_response(304)
            handler.send_header("ETag", '"v1"')
            handler.end_headers()
        else:
            respond(FEED, ETag='"v1"', Last_Modified="Mon, 03 Feb 2025 09:00:00 GMT")(handler)

    server.routes["/feeds/politik.rss"] = conditional
    first = await fetch(f"{server.url}/feeds/politik.rss")
    assert not first.not_modified
    assert first.state == FetchState('"v1"', "Mon, 03 Feb 2025 09:00:00 GMT")
    [article] = first.articles
    assert article.link == f"{server.url}/meldungen/glasfaser"
    assert article.region == "Sachsen"
    assert first.warnings == ()

    second = await fetch(f"{server.url}/feeds/politik.rss", first.state)
    assert second.not_modified and second.articles == () and second.state == first.state
    headers = server.requests[-1][1]
    assert headers["If-None-Match"] == '"v1"'
    assert headers["If-Modified-Since"] == "Mon, 03 Feb 2025 09:00:00 GMT"
    assert headers["User-Agent"] == USER_AGENT
    assert "If-None-Match" not in server.requests[0][1]


async def test_http_404_is_source_error(server: FeedServer) -> None:
    with pytest.raises(SourceError) as caught:
        await fetch(f"{server.url}/gibt-es-nicht")
    assert caught.value.reason == f"HTTP 404 Not Found from {server.url}/gibt-es-nicht"


async def test_unasked_not_modified_is_source_error(server: FeedServer) -> None:
    server.routes["/feed.xml"] = respond(b"", status=304)
    with pytest.raises(SourceError, match="HTTP 304 Not Modified"):
        await fetch(f"{server.url}/feed.xml")


async def test_http_500_is_source_error(server: FeedServer) -> None:
    server.routes["/kaputt"] = respond(b"oops", status=503, content_type="text/plain")
    with pytest.raises(SourceError, match="HTTP 503 Service Unavailable"):
        await fetch(f"{server.url}/kaputt")


def redirect_chain(server: FeedServer, length: int) -> str:
    for step in range(length, 0, -1):
        server.routes[f"/r{length}/{step}"] = respond(
            b"", status=302, content_type="text/plain", Location=f"/r{length}/{step - 1}"
        )
    server.routes[f"/r{length}/0"] = respond(FEED)
    return f"{server.url}/r{length}/{length}"


async def test_five_redirects_are_followed(server: FeedServer) -> None:
    result = await fetch(redirect_chain(server, 5))
    [article] = result.articles
    assert article.link == f"{server.url}/meldungen/glasfaser"  # resolved against the final URL


async def test_more_than_five_redirects_is_source_error(server: FeedServer) -> None:
    with pytest.raises(SourceError, match="more than 5 redirects"):
        await fetch(redirect_chain(server, 6))
    assert len(server.requests) == 6


async def test_oversize_body_without_content_length_is_source_error(server: FeedServer) -> None:
    def endless(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/rss+xml")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        chunk = b"<!--" + b"x" * 8000 + b"-->"
        for _ in range(200):
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        handler.wfile.write(b"0\r\n\r\n")

    server.routes["/gross"] = endless
    with pytest.raises(SourceError) as caught:
        await fetch(f"{server.url}/gross", max_bytes=100_000)
    assert caught.value.reason == "response larger than 100000 bytes"


async def test_oversize_declared_length_is_source_error(server: FeedServer) -> None:
    server.routes["/gross"] = respond(FEED + b" " * 5000)
    with pytest.raises(SourceError, match="response larger than 1000 bytes"):
        await fetch(f"{server.url}/gross", max_bytes=1000)


async def test_compressed_body_is_capped_after_decompression(server: FeedServer) -> None:
    bomb = gzip.compress(FEED + b" " * 2_000_000)
    server.routes["/bombe"] = respond(bomb, Content_Encoding="gzip")
    server.routes["/gzip"] = respond(gzip.compress(FEED), Content_Encoding="gzip")
    assert len(bomb) < 100_000
    with pytest.raises(SourceError, match="response larger than 100000 bytes"):
        await fetch(f"{server.url}/bombe", max_bytes=100_000)
    assert len((await fetch(f"{server.url}/gzip", max_bytes=100_000)).articles) == 1


async def test_slow_server_times_out(server: FeedServer) -> None:
    def slow(handler: BaseHTTPRequestHandler) -> None:
        time.sleep(1.0)
        respond(FEED)(handler)

    server.routes["/langsam"] = slow
    started = time.monotonic()
    with pytest.raises(SourceError) as caught:
        await fetch(f"{server.url}/langsam", timeout=0.2)
    assert caught.value.reason == "timed out after 0.2 s"
    assert time.monotonic() - started < 0.9


async def test_trickling_server_times_out_as_a_whole(server: FeedServer) -> None:
    def trickle(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/rss+xml")
        handler.send_header("Content-Length", str(len(FEED)))
        handler.end_headers()
        for byte in FEED[:20]:
            handler.wfile.write(bytes([byte]))
            handler.wfile.flush()
            time.sleep(0.05)  # each read is quick; the whole response is not

    server.routes["/tropfen"] = trickle
    with pytest.raises(SourceError, match="timed out after 0.3 s"):
        await fetch(f"{server.url}/tropfen", timeout=0.3)


async def test_connection_refused_is_source_error() -> None:
    with FeedServer() as stopped:
        url = stopped.url
    with pytest.raises(SourceError, match="cannot fetch"):
        await fetch(f"{url}/feed.xml")


@needs_corpus
@pytest.mark.parametrize(
    "name",
    ["aaa_illformed.xml", "rss_incomplete_cdata.xml", "rss_item_link_corrupted_ampersands.xml"],
)
async def test_ill_formed_feed_over_http(server: FeedServer, name: str) -> None:
    server.routes["/kaputt.xml"] = respond((FEEDPARSER_TESTS / "illformed" / name).read_bytes())
    try:
        result = await fetch(f"{server.url}/kaputt.xml")
    except SourceError as exc:
        assert exc.reason.startswith("not a feed")
    else:
        assert result.warnings or result.articles == ()


async def test_json_feed_over_http(server: FeedServer) -> None:
    body = json_feed(
        {"id": "1", "url": "/a", "title": "Hessen: T", "date_published": "2025-02-03T10:00:00Z"}
    ).encode()
    server.routes["/feed.json"] = respond(body, content_type="application/feed+json")
    [article] = (await fetch(f"{server.url}/feed.json")).articles
    assert (article.link, article.region) == (f"{server.url}/a", "Hessen")


async def test_html_page_instead_of_feed_is_source_error(server: FeedServer) -> None:
    page = b"<!DOCTYPE html><html><head><title>Start</title></head><body><p>Hallo<br></body></html>"
    server.routes["/"] = respond(page, content_type="text/html; charset=utf-8")
    with pytest.raises(SourceError, match="not a feed"):
        await fetch(f"{server.url}/")


# --- local files -----------------------------------------------------------------------------


async def test_local_path_relative_to_base_dir(tmp_path: Path) -> None:
    (tmp_path / "feeds").mkdir()
    (tmp_path / "feeds" / "politik.rss").write_bytes(FEED)
    result = await fetch("feeds/politik.rss", FetchState('"alt"'), tmp_path)
    [article] = result.articles
    assert article.link == "https://kommune-digital.example/meldungen/glasfaser"
    assert result.state == FetchState() and not result.not_modified


async def test_local_file_url(tmp_path: Path) -> None:
    path = tmp_path / "mit leerzeichen.rss"
    path.write_bytes(FEED)
    assert len((await fetch(path.as_uri())).articles) == 1


async def test_missing_local_file_is_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError) as caught:
        await fetch("feeds/fehlt.rss", None, tmp_path)
    assert caught.value.reason == f"no such file: {tmp_path / 'feeds' / 'fehlt.rss'}"


async def test_local_directory_and_oversize_file_are_source_errors(tmp_path: Path) -> None:
    (tmp_path / "gross.rss").write_bytes(FEED)
    with pytest.raises(SourceError, match="is a directory"):
        await fetch(".", None, tmp_path)
    with pytest.raises(SourceError, match="file larger than 100 bytes"):
        await fetch("gross.rss", None, tmp_path, max_bytes=100)


async def test_unsupported_scheme_is_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="unsupported URL scheme 'ftp'"):
        await fetch("ftp://example.org/feed.xml", None, tmp_path)


def test_ill_formed_feed_with_nothing_usable_is_a_source_error() -> None:
    data = b"<rss><channel><item><title>kaputt</title></chan"
    with pytest.raises(SourceError) as info:
        parse(data)
    assert info.value.reason == (
        "not a feed: XML syntax error at line 1 (unclosed token), and no item could be read"
    )
