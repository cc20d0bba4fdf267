"""Translations: complete catalogues, and an English newsletter with no German in it.

The message ids are English; digest/locale/de holds the German texts (the default) and
digest/locale/en the English ones. After changing a text, run ``make messages`` and
translate the new entries in every catalogue.
"""

from __future__ import annotations

import dataclasses
import email
import email.policy
import re
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po

from digest.audience.tokens import make_confirm_token, preferences_url, unsubscribe_url
from digest.config import Settings
from digest.core.i18n import LOCALE_DIR, format_week, translations
from digest.core.models import Subscriber
from digest.message.render import greeting_for
from digest.ops.mail_queue import confirmation_message
from digest.store import Store
from digest.web.app import create_app
from tests.audience.test_signup import csrf_of, sign_up, signup_ids
from tests.message.test_golden_message import demo_message

ROOT = Path(__file__).resolve().parents[2]
LANGUAGES = ("de", "en")
_PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def extracted_messages() -> dict[str, set[str]]:
    """Every message id in the code and templates (as ``make messages`` finds them)."""
    with (ROOT / "babel.cfg").open() as cfg:
        method_map, options_map = parse_mapping_cfg(cfg, str(ROOT / "babel.cfg"))
    found: dict[str, set[str]] = {}
    for filename, _line, message, _comments, _context in extract_from_dir(
        ROOT, method_map, options_map, keywords=DEFAULT_KEYWORDS
    ):
        for msgid in (message,) if isinstance(message, str) else message:
            if msgid:
                found.setdefault(msgid, set()).add(filename)
    return found


def catalogue(language: str) -> Catalog:
    with (LOCALE_DIR / language / "LC_MESSAGES" / "digest.po").open("rb") as po:
        return read_po(po)


def _placeholders(text: str) -> list[str]:
    return sorted(_PLACEHOLDER.findall(text))


def test_the_code_has_texts_to_translate() -> None:
    # Guards the test below: an extraction that finds nothing would pass it vacuously.
    found = extracted_messages()
    assert {"more…", "Unsubscribe", "Hello %(name)s,", "Page not found"} <= set(found)


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_text_is_translated(language: str) -> None:
    """A new text cannot ship untranslated: every msgid in every catalogue, not fuzzy."""
    found = extracted_messages()
    entries = {m.id if isinstance(m.id, str) else m.id[0]: m for m in catalogue(language) if m.id}
    missing = sorted(set(found) - set(entries))
    assert not missing, f"not in {language}/digest.po (run make messages): {missing}"
    stale = sorted(set(entries) - set(found))
    assert not stale, f"in {language}/digest.po but no longer used (run make messages): {stale}"
    for msgid, entry in entries.items():
        strings = [entry.string] if isinstance(entry.string, str) else list(entry.string)
        assert all(s.strip() for s in strings), f"{language}: no translation for {msgid!r}"
        assert not entry.fuzzy, f"{language}: {msgid!r} is marked fuzzy (never shown)"
        for string in strings:
            assert _placeholders(string) == _placeholders(msgid), (language, msgid, string)
            # New-style gettext formats every text: a lone % would fail at render time.
            assert "%" not in _PLACEHOLDER.sub("", string).replace("%%", ""), string


def test_greeting_and_week_follow_the_locale() -> None:
    assert greeting_for("Alice", "de_DE") == "Guten Tag Alice,"
    assert greeting_for("", "de_DE") == "Guten Tag,"
    assert greeting_for("Alice", "en_GB") == "Hello Alice,"
    assert greeting_for(" ", "en_GB") == "Hello,"
    assert format_week(2025, 5, "de_DE") == "KW 5/2025"
    assert format_week(2025, 5, "en_GB") == "Week 5/2025"
    # A language without a catalogue reads the English message ids.
    assert format_week(2025, 5, "fr_FR") == "Week 5/2025"
    assert translations("de_AT").gettext("more…") == "mehr…"


