"""Each reader's own top N: ``max_per_category`` applies to what each reader may read.

Through a real send of the demo issue into the aiosmtpd server. In the week's window
Politik has eight articles; the sixth newest is the last within the demo's limit of six.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from digest.config import Settings, StoreSettings
from digest.core.models import Subscriber
from digest.issue.compose import iso_week_window
from digest.issue.editing import apply_edit
from digest.issue.prepare import prepare_issue
from digest.ops import jobs
from digest.ops.demo import import_demo_lists
from tests.delivery.test_send import NOW, WEEK, World, _parse, _text_of

#: The Politik articles of the week, newest first.
POLITIK = (
    "München: Stadtrat verdoppelt Budget für Digitalprojekte",  # Bayern
    "Brandenburg: Enquete-Kommission zieht Zwischenbilanz",
    "Baden-Württemberg: Kommunen erhalten Digitalisierungspauschale",
    "Deutscher Städtetag: Digitalisierung braucht verlässliche Finanzierung",  # no region
    "Nordrhein-Westfalen: Landes-CIO setzt auf gemeinsame Plattformen",
    "Sachsen: Digitalhaushalt soll deutlich wachsen",
    "Hessen: Landtag berät erstmals über Digitalgesetz",
    "Bayern: Digitalpakt mit den Kommunen verlängert",
)
HESSEN, DIGITALPAKT = POLITIK[6], POLITIK[7]
READERS = {
    "alle@example.org": frozenset(),
    "hessen@example.org": frozenset({"Hessen"}),
    "sachsen@example.org": frozenset({"Sachsen"}),
    "bayern@example.org": frozenset({"Bayern"}),
    "sachsen-hessen@example.org": frozenset({"Sachsen", "Hessen"}),
}


async def _world(demo_settings: Settings, store_url: str, limit: int) -> World:
    newsletter = replace(demo_settings.newsletters[0], max_per_category=limit)
    settings = replace(demo_settings, store=StoreSettings(store_url), newsletters=(newsletter,))
    store = jobs.open_store(settings)
    assert not any(r.errors for r in import_demo_lists(settings, store, newsletter))
    for address, regions in READERS.items():
        store.save_subscriber(Subscriber(address, regions=regions), ["allgemein"])
    [collected] = await jobs.collect(settings, store, newsletter.id, now=NOW)
    assert not collected.failed
    return World(settings, store, newsletter)


@pytest.fixture
async def demo(demo_settings: Settings, store_url: str) -> AsyncIterator[World]:
    world = await _world(demo_settings, store_url, 6)
    yield world
    world.store.close()


@pytest.fixture
async def two(demo_settings: Settings, store_url: str) -> AsyncIterator[World]:
    world = await _world(demo_settings, store_url, 2)
    yield world
    world.store.close()


def _politik(text: str) -> list[str]:
    """The Politik headlines of a text part, in the order the reader reads them."""
    return sorted((t for t in POLITIK if t in text), key=text.index)


async def test_a_reader_of_one_region_gets_its_article_beyond_the_issue_wide_cut(
    demo: World, smtp_server
) -> None:
    await demo.send(smtp_server)
    received = {r[0]: _text_of(_parse(data)) for _, r, data in smtp_server.messages}
    assert _politik(received["alle@example.org"]) == list(POLITIK[:6])
    # The seventh of the section, beyond the cut of six for a reader of every region.
    assert _politik(received["hessen@example.org"]) == [POLITIK[3], HESSEN]
    assert _politik(received["bayern@example.org"]) == [POLITIK[0], POLITIK[3], DIGITALPAKT]
    # The issue keeps every article a reader got: composed again after the send (from
    # the articles it claimed), it still has them.
    prepared = prepare_issue(demo.store, demo.newsletter, WEEK, NOW)
    assert prepared is not None and prepared.record is not None
    assert prepared.record.status == "sent"
    [politik] = [s for s in prepared.issue.sections if s.category == "politik"]
    assert [i.article.title for i in (*politik.items, *politik.reserve)] == list(POLITIK)


async def test_pins_come_first_then_the_newest_within_each_readers_limit(
    two: World, smtp_server
) -> None:
    _key, start, end = iso_week_window(WEEK, two.newsletter.zone, NOW)
    uids = {a.title: a.uid for a in two.store.window_articles(two.newsletter.id, start, end)}
    for title in (HESSEN, DIGITALPAKT):
        apply_edit(
            two.store, two.newsletter, WEEK, action="pin", uid=uids[title], text=None,
            editor="redaktion", now=NOW,
        )  # fmt: skip
    await two.send(smtp_server)
    received = {r[0]: _text_of(_parse(data)) for _, r, data in smtp_server.messages}
    assert _politik(received["alle@example.org"]) == [HESSEN, DIGITALPAKT]
    # The pinned article of their region first, though it is the oldest; then the newest.
    assert _politik(received["bayern@example.org"]) == [DIGITALPAKT, POLITIK[0]]
    assert _politik(received["sachsen-hessen@example.org"]) == [HESSEN, POLITIK[3]]
    # Two at most for each reader: the older Sachsen article waits behind the newer one.
    assert _politik(received["sachsen@example.org"]) == [POLITIK[3], POLITIK[5]]
    assert _politik(received["hessen@example.org"]) == [HESSEN, POLITIK[3]]
