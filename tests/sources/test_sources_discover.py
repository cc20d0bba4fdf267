"""`digest sources discover` on listing pages, run as a command against a local server.

The pages in tests/sources/listings/ were written for this project in the shapes real
listing pages take (a WordPress category archive, a regional paper's section page with
a cookie banner, a WordPress post with comments and related posts); the sites are made
up and nothing is fetched from the web.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.test_cli import digest
from tests.sources.test_sources_feed import FeedServer, respond

LISTINGS = Path(__file__).parent / "listings"
WORDPRESS = (LISTINGS / "wordpress-category.html").read_bytes()
REGIONAL = (LISTINGS / "regional-cookie-banner.html").read_bytes()
SINGLE_POST = (LISTINGS / "single-post.html").read_bytes()


@pytest.fixture
def server() -> Iterator[FeedServer]:
    with FeedServer() as running:
        yield running


async def discover(server: FeedServer, page: bytes, cwd: Path) -> tuple[int, str, str]:
    server.routes["/liste/"] = respond(page, content_type="text/html; charset=utf-8")
    return await digest("sources", "discover", "--allow-private", f"{server.url}/liste/", cwd=cwd)


def preview(out: str) -> list[list[str]]:
    """The preview's items, each as its lines without the leading "#"."""
    items: list[list[str]] = []
    for line in out.split("# preview:", 1)[1].splitlines()[1:]:
        if re.match(r"#   \d{4}-\d{2}-\d{2}  ", line):
            items.append([line[4:]])
        elif line.startswith("#     ") and items:
            items[-1].append(line[6:])
    return items


async def test_a_wordpress_archive_is_one_list_of_posts(server: FeedServer, tmp_path: Path) -> None:
    # Each post's classes start with its number (post-6195): one group all the same.
    code, out, err = await discover(server, WORDPRESS, tmp_path)
    assert code == 0, err
    [source] = tomllib.loads(out)["newsletters"]["sources"]
    assert source["allow_private"] is True  # the block works as pasted
    assert source["selectors"] == {
        "item": "article.post",
        "title": "h2",
        "date": "time[datetime]",
        "teaser": "div.entry-summary",
        "exclude": "time[datetime], a.more-link",
        "image": "img",
        "label": "span.cat-links",
        "next": "a.next",
    }
    assert "# preview: 6 items" in out
    items = preview(out)
    assert items[0][:2] == [
        "2025-01-31  [Infrastruktur] Glasfaser im Landkreis: Warum der Ausbau auf dem Dorf stockt",
        "https://kommunalblog.example/2025/01/31/glasfaser-landkreis-ausbau/",
    ]
    teasers = [line for item in items for line in item if line.startswith("teaser: ")]
    images = [line for item in items for line in item if line.startswith("image: ")]
    assert len(teasers) == 5 and len(images) == 5
    assert not any("Weiterlesen" in t for t in teasers)
    # The lazy loader's placeholder (a data: URL in src) is not the picture.
    assert images[0] == (
        "image: https://kommunalblog.example/wp-content/uploads/2025/01/glasfaser-300x169.jpg"
    )