#: Where the texts only editors read are: the editors' area, and the schedule in words.
EDITORS_ONLY = ("digest/web/admin/", "digest/web/templates/admin/", "digest/config/cron_words.py")


def german_phrases() -> set[str]:
    """The German texts of our own, cut at their placeholders: none may reach an English reader.

    Texts only the editors' area shows are left out: they never reach a reader, and
    their short pieces ("am", "um") are words of the German articles too.
    """
    english = {m.id: m.string for m in catalogue("en") if m.id}
    phrases = set()
    for entry in catalogue("de"):
        if not entry.id or not isinstance(entry.string, str):
            continue
        if entry.locations and all(path.startswith(EDITORS_ONLY) for path, _ in entry.locations):
            continue
        for piece in re.split(r"%\(\w+\)s|\n", entry.string):
            piece = piece.strip(" ,.:()")
            if re.search(r"[A-Za-zÄÖÜäöüß]{2}", piece) and piece not in english[entry.id]:
                phrases.add(piece)
    return phrases


def test_german_phrases_include_the_ones_readers_notice() -> None:
    phrases = german_phrases()
    expected = {"mehr…", "Abmelden", "Impressum", "Kontakt", "Verantwortlich", "KW", "Guten Tag"}
    assert expected <= phrases


async def test_an_english_newsletter_has_no_german_text_of_ours(demo_settings: Settings) -> None:
    """The demo issue with locale en_GB, to a reader without a locale of their own: both
    parts English, ``<html lang="en">``.

    The articles, category titles and Impressum values are German data from the feeds and
    the config; only the texts from the catalogues are checked. "Impressum" is German law's
    name for the publisher's details; English readers get "Legal notice".
    """
    [newsletter] = demo_settings.newsletters
    english = dataclasses.replace(newsletter, locale="en_GB")
    settings = dataclasses.replace(demo_settings, newsletters=(english,))
    message, issue = await demo_message(settings, reader_locale=None)
    assert issue.week_label == "Week 5/2025"
    parsed = email.message_from_bytes(message.data, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    parts = {}
    for subtype in ("plain", "html"):
        part = parsed.get_body(preferencelist=(subtype,))
        assert part is not None
        parts[subtype] = part.get_content().replace("\r\n", "\n")
    html, text = parts["html"], parts["plain"]
    assert '<html lang="en"' in html
    for body in (html, text):
        assert "Hello Jürgen Böhm," in body
        assert "here is our round-up of Week 5/2025 (27 Jan 2025 – 2 Feb 2025)." in body
        assert "Legal notice" in body and "Unsubscribe" in body
        found = sorted(p for p in german_phrases() if p in body)
        assert not found, f"German text in an English digest: {found}"
    assert "more…: https://" in text and ">more…</a>" in html
    # The address still gets a line of its own in the text part, the rest is wrapped.
    assert "\nYou are receiving this email at juergen.boehm@example.org\nbecause you" in text


def _client(settings: Settings, store: Store) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(settings, store))
    return httpx.AsyncClient(transport=transport, base_url=settings.public_url)


async def test_pages_speak_the_newsletters_language(demo_settings: Settings, store: Store) -> None:
    [newsletter] = demo_settings.newsletters
    english = dataclasses.replace(newsletter, locale="en_GB")
    settings = dataclasses.replace(demo_settings, newsletters=(english,))
    sid = store.save_subscriber(Subscriber("e@example.org"), ["allgemein"])
    url = unsubscribe_url(settings, newsletter.id, sid)
    async with _client(settings, store) as client:
        ask, done = await client.get(url), await client.post(url)
        invalid = await client.get("/unsubscribe/nonsense")
        missing = await client.get("/nowhere")
    assert ask.status_code == done.status_code == 200
    for page in (ask, done):
        assert '<html lang="en">' in page.text
        assert not [p for p in german_phrases() if p in page.text]
    assert "Unsubscribe from this newsletter" in ask.text and ">Unsubscribe</button>" in ask.text
    assert f"no longer receive the newsletter “{newsletter.name}”" in done.text
    # Without a token naming a configured newsletter: the default locale, German.
    for page, title in ((invalid, "Link ungültig"), (missing, "Seite nicht gefunden")):
        assert '<html lang="de">' in page.text and title in page.text


