"""Teasers from two corpora of saved German article pages, as readers get them.

The pages in tests/sources/pages/ (described in its corpus.toml) were written for this
project in the shapes real news pages take, each with one way a page's own description
goes wrong, or none; the sites are made up. The pages in tests/sources/pages/real/ are
real ones, as their sites served them (from trafilatura's test corpus, see its README.md
and corpus.toml). Nothing is fetched from the web: each source's pages are listed in an
RSS feed without descriptions and served by a local HTTP server; ``fetch_articles =
true`` reads them as a collect run does, and the teaser is what compose makes of the
stored summary. Both corpora go through the same fetch and the same judge; the tally is
printed (run with ``-s``).
"""

from __future__ import annotations

import gzip
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
NOW = datetime(2025, 2, 3, 6, 0, tzinfo=UTC)
LIMIT = NEWSLETTER.teaser_length
_ENTITY = re.compile(r"&(?:[A-Za-z]+|#\d+);")
_SITE_CUT = re.compile(r"(?:\.\.\.|\b(?:am|vom|zum|bis|ab|seit|im)\s+\d{1,2}\.)$")
_SEO = re.compile("[✓✔▶►➤]")
_HIDDEN = re.compile("[\u00ad\u200b-\u200d\u2060\ufeff]")  # soft hyphens, zero-width spaces
_CHARSET = re.compile(rb"""charset=["']?([\w-]+)""", re.IGNORECASE)


@dataclass(frozen=True)
class Corpus:
    """Pages and their corpus.toml; how the test server labels them; how many there are."""

    name: str
    directory: Path
    pages: list[dict]
    content_type: str
    at_least: int

    def read(self, page: dict) -> bytes:
        data = (self.directory / page["file"]).read_bytes()
        return gzip.decompress(data) if page["file"].endswith(".gz") else data


def _corpus(name: str, directory: Path, content_type: str, at_least: int) -> Corpus:
    pages = tomllib.loads((directory / "corpus.toml").read_text(encoding="utf-8"))["page"]
    return Corpus(name, directory, pages, content_type, at_least)


WRITTEN = _corpus("written", PAGES, "text/html; charset=utf-8", 20)
# Served without a charset, as many servers do: each page's <meta charset> says it.
REAL = _corpus("real", PAGES / "real", "text/html", 50)


@dataclass
class Judged:
    page: dict
    teaser: str
    bad: str  # why the teaser is bad; '' if it is not
    stored: int = 0  # characters of the summary stored for it

    @property
    def good(self) -> bool:
        expect = self.page["expect"]
        return not self.bad and self.teaser.startswith(
            tuple(expect) if isinstance(expect, list) else expect
        )

    @property
    def at_sentence(self) -> bool:
        return not self.bad and self.teaser.endswith((".", "!", "?", "“", '"', ")"))


def _words(value: str) -> str:
    return " ".join(re.findall(r"\w+", value.casefold()))


def _page_text(data: bytes) -> str:
    """The page as text on one line: entities (also those escaped twice) and soft hyphens
    undone, tags left as they are."""
    charset = _CHARSET.search(data[:4096])
    try:
        text = data.decode(charset.group(1).decode() if charset else "utf-8", errors="replace")
    except LookupError:
        text = data.decode("utf-8", errors="replace")
    for _ in range(3):
        text = html.unescape(text)
    return " ".join(_HIDDEN.sub("", text).split())


def judge(page: dict, teaser: str, data: bytes = b"") -> Judged:
    """What a reader would say of ``teaser``: bad (and why), right, or usable.

    ``data`` is the page: where it goes on from the teaser's last words with more letters
    (in its text or in another description), the teaser was cut inside a word.
    """
    problems = []
    if len(teaser) < 40:
        problems.append("empty or a few words")
    if _ENTITY.search(teaser) or "<" in teaser:
        problems.append("entities or markup")
    if _HIDDEN.search(teaser):
        problems.append("soft hyphens or zero-width spaces")
    if _words(teaser).startswith(_words(page["title"])):
        problems.append("the headline again")
    if _SITE_CUT.search(teaser):
        problems.append("cut by the site")
    if _SEO.search(teaser):
        problems.append("an SEO template")
    if data and (cut := _cut_inside_a_word(teaser, _page_text(data))):
        problems.append(f"cut inside a word ({cut!r})")
    problems += [f"holds {w!r}" for w in page["wrong"] if w in teaser]
    return Judged(page, teaser, "; ".join(problems))


