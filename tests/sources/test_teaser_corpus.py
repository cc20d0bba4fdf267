"""Teasers from a corpus of saved German article pages, as readers get them.

The pages in tests/sources/pages/ (described in its corpus.toml) were written for this
project in the shapes real news pages take, each with one way a page's own description
goes wrong, or none; the sites are made up and nothing is fetched from the web. Each
source's pages are listed in an RSS feed without descriptions and served by a local
HTTP server; ``fetch_articles = true`` reads them as a collect run does, and the teaser
is what compose makes of the stored summary. The tally is printed (run with ``-s``).
"""

from __future__ import annotations

import html
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from digest.config import SourceSettings
from digest.issue.compose import teaser_for
from digest.sources import Guest, fetch_any, new_http_client
from digest.sources.describe import flaw
from tests.sources.test_sources_feed import NEWSLETTER, FeedServer, item, respond, rss

PAGES = Path(__file__).parent / "pages"
CORPUS = tomllib.loads((PAGES / "corpus.toml").read_text(encoding="utf-8"))["page"]
NOW = datetime(2025, 2, 3, 6, 0, tzinfo=UTC)
LIMIT = NEWSLETTER.teaser_length
_ENTITY = re.compile(r"&(?:[A-Za-z]+|#\d+);")
_SITE_CUT = re.compile(r"(?:\.\.\.|\b(?:am|vom|zum|bis|ab|seit|im)\s+\d{1,2}\.)$")
_SEO = re.compile("[✓✔▶►➤]")


@dataclass
class Judged:
    page: dict
    teaser: str
    bad: str  # why the teaser is bad; '' if it is not
    stored: int = 0  # characters of the summary stored for it

    @property
    def good(self) -> bool:
        return not self.bad and self.teaser.startswith(self.page["expect"])

    @property
    def at_sentence(self) -> bool:
        return not self.bad and self.teaser.endswith((".", "!", "?", "“", '"', ")"))


def _words(value: str) -> str:
    return " ".join(re.findall(r"\w+", value.casefold()))


def judge(page: dict, teaser: str) -> Judged:
    """What a reader would say of ``teaser``: bad (and why), right, or usable."""
    problems = []
    if len(teaser) < 40:
        problems.append("empty or a few words")
    if _ENTITY.search(teaser) or "<" in teaser:
        problems.append("entities or markup")
    if _words(teaser).startswith(_words(page["title"])):
        problems.append("the headline again")
    if _SITE_CUT.search(teaser):
        problems.append("cut by the site")
    if _SEO.search(teaser):
        problems.append("an SEO template")
    problems += [f"holds {w!r}" for w in page["wrong"] if w in teaser]
    return Judged(page, teaser, "; ".join(problems))


@pytest.fixture(scope="module")
def server() -> Iterator[FeedServer]:
    with FeedServer() as running:
        yield running


async def teasers_of_the_corpus(server: FeedServer) -> list[Judged]:
    by_source: dict[str, list[dict]] = {}
    for page in CORPUS:
        by_source.setdefault(page["source"], []).append(page)
        server.routes[f"/{page['source']}/{page['file']}"] = respond(
            (PAGES / page["file"]).read_bytes(), content_type="text/html; charset=utf-8"
        )
    judged = []
    for name, pages in by_source.items():
        items = [
            item(
                title=page["title"].replace("&", "&amp;"),
                link=f"{server.url}/{name}/{page['file']}",
                date=f"Thu, {27 + n:02d} Jan 2025 10:00:00 +0100",
            )
            for n, page in enumerate(pages)
        ]
        server.routes[f"/{name}/feed.xml"] = respond(rss(*items).encode())
        source = SourceSettings(
            name=name,
            url=f"{server.url}/{name}/feed.xml",
            default_category="politik",
            allow_private=True,  # the test server listens on 127.0.0.1
            fetch_articles=True,
        )
        async with new_http_client() as client:
            result = await fetch_any(
                source, NEWSLETTER, None, client=client, base_dir=PAGES, guest=Guest(), now=NOW
            )
        by_link = {a.link: a for a in result.articles}
        for page in pages:
            article = by_link[f"{server.url}/{name}/{page['file']}"]
            verdict = judge(page, teaser_for(article.summary, LIMIT))
            verdict.stored = len(html.unescape(article.summary))
            judged.append(verdict)
    return judged


async def test_teasers_of_real_shaped_pages_are_never_bad_and_mostly_end_a_sentence(
    server: FeedServer,
) -> None:
    judged = await teasers_of_the_corpus(server)
    good = sum(j.good for j in judged)
    bad = [j for j in judged if j.bad]
    sentences = sum(j.at_sentence for j in judged)
    tally = (
        f"teasers of {len(judged)} pages: {good} good, {len(judged) - good - len(bad)} usable, "
        f"{len(bad)} bad; {sentences} end at a sentence"
    )
    print(f"\n{tally}")
    for j in judged:
        verdict = f"BAD ({j.bad})" if j.bad else ("good" if j.good else "usable")
        print(f"  {j.page['file']:28} {verdict}: {j.teaser[:90]!r}")
    assert len(judged) >= 20
    assert not bad, tally
    assert good >= len(judged) - 2, tally
    assert sentences >= 0.75 * len(judged), tally
    # What is stored is what is shown: no summary longer than the teaser.
    assert max(j.stored for j in judged) <= LIMIT


HEADLINE = ["Landtag beschließt Digitalgesetz"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("Digitalgesetz", "too short"),
        ("Landtag beschließt Digitalgesetz | Landesportal Hessen", "the headline again"),
        ("Der Landtag hat das Digitalgesetz beschlossen. Die Opposition kritisierte...", "cut"),
        ("Der Landtag hat das Digitalgesetz beschlossen. Die Opposition kritisierte die", "cut"),
        ("Der Landtag hat das Digitalgesetz beschlossen. Es gilt nun für alle Ämter und", "cut"),
        ("Unter dem Motto „Gemeinsam für Hessen“ findet am 14.", "cut"),
        ("Digitalgesetz im Überblick | Alle Fakten zum neuen Gesetz ✓ kompakt erklärt", "SEO"),
        ("Was das neue Digitalgesetz für Kommunen bedeutet. Jetzt informieren!", "SEO"),
        ("Was das neue Digitalgesetz für Kommunen bedeutet ➤ Hier mehr erfahren", "SEO"),
    ],
)
def test_descriptions_that_make_no_teaser(text: str, problem: str) -> None:
    assert problem in (flaw(text, HEADLINE) or "")


@pytest.mark.parametrize(
    "text",
    [
        "Der Landtag hat das Digitalgesetz beschlossen. Es gilt ab dem 1. Juli für alle Ämter.",
        "Das Gesetz gilt z. B. für Bauanträge nach Nr. 5 der Anlage, ab 28.01.2025 landesweit.",
        "Alles Wichtige zum Digitalgesetz des Landes Hessen im Überblick",
        "Förderprogramme des Landes, z. B. für Kommunen und Vereine im ländlichen Raum",
    ],
)
def test_descriptions_that_do(text: str) -> None:
    assert flaw(text, HEADLINE) is None