async def test_a_cookie_banner_is_no_next_page_and_a_day_no_label(
    server: FeedServer, tmp_path: Path
) -> None:
    code, out, err = await discover(server, REGIONAL, tmp_path)
    assert code == 0, err
    [source] = tomllib.loads(out)["newsletters"]["sources"]
    selectors = source["selectors"]
    assert selectors["item"] == "div.teaser-item"
    assert selectors["title"] == "p.teaser-item__headline"
    assert selectors["teaser"] == "p.teaser-item__text"  # not the headline again
    assert selectors["label"] == "span.teaser-item__kicker"  # not <span class="tag">31
    assert selectors["date"] == "div.teaser-item__date"
    assert selectors["exclude"] == "div.teaser-item__date, a.teaser-item__more"
    assert selectors["next"] == 'a[rel~="next"]'
    # Seven stories, one of them a box around two: the box is no item of its own.
    assert "# preview: 7 items" in out
    items = preview(out)
    assert items[0] == [
        "2025-01-31  [Polizei] Einbruchserie in Aalen: Polizei nimmt zwei Verdächtige fest",
        "https://www.ostalb-nachrichten.example/aalen/aalen-einbruch-serie-31020.html",
        "teaser: Nach mehr als zwanzig Einbrüchen in Gartenhäuser und Keller hat die Polizei "
        "zwei Männer festgenommen.",
        "image: https://www.ostalb-nachrichten.example/img/aalen-einbruch-serie-640.jpg",
    ]
    assert not any("mehr…" in line for item in items for line in item)

    # Without rel="next", the pager's words say which link it is; the banner's "weitere
    # Infos", "Akzeptieren und weiter" and "Weiter mit PUR-Abo" are consent links.
    code, out, err = await discover(server, REGIONAL.replace(b' rel="next"', b""), tmp_path)
    assert code == 0, err
    [source] = tomllib.loads(out)["newsletters"]["sources"]
    assert source["selectors"]["next"] == "a.pager__link"


async def test_a_single_post_page_has_no_items_to_propose(
    server: FeedServer, tmp_path: Path
) -> None:
    # Comments, related posts and the sidebar's recent posts all have links and dates.
    code, out, err = await discover(server, SINGLE_POST, tmp_path)
    assert code == 1
    assert "[[newsletters.sources]]" not in out
    assert err.startswith("warning: no repeated dated items on the page")


async def test_repeated_items_without_dates_are_named_not_proposed(
    server: FeedServer, tmp_path: Path
) -> None:
    boxes = "".join(
        f'<div class="link-box"><a href="/thema/{n}">Thema Nummer {n}: Verwaltung digital</a>'
        "<p>Alles zum Thema auf einer Seite.</p></div>"
        for n in range(12)
    )
    page = f"<html><body><main>{boxes}</main></body></html>".encode()
    code, out, err = await discover(server, page, tmp_path)
    assert code == 1 and "[[newsletters.sources]]" not in out
    assert "12 items without dates (div.link-box); nothing proposed" in err


async def test_the_sites_feed_comes_before_comment_feeds_and_names_differ(
    server: FeedServer, tmp_path: Path
) -> None:
    head = (
        b"<html><head><title>Kommunalblog</title>"
        b'<link rel="alternate" type="application/rss+xml" title="Kommunalblog &raquo; '
        b'Kommentar-Feed" href="/comments/feed/">'
        b'<link rel="alternate" type="application/rss+xml" title="Kommunalblog" href="/feed/">'
        b'<link rel="alternate" type="application/atom+xml" title="Kommunalblog" '
        b'href="/feed/atom/">'
        b'<link rel="alternate" type="application/rss+xml" href="/podcast/feed/">'
        b"</head><body></body></html>"
    )
    code, out, err = await discover(server, head, tmp_path)
    assert code == 0, err
    sources = tomllib.loads(out)["newsletters"]["sources"]
    assert [(s["name"], s["url"].removeprefix(server.url)) for s in sources] == [
        ("Kommunalblog (RSS)", "/feed/"),
        ("Kommunalblog (Atom)", "/feed/atom/"),
        ("Kommunalblog (RSS) 2", "/podcast/feed/"),
        ("Kommunalblog » Kommentar-Feed", "/comments/feed/"),
    ]
    assert all(s["allow_private"] is True for s in sources)


async def test_a_loopback_address_names_the_way_to_allow_it(
    server: FeedServer, tmp_path: Path
) -> None:
    server.routes["/liste/"] = respond(WORDPRESS, content_type="text/html")
    code, out, err = await digest("sources", "discover", f"{server.url}/liste/", cwd=tmp_path)
    assert code == 1 and out == ""
    assert "127.0.0.1 is a loopback address" in err
    assert "--allow-private" in err and "allow_private = true" in err
    assert err.count("\n") == 1 and server.requests == []
