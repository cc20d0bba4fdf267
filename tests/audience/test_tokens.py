"""The per-recipient tokens: what itsdangerous makes and reads, made faster."""

from __future__ import annotations

import pytest
from itsdangerous import URLSafeSerializer

from digest.audience.tokens import (
    MAIL,
    PREFERENCES,
    UNSUBSCRIBE,
    WEB,
    ClickLink,
    TokenError,
    article_ref,
    make_click_token,
    make_token,
    read_click_token,
    read_token,
    read_token_locale,
)

SECRET = "test-secret-key-0123456789"


@pytest.mark.parametrize("purpose", [UNSUBSCRIBE, PREFERENCES])
@pytest.mark.parametrize("subscriber_id", [1, 42, 99_999, 2**40])
@pytest.mark.parametrize("newsletter_id", ["wochenueberblick", "a", "kommune-digital-2"])
def test_a_token_is_the_one_itsdangerous_makes(
    purpose: str, subscriber_id: int, newsletter_id: str
) -> None:
    expected = URLSafeSerializer(SECRET, salt=f"digest.{purpose}").dumps(
        [subscriber_id, newsletter_id]
    )
    token = make_token(SECRET, purpose, subscriber_id, newsletter_id)
    assert token == expected
    assert read_token(SECRET, purpose, token) == (subscriber_id, newsletter_id)


def test_a_payload_itsdangerous_would_compress_is_read_all_the_same() -> None:
    # itsdangerous compresses a payload that gets shorter by it; ours never tries.
    token = make_token(SECRET, UNSUBSCRIBE, 7, "x" * 60)
    assert not token.startswith(".")
    assert read_token(SECRET, UNSUBSCRIBE, token) == (7, "x" * 60)
    with pytest.raises(TokenError):
        read_token(SECRET, PREFERENCES, token)  # another purpose
    with pytest.raises(TokenError):
        read_token("another-secret-key-0123456789", UNSUBSCRIBE, token)
    with pytest.raises(TokenError):
        read_token(SECRET, UNSUBSCRIBE, token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1])


def test_a_token_may_name_the_readers_locale() -> None:
    """A reader whose locale is not the newsletter's: their links name it (signed)."""
    token = make_token(SECRET, UNSUBSCRIBE, 7, "wochenueberblick", "en_GB")
    assert read_token(SECRET, UNSUBSCRIBE, token) == (7, "wochenueberblick")
    assert read_token_locale(SECRET, UNSUBSCRIBE, token) == (7, "wochenueberblick", "en_GB")
    # Tokens without one (every link sent before, every reader of the newsletter's
    # locale) read as before, and name no locale.
    plain = make_token(SECRET, UNSUBSCRIBE, 7, "wochenueberblick")
    assert read_token_locale(SECRET, UNSUBSCRIBE, plain) == (7, "wochenueberblick", None)
    odd = URLSafeSerializer(SECRET, salt=f"digest.{UNSUBSCRIBE}")
    for payload in ([7, "wochenueberblick", 5], [7, "wochenueberblick", "en", "x"]):
        with pytest.raises(TokenError, match="unexpected contents"):
            read_token_locale(SECRET, UNSUBSCRIBE, odd.dumps(payload))


def test_a_click_token_names_the_issue_the_article_and_the_channel_and_nobody() -> None:
    uid = "https://example.org/meldung/1?ref=rss"
    token = make_click_token(SECRET, "wochenueberblick", "2025-W05", uid, MAIL)
    assert read_click_token(SECRET, token) == ClickLink(
        "wochenueberblick", "2025-W05", article_ref(uid), MAIL
    )
    # The payload is readable: it holds these four values and nothing else.
    payload = URLSafeSerializer(SECRET, salt="digest.click").loads(token)
    assert payload == ["wochenueberblick", "2025-W05", article_ref(uid), "m"]
    web = make_click_token(SECRET, "wochenueberblick", "2025-W05", uid, WEB)
    assert web != token and read_click_token(SECRET, web).channel == WEB
    assert len(article_ref("x" * 1000)) == 12


def test_altered_forged_and_other_tokens_are_no_click_tokens() -> None:
    token = make_click_token(SECRET, "wochenueberblick", "2025-W05", "a", MAIL)
    for bad in (
        token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1],  # signature altered
        make_click_token(
            "another-secret-key-0123456789", "wochenueberblick", "2025-W05", "a", MAIL
        ),
        make_token(SECRET, UNSUBSCRIBE, 1, "wochenueberblick"),  # another purpose
        URLSafeSerializer(SECRET, salt="digest.click").dumps(["n", "2025-W05", "ref", "x"]),
        "",
        "nichts",
    ):
        with pytest.raises(TokenError):
            read_click_token(SECRET, bad)
    # The payload of one token under the signature of another: refused.
    other = make_click_token(SECRET, "wochenueberblick", "2025-W06", "a", MAIL)
    with pytest.raises(TokenError):
        read_click_token(SECRET, other.split(".")[0] + "." + token.split(".")[1])
