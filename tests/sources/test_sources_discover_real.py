"""`digest sources discover` on real saved pages, against what each page holds.

The pages in tests/sources/listings/real/ are saved copies of real web pages from two
public test corpora (see the README there); nothing is fetched from the web. Each is
served by a local server at its original path, with its feed links removed (as a site
without a feed would have it), and discover's proposal and preview are checked against
real.toml: what a reader of the page finds on it (its items, their dates, headlines,
links, labels, teasers, pictures, and the next page), or, on a single article or a page
without dated items, that nothing is proposed and why.

``pytest -s`` prints a tally: pages right, partly right (the item selector right, some
part of an item or the next page wrong) and wrong, and preview items right of all.
"""

from __future__ import annotations

import gzip
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest
from selectolax.lexbor import LexborHTMLParser

from digest.sources.listing import first_link
from tests.cli.test_cli import digest
from tests.sources.test_sources_discover import preview
from tests.sources.test_sources_feed import FeedServer, respond

REAL = Path(__file__).parent / "listings" / "real"
PAGES: dict[str, dict[str, Any]] = tomllib.loads((REAL / "real.toml").read_text())["pages"]
_FEED_LINK = re.compile(
    rb"<link\b[^>]*\btype=[\"']application/(?:rss|atom)\+xml[\"'][^>]*>", re.IGNORECASE
)
#: What each page came to: "right", "partly" or "wrong"; preview items right of those
#: expected; items found of the items on the page (those of a wrong proposal count none).
TALLY: dict[str, tuple[str, int, int, int, int]] = {}


@pytest.fixture
def server() -> Iterator[FeedServer]:
    with FeedServer() as running:
        yield running


def page_bytes(name: str) -> bytes:
    return gzip.decompress((REAL / f"{name}.html.gz").read_bytes())


async def run(server: FeedServer, name: str, page: bytes, cwd: Path) -> tuple[int, str, str]:
    """Serve ``page`` at its original path and run discover on it; URLs in the output
    name the page's site again, not the local server."""
    url = PAGES[name]["url"]
    parts = urlsplit(url)
    server.routes[parts.path or "/"] = respond(page, content_type="text/html; charset=utf-8")
    code, out, err = await digest(
        "sources", "discover", "--allow-private", server.url + (parts.path or "/"), cwd=cwd
    )
    origin = f"{parts.scheme}://{parts.netloc}"
    return code, out.replace(server.url, origin), err


def item_fields(lines: list[str]) -> dict[str, str]:
    """One preview item as date, label, title, link, teaser (its start) and image."""
    date, _, headline = lines[0].partition("  ")
    label, title = "", headline
    if match := re.match(r"\[([^\]]*)\] (.*)", headline):
        label, title = match.groups()
    fields = {"date": date, "label": label, "title": title, "link": lines[1]}
    fields["teaser"] = next((x[8:] for x in lines if x.startswith("teaser: ")), "")
    fields["image"] = next((x[7:] for x in lines if x.startswith("image: ")), "")
    return fields


def matches(got: dict[str, str], want: dict[str, str]) -> bool:
    """Whether a preview item is the expected one: a teaser by its start, else equal."""
    return all(
        got[key].startswith(value) if key == "teaser" else got[key] == value
        for key, value in want.items()
    )


def next_url(name: str, selector: str) -> str:
    """Where the proposed next-page selector leads on the page (as the listing reads it)."""
    if not selector:
        return ""
    node = LexborHTMLParser(page_bytes(name).decode("utf-8", "replace")).css_first(selector)
    link = first_link(node) if node is not None else None
    href = (link.attributes.get("href") or "") if link is not None else ""
    return urljoin(PAGES[name]["url"], href) if href else ""