def _cut_inside_a_word(teaser: str, page: str) -> str:
    """The teaser's last word if ``page`` has the words it ends with going on in that word."""
    words = teaser.rstrip(" …").split()[-3:]
    if not words or not words[-1][-1:].isalnum():
        return ""
    return words[-1] if re.search(re.escape(" ".join(words)) + r"\w", page) else ""


@pytest.fixture(scope="module")
def server() -> Iterator[FeedServer]:
    with FeedServer() as running:
        yield running


def _path(corpus: Corpus, page: dict) -> str:
    return f"/{corpus.name}/{page['source']}/{page['file'].removesuffix('.gz')}"


async def teasers_of(corpus: Corpus, server: FeedServer) -> list[Judged]:
    """Each page's teaser, fetched as a collect run fetches it, and judged."""
    by_source: dict[str, list[dict]] = {}
    for page in corpus.pages:
        by_source.setdefault(page["source"], []).append(page)
        server.routes[_path(corpus, page)] = respond(
            corpus.read(page), content_type=corpus.content_type
        )
    judged = []
    for name, pages in by_source.items():
        items = [
            item(
                title=html.escape(page["title"], quote=False),
                link=server.url + _path(corpus, page),
                date=f"Thu, {27 + n:02d} Jan 2025 10:00:00 +0100",
            )
            for n, page in enumerate(pages)
        ]
        feed = f"/{corpus.name}/{name}/feed.xml"
        server.routes[feed] = respond(rss(*items).encode())
        source = SourceSettings(
            name=name,
            url=server.url + feed,
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
            article = by_link[server.url + _path(corpus, page)]
            verdict = judge(page, teaser_for(article.summary, LIMIT), corpus.read(page))
            verdict.stored = len(html.unescape(article.summary))
            judged.append(verdict)
    return judged


def tally(corpus: Corpus, judged: list[Judged]) -> str:
    good = sum(j.good for j in judged)
    bad = sum(bool(j.bad) for j in judged)
    sentences = sum(j.at_sentence for j in judged)
    return (
        f"teasers of {len(judged)} {corpus.name} pages: {good} good, "
        f"{len(judged) - good - bad} usable, {bad} bad; {sentences} end at a sentence"
    )


@pytest.mark.parametrize("corpus", [WRITTEN, REAL], ids=lambda c: c.name)
async def test_teasers_are_never_bad_open_right_and_mostly_end_a_sentence(
    corpus: Corpus, server: FeedServer
) -> None:
    judged = await teasers_of(corpus, server)
    summary = tally(corpus, judged)
    print(f"\n{summary}")
    for j in judged:
        verdict = f"BAD ({j.bad})" if j.bad else ("good" if j.good else "usable")
        print(f"  {j.page['file']:34} {verdict}: {j.teaser!r}")
    assert len(judged) >= corpus.at_least
    assert not [j.page["file"] for j in judged if j.bad], summary
    assert [j.page["file"] for j in judged if not j.good] == [], summary
    assert sum(j.at_sentence for j in judged) >= 0.75 * len(judged), summary
    # What is stored is what is shown: no summary longer than the teaser.
    assert max(j.stored for j in judged) <= LIMIT


def test_the_judge_finds_a_teaser_a_site_cut_inside_a_word() -> None:
    page = {"title": "Kinderbetreuung ausbauen", "wrong": [], "expect": "Betreuungszeiten"}
    data = (
        b'<head><meta name="description" content="Betreuungszeiten auch au&szlig;erhalb der'
        b' Schulzeit sichers"></head><p>Betreuungszeiten auch au&szlig;erhalb der Schulzeit'
        b" sicherstellen</p>"
    )
    whole = judge(page, "Betreuungszeiten auch außerhalb der Schulzeit sicherstellen", data)
    cut = judge(page, "Betreuungszeiten auch außerhalb der Schulzeit sichers", data)
    assert (whole.bad, cut.bad) == ("", "cut inside a word ('sichers')")


def test_the_judge_finds_soft_hyphens() -> None:
    page = {"title": "Neue Regeln", "wrong": [], "expect": "Die"}
    teaser = "Die Anfor\u00adderungen an Impf- und Genesenennachweise sind neu geregelt."
    assert judge(page, teaser).bad == "soft hyphens or zero-width spaces"


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
