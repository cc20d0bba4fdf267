"""Who gets which categories: one email per subscriber, cut to their interests."""

from __future__ import annotations

from datetime import UTC, datetime

from digest.audience.segments import cut_for, recipients_for, segment_recipient
from digest.config import SegmentSettings
from digest.core.models import Article, Issue, IssueItem, Section, Subscriber

T = datetime(2025, 1, 28, tzinfo=UTC)


def _article(uid: str, category: str, region: str | None) -> Article:
    return Article(
        uid=uid,
        source="s",
        title=uid,
        link=f"https://x.example/{uid}",
        published=T,
        category=category,
        region=region,
    )


ISSUE = Issue(
    newsletter="nl",
    key="2025-W05",
    window_start=T,
    window_end=T,
    subject="S",
    sections=(
        Section(
            "politik",
            "Politik",
            tuple(
                IssueItem(_article(u, "politik", r), "t", "u")
                for u, r in [("p-by", "Bayern"), ("p-he", "Hessen"), ("p-none", None)]
            ),
        ),
        Section(
            "sicherheit",
            "IT-Sicherheit",
            (IssueItem(_article("s-by", "sicherheit", "Bayern"), "t", "u"),),
        ),
        Section(
            "smart-city",
            "Smart City",
            (IssueItem(_article("c-hh", "smart-city", "Hamburg"), "t", "u"),),
        ),
    ),
)


def _uids(issue: Issue) -> dict[str, list[str]]:
    return {s.category: [i.article.uid for i in s.items] for s in issue.sections}


def test_each_subscriber_is_one_recipient_even_in_several_segments(demo_settings) -> None:
    newsletter = demo_settings.newsletters[0]
    both = Subscriber("both@example.org", lists=frozenset({"allgemein", "bayern"}))
    subs = [
        both,
        Subscriber("none@example.org", lists=frozenset({"andere"})),
        Subscriber("BOTH@example.org", lists=frozenset({"it-leitungen"})),
    ]
    recipients = recipients_for(newsletter, subs)
    assert [r.subscriber.email for r in recipients] == ["both@example.org"]
    assert recipients[0].segments == ("alle", "bayern")


def test_distinct_mailboxes_are_never_taken_for_one(demo_settings) -> None:
    newsletter = demo_settings.newsletters[0]
    subs = [
        Subscriber("strasse@example.org", lists=frozenset({"allgemein"})),
        Subscriber("straße@example.org", lists=frozenset({"allgemein"})),
    ]
    # casefold() makes 'ß' 'ss'; the store's key (lower-case) keeps them apart
    assert len(recipients_for(newsletter, subs)) == 2


def test_union_of_segments_then_own_interests(demo_settings) -> None:
    newsletter = demo_settings.newsletters[0]
    bayern_only = Subscriber("b@example.org", lists=frozenset({"bayern"}))
    both = Subscriber("both@example.org", lists=frozenset({"allgemein", "bayern"}))
    it_politics = Subscriber(
        "it@example.org",
        lists=frozenset({"it-leitungen"}),
        categories=frozenset({"politik", "sicherheit"}),
    )
    hessen = Subscriber(
        "h@example.org", lists=frozenset({"allgemein"}), regions=frozenset({"Hessen"})
    )
    cuts = {
        r.subscriber.email: _uids(cut_for(ISSUE, r))
        for r in recipients_for(newsletter, [bayern_only, both, it_politics, hessen])
    }
    # the Bayern segment: Bayern plus articles without a region, all categories
    assert cuts["b@example.org"] == {"politik": ["p-by", "p-none"], "sicherheit": ["s-by"]}
    # allgemein ∪ bayern = everything
    assert cuts["both@example.org"] == _uids(ISSUE)
    # it-leitungen allows verwaltung/sicherheit/infrastruktur; own interest narrows to
    # sicherheit; politik is not in the segment, so it is dropped, and empty
    # categories are left out of the email
    assert cuts["it@example.org"] == {"sicherheit": ["s-by"]}
    assert cuts["h@example.org"] == {"politik": ["p-he", "p-none"]}


def test_segment_preview_recipient() -> None:
    segment = SegmentSettings("nur-smart", ("l",), ("smart-city",), ())
    assert _uids(cut_for(ISSUE, segment_recipient(segment))) == {"smart-city": ["c-hh"]}


def test_nothing_left_gives_an_empty_cut(demo_settings) -> None:
    newsletter = demo_settings.newsletters[0]
    sub = Subscriber(
        "x@example.org", lists=frozenset({"allgemein"}), categories=frozenset({"infrastruktur"})
    )
    [recipient] = recipients_for(newsletter, [sub])
    assert cut_for(ISSUE, recipient).is_empty