def judge(name: str, code: int, out: str, err: str) -> tuple[str, int, int, list[str]]:
    """The verdict on one page, with what is wrong."""
    want = PAGES[name]
    if "items" not in want:  # a single article, a page without dated items: no proposal
        ok = code == 1 and "[[newsletters.sources]]" not in out and want["note"] in err
        verdict = "right" if ok else "wrong"
        return verdict, 0, 0, [] if ok else [f"proposed: {out[:300]}; {err[:300]}"]
    if code != 0 or "[[newsletters.sources]]" not in out:
        return "wrong", 0, len(want["items"]), [f"nothing proposed: {err.strip()}"]
    selectors = tomllib.loads(out)["newsletters"]["sources"][0]["selectors"]
    if selectors["item"] != want["item"]:
        return "wrong", 0, len(want["items"]), [f"item {selectors['item']!r}"]
    problems = []
    got = [item_fields(lines) for lines in preview(out)]
    right = sum(matches(g, w) for g, w in zip(got, want["items"], strict=False))
    for g, w in zip(got, want["items"], strict=False):
        if not matches(g, w):
            problems.append(f"item {g} is not {w}")
    if len(got) != len(want["items"]):
        problems.append(f"{len(got)} preview items, not {len(want['items'])}")
    if f"# preview: {want['count']} items" not in out:
        problems.append(f"not {want['count']} items: {out.split('# preview:')[1][:12]!r}")
    if (found := next_url(name, selectors.get("next", ""))) != want["next"]:
        problems.append(f"next page {found!r} ({selectors.get('next')!r}), not {want['next']!r}")
    return ("partly" if problems else "right"), right, len(want["items"]), problems


@pytest.mark.parametrize("name", sorted(PAGES))
async def test_discover_on_a_real_page(name: str, server: FeedServer, tmp_path: Path) -> None:
    code, out, err = await run(server, name, _FEED_LINK.sub(b"", page_bytes(name)), tmp_path)
    verdict, right, shown, problems = judge(name, code, out, err)
    found = re.search(r"# preview: (\d+) items", out) if verdict != "wrong" else None
    TALLY[name] = (
        verdict,
        right,
        shown,
        int(found[1]) if found else 0,
        PAGES[name].get("count", 0),
    )
    known = PAGES[name].get("known_wrong", "")
    if known:
        # What discover still gets wrong on this page (see real.toml): a fix shows here.
        assert problems, f"{name} is right now; remove known_wrong from real.toml"
        pytest.xfail(known)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", [n for n in sorted(PAGES) if PAGES[n].get("feeds")])
async def test_with_its_feed_links_a_page_names_its_feeds(
    name: str, server: FeedServer, tmp_path: Path
) -> None:
    code, out, err = await run(server, name, page_bytes(name), tmp_path)
    assert code == 0, err
    sources = tomllib.loads(out)["newsletters"]["sources"]
    assert [s["url"] for s in sources] == PAGES[name]["feeds"]
    assert len({s["name"] for s in sources}) == len(sources)


def test_tally() -> None:
    """Prints how discover did on the real pages (run after the others, with -s)."""
    if not TALLY:
        pytest.skip("run with the page tests")
    verdicts = [entry[0] for entry in TALLY.values()]
    right, shown, found, total = (sum(entry[i] for entry in TALLY.values()) for i in range(1, 5))
    listings = sum("items" in PAGES[n] for n in TALLY)
    # The parts of all items come from the same selectors: a page's items are as right as
    # its preview's.
    items_right = sum(f * r // s for _, r, s, f, _ in TALLY.values() if s)
    print(
        f"\nreal pages: {verdicts.count('right')} right, {verdicts.count('partly')} partly, "
        f"{verdicts.count('wrong')} wrong of {len(TALLY)} ({listings} listings, "
        f"{len(TALLY) - listings} without a list to propose); items found: {found} of "
        f"{total}, right (as their preview): {items_right}; preview items right: {right} of "
        f"{shown}"
    )
    for name, (verdict, r, s, f, t) in sorted(TALLY.items()):
        print(f"  {verdict:6}  items {f:>2}/{t:<2}  preview {r}/{s}  {name}")
