"""A sign-up's language: the confirmation mail, its pages and the subscriber it becomes.

A sign-up keeps the language of the page it was made on (the newsletter's: the sign-up
page speaks it); the confirmation mail goes out through the real queue and SMTP server.
"""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import replace
from datetime import timedelta
from email.message import EmailMessage

from digest.config import Settings
from digest.core.models import Subscriber
from digest.ops.mail_queue import send_due_mail
from digest.store import Store
from digest.store.signups import NewSignup
from digest.web.app import create_app
from tests.audience.test_signup import NL, _client, confirm, sign_up
from tests.smtp_server import RecordingServer

LINK = re.compile(r"http://127\.0\.0\.1:8000(/confirm/\S+)")


def _mail(data: bytes) -> tuple[EmailMessage, str, str]:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    text, html = (message.get_body(preferencelist=(kind,)) for kind in ("plain", "html"))
    assert text is not None and html is not None
    return message, text.get_content(), html.get_content()


async def test_the_confirmation_mail_and_its_pages_speak_the_sign_ups_language(
    demo_settings: Settings, store: Store
) -> None:
    # Made on an English page: the sign-up names en_GB, the newsletter is German.
    interval = timedelta(minutes=10)
    for address, locale in (("en@example.org", "en_GB"), ("xx@example.org", "xx_XX")):
        signup = NewSignup(NL, address, "", frozenset(), frozenset(), "Yes.", "1", locale=locale)
        assert store.add_signup(signup, interval=interval) is not None
    async with RecordingServer() as server:
        settings = replace(demo_settings, smtp=server.settings())
        assert await send_due_mail(store, settings) == 2
        mails = {rcpts[0]: _mail(data) for _, rcpts, data in server.messages}
        async with _client(create_app(settings, store), settings) as client:
            links = {address: LINK.search(text) for address, (_m, text, _h) in mails.items()}
            english_link, other_link = links["en@example.org"], links["xx@example.org"]
            assert english_link and other_link
            english_page = await client.get(english_link[1])
            confirmed = await confirm(client, english_link[1])
            german_page = await client.get(other_link[1])
    message, text, html = mails["en@example.org"]
    name = demo_settings.newsletter(NL).name
    assert message["Subject"] == f"Please confirm your subscription: {name}"
    assert '<html lang="en"' in html
    for part in (text, html):
        assert "Hello," in part and "Legal notice" in part and "Guten Tag" not in part
    # A stored value that is no locale: the newsletter's language, and the mail goes out.
    message, text, html = mails["xx@example.org"]
    assert message["Subject"].startswith("Bitte bestätigen Sie")
    assert '<html lang="de"' in html and "Guten Tag," in text
    assert '<html lang="en">' in english_page.text and "Confirm subscription" in english_page.text
    assert confirmed.status_code == 200 and '<html lang="en">' in confirmed.text
    assert '<html lang="de">' in german_page.text
    reader = store.subscriber_by_email("en@example.org")
    assert reader is not None and reader.locale == "en_GB"


async def test_a_sign_up_through_the_form_keeps_a_readers_own_locale(
    demo_settings: Settings, store: Store
) -> None:
    """The German page stores de_DE with the sign-up; a reader who has a locale of their
    own keeps it, one without gets the page's."""
    store.save_subscriber(Subscriber("own@example.org", locale="en_GB"), ["bayern"])
    store.save_subscriber(Subscriber("none@example.org"), ["bayern"])
    async with RecordingServer() as server:
        settings = replace(demo_settings, smtp=server.settings())
        async with _client(create_app(settings, store), settings) as client:
            for address in ("own@example.org", "none@example.org", "new@example.org"):
                await sign_up(client, address)
            assert await send_due_mail(store, settings) == 3
            for _, _rcpts, data in server.messages:
                _message, text, _html = _mail(data)
                link = LINK.search(text)
                assert link and "Guten Tag," in text  # the sign-up page's language
                assert (await confirm(client, link[1])).status_code == 200
    locales = {}
    for address in ("own@example.org", "none@example.org", "new@example.org"):
        reader = store.subscriber_by_email(address)
        assert reader is not None
        locales[address] = reader.locale
    assert locales == {
        "own@example.org": "en_GB",
        "none@example.org": "de_DE",
        "new@example.org": "de_DE",
    }
