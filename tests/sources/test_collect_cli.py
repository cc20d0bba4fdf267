"""`digest collect` as an operator runs it while setting up a listing source: real
`digest` processes, a real HTTP server on 127.0.0.1 and a real store."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from sqlalchemy import select

from digest.store import Store
from digest.store import schema as t
from tests.cli.test_cli import digest
from tests.sources.test_sources_feed import FeedServer, respond

NL = "kommune"
SOURCE = "Land (Seite)"


@pytest.fixture
def server() -> Iterator[FeedServer]:
    with FeedServer() as running:
        yield running


def listing(count: int = 3, *, teasers: bool = True) -> bytes:
    """A listing page of ``count`` items of the last days, each teaser ending in the
    agency's name (which a first selector leaves in) and a "mehr..." link."""
    items = []
    for n in range(count):
        day = (datetime.now(UTC) - timedelta(days=n + 1)).strftime("%d.%m.%Y")
        teaser = f"Worum es in Meldung {n} geht." if teasers else ""
        items.append(
            f'<article class="meldung"><h2><a href="/meldungen/{n}">Meldung {n}</a></h2>'
            f'<p class="teaser"><span class="datum">{day}</span> {teaser} '
            '<span class="quelle">Quelle: dpa</span> '
            f'<a class="mehr" href="/meldungen/{n}">mehr...</a></p></article>'
        )
    return f"<html><body><main>{''.join(items)}</main></body></html>".encode()


def conditional(body: bytes, etag: str = '"v1"'):
    """A route that answers 304 to a request that names its ETag."""

    def route(handler: BaseHTTPRequestHandler) -> None:
        if handler.headers.get("If-None-Match") == etag:
            handler.send_response(304)
            handler.send_header("ETag", etag)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        handler.send_response(200)
        handler.send_header("Content-Type", "text/html; charset=utf-8")
        handler.send_header("ETag", etag)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return route


def write_config(
    folder: Path, store_url: str, url: str, *, exclude: str, fetch_articles: bool = False
) -> Path:
    config = folder / "config.toml"
    config.write_text(
        f"""secret_key = "test-secret-of-16-chars"
host_delay = 0

[store]
url = "{store_url}"

[[newsletters]]
id = "{NL}"
name = "Kommune Digital"
sender = "Kommune Digital <news@example.org>"

[newsletters.impressum]
publisher = "Verlag"
address = "Straße 1, 10115 Berlin"
contact = "redaktion@example.org"
responsible = "E. Mustermann"

[[newsletters.categories]]
key = "politik"
title = "Politik"

[[newsletters.sources]]
name = "{SOURCE}"
kind = "html"
url = "{url}"
default_category = "politik"
allow_private = true
fetch_articles = {str(fetch_articles).lower()}
[newsletters.sources.selectors]
item = "article.meldung"
title = "h2"
date = ".datum"
teaser = "p.teaser"
exclude = "{exclude}"

[[newsletters.segments]]
name = "alle"
lists = ["allgemein"]
"""
    )
    return config


def summaries(store_url: str) -> dict[str, str]:
    store = Store.open(store_url)
    try:
        with store.engine.connect() as conn:
            rows = conn.execute(select(t.articles.c.title, t.articles.c.summary)).all()
    finally:
        store.close()
    return {title: summary for title, summary in rows}


async def test_collect_force_fetches_a_listing_the_server_calls_unchanged(
    tmp_path: Path, store_url: str, server: FeedServer
) -> None:
    server.routes["/land/"] = conditional(listing())
    url = f"{server.url}/land/"
    config = write_config(tmp_path, store_url, url, exclude=".datum")
    code, out, err = await digest("collect", "--config", str(config), cwd=tmp_path)
    assert code == 0, err
    assert out.splitlines() == [f"{NL}: {SOURCE}: 3 articles", f"{NL}: 3 new, 0 updated"]
    assert all(s.endswith("Quelle: dpa") for s in summaries(store_url).values())

    # The selectors are fixed; the page itself has not changed, so the server says 304.
    config = write_config(tmp_path, store_url, url, exclude=".datum, .quelle")
    code, out, err = await digest("collect", "--config", str(config), cwd=tmp_path)
    assert code == 0, err
    assert out.splitlines() == [
        f"{NL}: {SOURCE}: not modified since the last collect (--force fetches it in full)",
        f"{NL}: 0 new, 0 updated",
    ]
    assert server.requests[-1][1].get("If-None-Match") == '"v1"'

    code, out, err = await digest("collect", "--force", "--config", str(config), cwd=tmp_path)
    assert code == 0, err
    assert out.splitlines() == [f"{NL}: {SOURCE}: 3 articles", f"{NL}: 0 new, 3 updated"]
    assert "If-None-Match" not in server.requests[-1][1]
    assert summaries(store_url) == {
        f"Meldung {n}": f"Worum es in Meldung {n} geht." for n in range(3)
    }


async def test_fetch_articles_fetches_each_article_page_once(
    tmp_path: Path, store_url: str, server: FeedServer
) -> None:
    server.routes["/land/"] = respond(listing(teasers=False), content_type="text/html")
    descriptions = [
        "Der Kreistag beschließt den Ausbau des Glasfasernetzes in allen Gemeinden bis 2027.",
        "Die Stadtverwaltung führt die digitale Bauakte ein und spart damit Papier und Wege.",
    ]
    for n, description in enumerate(descriptions):
        server.routes[f"/meldungen/{n}"] = respond(
            f'<meta name="description" content="{description}">'.encode(),
            content_type="text/html",
        )
    server.routes["/meldungen/2"] = respond(b"<html><body></body></html>", content_type="text/html")
    url = f"{server.url}/land/"
    config = write_config(tmp_path, store_url, url, exclude=".datum, .quelle", fetch_articles=True)
    teasers = {
        "Meldung 0": descriptions[0],
        "Meldung 1": descriptions[1],
        "Meldung 2": "",
    }
    for run in range(2):
        code, out, err = await digest("collect", "--config", str(config), cwd=tmp_path)
        assert code == 0, err
        assert out.splitlines()[-1] == f"{NL}: {3 if run == 0 else 0} new, 0 updated"
        assert summaries(store_url) == teasers  # kept, not emptied, by the second run
    # Every page once, the one that gave no teaser too; the listing each time.
    pages = [path for path, _ in server.requests if path.startswith("/meldungen/")]
    assert sorted(pages) == ["/meldungen/0", "/meldungen/1", "/meldungen/2"]
    assert [path for path, _ in server.requests].count("/land/") == 2

    code, out, err = await digest("collect", "--force", "--config", str(config), cwd=tmp_path)
    assert code == 0, err
    pages = [path for path, _ in server.requests if path.startswith("/meldungen/")]
    assert len(pages) == 6 and summaries(store_url) == teasers
