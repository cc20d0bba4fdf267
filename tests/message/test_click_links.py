"""Counted article links: what readers get goes through /r/<token>, previews do not."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import re
from datetime import UTC, datetime

from digest.audience.segments import cut_for
from digest.audience.tokens import MAIL, WEB, article_ref, read_click_token
from digest.config import Settings
from digest.core.models import Recipient, Rule, Subscriber
from digest.message.personalize import Personalizer
from digest.message.render import personalize, render_variant
from tests.message.test_render import (
    FIELDS,
    GOLDEN_ARTICLES,
    compose_w05,
    make_settings,
    thirty_articles,
)

NOW = datetime(2025, 2, 3, 6, tzinfo=UTC)
COUNTED = re.compile(r"https://kommune-digital\.example/r/([A-Za-z0-9_.-]+)")


def counting_settings(on: bool = True) -> Settings:
    return make_settings(click_counts=on)


def decoded(data: bytes) -> str:
    """The HTML and the text part of a message, decoded, one after the other."""
    message = email.message_from_bytes(data, policy=email.policy.default)
    return "\n".join(
        part.get_content() for part in message.walk() if part.get_content_maintype() == "text"
    )


def reader(n: int, regions: frozenset[str] | None = None) -> Recipient:
    return Recipient(Subscriber(f"leser{n}@example.org", id=n), ("alle",), (Rule(None, regions),))


def test_every_article_link_of_a_sent_message_is_counted_and_names_no_reader() -> None:
    settings = counting_settings()
    newsletter = settings.newsletters[0]
    issue = compose_w05(newsletter, GOLDEN_ARTICLES)
    personalizer = Personalizer(settings, newsletter, issue, NOW, count_clicks=True)
    messages = []
    for n in (1, 2):
        variant = personalizer.variant_for(reader(n))
        assert variant is not None
        messages.append(decoded(personalizer.message_for(reader(n), variant).data))
    first, second = messages
    tokens = COUNTED.findall(first)
    # Headline, "mehr…" (and the picture, where there is one) in HTML; "mehr…" in text.
    assert len(set(tokens)) == len(issue.articles)
    named = {read_click_token(settings.secret_key, token) for token in tokens}
    assert {(c.newsletter, c.issue, c.channel) for c in named} == {
        ("wochenueberblick", "2025-W05", MAIL)
    }
    assert {c.article for c in named} == {article_ref(a.uid) for a in issue.articles}
    # Every reader gets the same links: nothing in them tells readers apart.
    assert sorted(COUNTED.findall(second)) == sorted(tokens)
    for article in issue.articles:
        assert article.link.split("?")[0] not in first  # no direct article link left
    assert "/unsubscribe/" in first and "/preferences/" in first  # personal links stay


def test_previews_tests_and_newsletters_without_click_counts_keep_direct_links() -> None:
    for on, count in ((True, False), (False, True), (False, False)):
        settings = counting_settings(on)
        newsletter = settings.newsletters[0]
        issue = compose_w05(newsletter, GOLDEN_ARTICLES)
        personalizer = Personalizer(settings, newsletter, issue, NOW, count_clicks=count)
        variant = personalizer.variant_for(reader(1))
        assert variant is not None
        html, text = personalize(variant, FIELDS)
        assert "/r/" not in html and "/r/" not in text, (on, count)
        assert "https://kommune-digital.example/meldung/k21-1002?utm_source" in html


def test_the_archive_copy_counts_its_links_as_web() -> None:
    settings = counting_settings()
    newsletter = settings.newsletters[0]
    issue = compose_w05(newsletter, GOLDEN_ARTICLES)
    personalizer = Personalizer(settings, newsletter, issue, NOW, archive=True, count_clicks=True)
    variant = personalizer.variant_for(reader(0))
    assert variant is not None
    channels = {
        read_click_token(settings.secret_key, t).channel for t in COUNTED.findall(variant.html)
    }
    assert channels == {WEB}
    # The variant keeps the issue as composed: its items have the articles' own links.
    assert all("/r/" not in item.url for s in variant.issue.sections for item in s.items)


def test_a_cut_counts_only_its_own_articles() -> None:
    settings = counting_settings()
    newsletter = settings.newsletters[0]
    issue = compose_w05(newsletter, GOLDEN_ARTICLES)
    bayern = reader(3, frozenset({"Bayern"}))
    variant = Personalizer(settings, newsletter, issue, NOW, count_clicks=True).variant_for(bayern)
    assert variant is not None
    refs = {read_click_token(settings.secret_key, t).article for t in COUNTED.findall(variant.text)}
    assert refs == {article_ref(a.uid) for a in cut_for(issue, bayern).articles}
    assert article_ref("k21-1003") not in refs  # Hessen's


def test_a_full_digest_with_counted_links_stays_below_gmail_clipping() -> None:
    settings = counting_settings()
    newsletter = dataclasses.replace(settings.newsletters[0])
    issue = compose_w05(newsletter, thirty_articles(newsletter))
    html, _text = personalize(render_variant(settings, newsletter, issue, clicks=MAIL), FIELDS)
    assert len(COUNTED.findall(html)) >= 60
    assert len(html.encode("utf-8")) < 90_000
