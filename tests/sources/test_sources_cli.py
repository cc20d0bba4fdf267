"""`digest sources test` and `digest sources discover`, run as commands against real servers."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.test_cli import digest, site  # noqa: F401 (a fixture)
from tests.sources.test_sources_feed import FeedServer, respond

ROOT = Path(__file__).resolve().parents[2]
DEMO_PAGE = (ROOT / "examples" / "pages" / "kommunal-meldungen.html").read_bytes()


@pytest.fixture
def server() -> Iterator[FeedServer]:
    with FeedServer() as running:
        yield running


async def test_sources_test_prints_what_a_source_yields_and_stores_nothing(
    site: Path,  # noqa: F811
) -> None:
    code, out, err = await digest(
        "sources", "test", "wochenueberblick", "Land und Kommune (Seite)", cwd=site
    )
    assert code == 0, err
    assert out.splitlines()[:2] == [
        "== Land und Kommune (Seite) (html: examples/pages/kommunal-meldungen.html)",
        "5 articles",
    ]
    assert (
        "- 2025-01-31 00:00  verwaltung  Thüringen  Thüringen: Glasfaser erreicht letzte "
        "Landkreise" in out
    )
    assert "    In allen Thüringer Landkreisen laufen nun" in out
    assert not (site / "digest.db").exists()


def _teaser_of(out: str, title: str) -> str:
    """The teaser lines `sources test` printed under the item ``title``, joined."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.endswith(title)) + 1
    teaser = []
    for line in lines[start:]:
        if not line.startswith("    ") or line.startswith("    http"):
            break
        teaser.append(line.strip())
    return " ".join(teaser)


async def test_sources_test_shows_the_teaser_readers_get_and_full_the_whole_text(
    site: Path,  # noqa: F811
) -> None:
    # Without `a.mehr` in the selectors' exclude the "mehr..." link stays out all the
    # same (read-more links never reach a teaser); what shows is what readers get.
    config = site / "config.toml"
    config.write_text(
        config.read_text().replace('exclude = ".datum, a.mehr"', 'exclude = ".datum"')
    )
    title = "Thüringen: Glasfaser erreicht letzte Landkreise"
    code, out, err = await digest(
        "sources", "test", "wochenueberblick", "Land und Kommune (Seite)", cwd=site
    )
    assert code == 0, err
    assert _teaser_of(out, title) == (
        "In allen Thüringer Landkreisen laufen nun geförderte Ausbauprojekte für Glasfaser. "
        "Bis Ende 2026 sollen weitere 40.000 Haushalte in abgelegenen Ortsteilen einen "
        "schnellen Anschluss erhalten."
    )
    assert max(len(line) for line in out.splitlines() if line.startswith("    ")) <= 104

    # Longer than teaser_length (300): cut as the issue cuts it, whole with --full.
    page = site / "examples" / "pages" / "kommunal-meldungen.html"
    sentence = "Die Landkreise melden den Ausbau an das Ministerium. "
    page.write_text(page.read_text().replace("erhalten.", "erhalten. " + sentence * 8, 1))
    code, out, err = await digest(
        "sources", "test", "wochenueberblick", "Land und Kommune (Seite)", cwd=site
    )
    assert code == 0, err
    cut = _teaser_of(out, title)
    assert len(cut) <= 300 and cut.endswith(".") and "mehr..." not in cut  # a whole sentence
    code, out, err = await digest(
        "sources", "test", "--full", "wochenueberblick", "Land und Kommune (Seite)", cwd=site
    )
    assert code == 0, err
    whole = _teaser_of(out, title)
    assert whole.startswith(cut) and whole.endswith((sentence * 8).strip())


async def test_sources_test_names_an_unknown_source(site: Path) -> None:  # noqa: F811
    code, out, err = await digest("sources", "test", "wochenueberblick", "Gibt es nicht", cwd=site)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "no source 'Gibt es nicht' (known: 'Politik (RSS)'" in err


async def test_sources_test_reports_a_failing_source(site: Path) -> None:  # noqa: F811
    (site / "examples" / "pages" / "kommunal-meldungen.html").write_text(
        "<html><body><p>Neu gestaltet</p></body></html>"
    )
    code, _, err = await digest(
        "sources", "test", "wochenueberblick", "Land und Kommune (Seite)", cwd=site
    )
    assert code == 1
    assert "the item selector 'article.meldung' found nothing" in err


async def test_discover_prints_the_advertised_feeds(site: Path, server: FeedServer) -> None:  # noqa: F811
    server.routes["/"] = respond(
        b'<html><head><title>Stadt</title><link rel="alternate" type="application/rss+xml" '
        b'title="Pressemitteilungen" href="/presse.rss"><link rel="alternate" '
        b'type="application/atom+xml" href="https://example.org/atom.xml"></head></html>',
        content_type="text/html",
    )
    code, out, err = await digest("sources", "discover", "--allow-private", server.url, cwd=site)
    assert code == 0, err
    document = tomllib.loads(out)
    assert [s["url"] for s in document["newsletters"]["sources"]] == [
        f"{server.url}/presse.rss",
        "https://example.org/atom.xml",
    ]
    assert document["newsletters"]["sources"][0]["name"] == "Pressemitteilungen"


async def test_discover_proposes_selectors_and_previews_items(
    site: Path,  # noqa: F811
    server: FeedServer,
) -> None:
    server.routes["/meldungen"] = respond(DEMO_PAGE, content_type="text/html; charset=utf-8")
    code, out, err = await digest(
        "sources", "discover", "--allow-private", f"{server.url}/meldungen", cwd=site
    )
    assert code == 0, err
    [source] = tomllib.loads(out)["newsletters"]["sources"]
    assert source["kind"] == "html" and source["url"] == f"{server.url}/meldungen"
    selectors = source["selectors"]
    assert selectors["item"] == "article.meldung" and selectors["title"] == "h2"
    assert selectors["date"] == "span.datum" and selectors["next"] == "a.weiter"
    assert "# preview: 5 items" in out
    assert "#   2025-01-31  Thüringen: Glasfaser erreicht letzte Landkreise" in out


async def test_discover_refuses_a_loopback_address(site: Path, server: FeedServer) -> None:  # noqa: F811
    server.routes["/"] = respond(DEMO_PAGE, content_type="text/html")
    code, out, err = await digest("sources", "discover", server.url, cwd=site)
    assert code == 1 and out == ""
    assert "127.0.0.1 is a loopback address" in err and server.requests == []