_TOKENS = re.compile(r"[A-Za-z0-9_.-]{20,}")


def _german_in(text: str) -> list[str]:
    # Tokens (CSRF, links) are random letters: "KW" in one is no German.
    text = _TOKENS.sub("…", text)
    return sorted(p for p in german_phrases() if p in text)


async def test_reader_pages_and_confirmation_mail_speak_english(
    demo_settings: Settings, store: Store
) -> None:
    """Sign-up, confirmation mail, confirmation and preference centre of an en_GB newsletter.

    The consent statement is the newsletter's own text from the config, not a catalogue
    string: an English newsletter configures an English one.
    """
    [newsletter] = demo_settings.newsletters
    english = dataclasses.replace(
        newsletter,
        locale="en_GB",
        consent_text="I would like to receive this newsletter and can withdraw at any time.",
    )
    settings = dataclasses.replace(demo_settings, newsletters=(english,))
    signup_url = f"/subscribe/{english.id}"
    async with _client(settings, store) as client:
        form = await client.get(signup_url)
        refused = await client.post(signup_url, data={"csrf": csrf_of(form), "email": "x"})
        sent = await sign_up(client, "new.reader@example.org")
        [signup_id] = signup_ids(store)
        confirm_url = f"/confirm/{make_confirm_token(settings.secret_key, signup_id, english.id)}"
        ask = await client.get(confirm_url)
        done = await client.post(confirm_url, data={"csrf": csrf_of(ask)})
        signup = store.signup(signup_id)
        assert signup is not None and signup.subscriber_id is not None
        preferences = await client.get(
            preferences_url(settings, english.id, signup.subscriber_id).removeprefix(
                settings.public_url
            )
        )
        erase = await client.post(
            preferences.url, data={"csrf": csrf_of(preferences), "action": "erase"}
        )
        erased = await client.post(
            preferences.url, data={"csrf": csrf_of(erase), "action": "erase_confirmed"}
        )
        dead = await client.get(preferences.url)
    pages = {
        "sign-up": form,
        "sign-up refused": refused,
        "sign-up sent": sent,
        "confirm": ask,
        "confirmed": done,
        "preferences": preferences,
        "erase": erase,
        "erased": erased,
        "link after erasure": dead,
    }
    assert refused.status_code == 400
    for what, page in pages.items():
        assert page.status_code in (200, 400), what
        assert '<html lang="en">' in page.text, what
        assert not _german_in(page.text), (what, _german_in(page.text))
    assert "Please enter a valid email address." in refused.text
    assert ">Confirm subscription</button>" in ask.text
    assert "Your newsletter preferences" in preferences.text
    assert "Data erased" in erased.text and "Invalid link" in dead.text

    mail = confirmation_message(settings, english, signup, request_id="test", now=signup.created_at)
    parsed = email.message_from_bytes(mail.data, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    assert parsed["subject"] == f"Please confirm your subscription: {english.name}"
    for subtype in ("plain", "html"):
        part = parsed.get_body(preferencelist=(subtype,))
        assert part is not None
        body = part.get_content()
        assert "Hello," in body and "Legal notice" in body
        assert "Anna Beispiel" not in body  # the name waits for the confirmation
        # The Impressum values are German data from the config, as in the digest.
        for value in dataclasses.asdict(english.impressum).values():
            if isinstance(value, str) and value:
                body = body.replace(value, "")
        assert not _german_in(body), (subtype, _german_in(body))
    html = parsed.get_body(preferencelist=("html",))
    assert html is not None and '<html lang="en">' in html.get_content()
