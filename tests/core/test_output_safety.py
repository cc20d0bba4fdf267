"""Nothing a reader receives can run code: no script, event handler or script URL.

Two kinds of input go through the whole path (compose → render → personalize → the
message bytes): every article that feedparser's sanitizer test corpus yields, and
articles and recipients with hostile values put straight into their fields, as a store
written by something other than our sources could hold them.

The checks read the HTML part, the text part and the raw message bytes after
quoted-printable decoding. In HTML they parse the tags (attribute values with their
entities decoded) and also look at the raw tag text; URLs are normalised the way
browsers do (entities decoded, tabs and line breaks dropped) before their scheme is
checked.

Places that show a value as plain text (the text/plain part, the Subject and the To
name) show a hostile value verbatim, and that is right: nothing reads them as markup.
For hostile input those places are checked for one-line headers and script URLs only,
and every other byte of the message gets the full check.
"""

from __future__ import annotations

import dataclasses
import email
import email.policy
import html
import quopri
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path

import pytest

from digest.config import NewsletterSettings, Settings
from digest.core.errors import SourceError
from digest.core.models import Article, Image, Issue, Message, Recipient, Rule, Subscriber
from digest.issue.compose import compose_issue, iso_week_window
from digest.message.personalize import Personalizer
from digest.sources import parse_feed
from tests.sources.test_sources_feed import with_required_fields

ROOT = Path(__file__).resolve().parents[2]
SANITIZE_CASES = ROOT.parent / "shared" / "data" / "feedparser-tests" / "wellformed" / "sanitize"
WEEK = "2025-W05"
NOW = datetime(2025, 2, 3, 6, 0, tzinfo=UTC)
#: Articles per issue: enough to cover the corpus in a few messages, few enough that one
#: MJML document stays the size of a real (if long) digest.
PER_ISSUE = 50

#: The headers every message has, in order; anything else is an injected header.
HEADERS = [
    "Date",
    "From",
    "To",
    "Reply-To",
    "Subject",
    "Message-ID",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "X-Digest-Issue",
    "MIME-Version",
    "Content-Type",
]


def reader(name: str = "Petra Prüfung", email_address: str = "pruefung@example.org") -> Recipient:
    """A recipient who gets every article (one rule that lets everything through)."""
    subscriber = Subscriber(email=email_address, name=name, lists=frozenset({"allgemein"}), id=4711)
    return Recipient(subscriber, ("alle",), (Rule(),))


# --- what counts as dangerous ----------------------------------------------------------

_FORBIDDEN_TAGS = frozenset(
    {"script", "iframe", "frame", "frameset", "object", "embed", "applet", "form", "base"}
)
_RAW_NEEDLES = tuple(f"<{tag}" for tag in sorted(_FORBIDDEN_TAGS))
# The two the MJML boilerplate writes; "refresh" or "set-cookie" would be dangerous.
_HARMLESS_HTTP_EQUIV = frozenset({"content-type", "x-ua-compatible"})
_URL_ATTRIBUTES = frozenset(
    {
        "href",
        "src",
        "srcset",
        "action",
        "formaction",
        "background",
        "poster",
        "lowsrc",
        "dynsrc",
        "data",
        "codebase",
        "xlink:href",
    }
)
_SCRIPT_URL = re.compile(r"(?:java|vb|live)script:", re.IGNORECASE)
# What a browser drops inside a URL before it looks at the scheme.
_URL_NOISE = re.compile(r"[\x00-\x1f\x7f]")
_CSS_COMMENT = re.compile(r"/\*.*?\*/", re.DOTALL)
_CSS_ESCAPE = re.compile(r"\\([0-9a-fA-F]{1,6})\s?")
_CSS_DANGERS = ("expression(", "behavior:", "-moz-binding")
_TAG = re.compile(r"<[A-Za-z][^>]*>")
_QUOTED = re.compile(r"\"[^\"]*\"|'[^']*'")
_EVENT_HANDLER = re.compile(r"\son[a-z]+\s*=", re.IGNORECASE)
_META_HTTP_EQUIV = re.compile(r"<meta\b[^>]*\bhttp-equiv\s*=\s*[\"']?([\w-]*)", re.IGNORECASE)


def _deobfuscated(value: str) -> str:
    return _URL_NOISE.sub("", html.unescape(value))


def _css(value: str) -> str:
    text = _CSS_COMMENT.sub("", value)
    text = _CSS_ESCAPE.sub(lambda m: chr(min(int(m[1], 16), 0x10FFFF)), text)
    return "".join(text.split()).lower()


class _TagCheck(HTMLParser):
    """Walks the real tags of a document, with attribute values as a browser reads them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._in_style = tag == "style"
        if tag in _FORBIDDEN_TAGS:
            self.problems.append(f"<{tag}> element")
        for name, raw_value in attrs:
            value = raw_value or ""
            if name.startswith("on"):
                self.problems.append(f"event handler {name}={value!r} on <{tag}>")
            url = _URL_NOISE.sub("", value).strip().lower()
            if name in _URL_ATTRIBUTES and url.startswith(("javascript:", "vbscript:", "data:")):
                self.problems.append(f"{name}={value!r} on <{tag}>")
            if _SCRIPT_URL.search(_URL_NOISE.sub("", value)):
                self.problems.append(f"script URL in {name}={value!r} on <{tag}>")
            if name == "style" and any(d in _css(value) for d in _CSS_DANGERS):
                self.problems.append(f"style={value!r} on <{tag}>")
            harmless = value.strip().lower() in _HARMLESS_HTTP_EQUIV
            if tag == "meta" and name == "http-equiv" and not harmless:
                self.problems.append(f"<meta http-equiv={value!r}>")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        self._in_style = False

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style and any(d in _css(data) for d in _CSS_DANGERS):
            self.problems.append(f"<style> with {data.strip()[:80]!r}")


def _context(text: str, start: int, end: int) -> str:
    return repr(text[max(0, start - 60) : end + 60])


def markup_dangers(text: str) -> list[str]:
    """What in ``text`` (HTML, or anything a client might treat as HTML) could run code."""
    found = []
    lowered = text.lower()
    for needle in _RAW_NEEDLES:
        if (at := lowered.find(needle)) >= 0:
            found.append(f"{needle} in {_context(text, at, at + len(needle))}")
    for match in _META_HTTP_EQUIV.finditer(text):
        if match[1].lower() not in _HARMLESS_HTTP_EQUIV:
            found.append(f"<meta http-equiv> in {_context(text, match.start(), match.end())}")
    for tag in _TAG.finditer(text):
        names_only = _QUOTED.sub('""', tag[0])  # attribute names, not their quoted values
        if _EVENT_HANDLER.search(names_only):
            found.append(f"event handler in {tag[0][:160]!r}")
    found += url_dangers(text)
    check = _TagCheck()
    check.feed(text)
    check.close()
    return found + check.problems


def url_dangers(text: str) -> list[str]:
    """Script URLs in ``text``, also entity-encoded or split by tabs and line breaks."""
    plain = _deobfuscated(text)
    return [f"{m[0]} in {_context(plain, m.start(), m.end())}" for m in _SCRIPT_URL.finditer(plain)]


def test_the_checks_catch_what_they_should() -> None:
    dangerous = [
        "<SCRIPT>alert(1)</SCRIPT>",
        '<p onclick="x()">x</p>',
        "<img src=x ONERROR=alert(1)>",
        '<a href="java&#x09;script:alert(1)">x</a>',
        '<a href="&#106;avascript:alert(1)">x</a>',
        '<a href=" vbscript:msgbox(1)">x</a>',
        '<a href="data:text/html;base64,PHNjcmlwdD4=">x</a>',
        '<img src="DATA:image/svg+xml,x">',
        '<meta http-equiv="refresh" content="0;url=https://evil.example/">',
        '<p style="width: expr/**/ession(alert(1))">x</p>',
        '<p style="width: expr\\65ssion(alert(1))">x</p>',
        "<style>p { behavior: url(x.htc) }</style>",
        "<iframe src=https://evil.example/>",
        '<form action="https://evil.example/"><input></form>',
        "<object data=x></object>",
    ]
    for text in dangerous:
        assert markup_dangers(text), text
    harmless = [
        "<p>onclick= ist nur Text, &lt;script&gt; auch</p>",
        '<img alt="&#34; onerror=&#34;alert(1)" src="https://example.org/i.png">',
        '<a href="https://example.org/?q=%22%20onmouseover%3D">Skripte: eine Einführung</a>',
        '<meta http-equiv="Content-Type" content="text/html; charset=UTF-8">',
        "<p>Java Script: ein Vortrag</p>",
    ]
    for text in harmless:
        assert not markup_dangers(text), (text, markup_dangers(text))


# --- the path from articles to message bytes -------------------------------------------


@dataclasses.dataclass
class Delivered:
    issue: Issue
    message: Message
    parsed: EmailMessage
    text: str
    html: str


def deliver(
    settings: Settings,
    newsletter: NewsletterSettings,
    articles: list[Article],
    recipient: Recipient,
    message_id: str,
) -> Delivered:
    """The message ``recipient`` gets for an issue of exactly ``articles``."""
    key, start, end = iso_week_window(WEEK, newsletter.zone, NOW)
    issue = compose_issue(
        newsletter, articles, key=key, window_start=start, window_end=end, now=NOW
    )
    assert len(issue.articles) == len(articles)  # every article is really rendered
    personalizer = Personalizer(settings, newsletter, issue, NOW)
    variant = personalizer.variant_for(recipient)
    assert variant is not None
    message = personalizer.message_for(recipient, variant, message_id=message_id)
    parsed = email.message_from_bytes(message.data, policy=email.policy.strict)
    assert isinstance(parsed, EmailMessage)
    assert not any(part.defects for part in parsed.walk()), message_id
    assert list(parsed.keys()) == HEADERS, message_id
    head = message.data.partition(b"\r\n\r\n")[0]
    for line in head.split(b"\r\n"):  # a header of its own, or the folded rest of one
        # a new header ("Name: value", or "Name:" folded at once) or a continuation line
        assert re.match(rb"[A-Za-z-]+:( |$)|[ \t]", line), line
    assert [p.get_content_type() for p in parsed.iter_parts()] == ["text/plain", "text/html"]
    assert not parsed.preamble and not (parsed.epilogue or "").strip()
    text_part, html_part = parsed.iter_parts()
    text, markup = text_part.get_content(), html_part.get_content()
    assert isinstance(text, str) and isinstance(markup, str)
    return Delivered(variant.issue, message, parsed, text, markup)


def message_dangers(delivered: Delivered, *, plain_text_verbatim: bool = False) -> list[str]:
    """Every problem in the HTML part, the text part and the decoded message bytes.

    With ``plain_text_verbatim`` the places that show values as plain text (text/plain
    part, Subject, To) are checked for script URLs only; see the module docstring.
    """
    found = [f"html part: {p}" for p in markup_dangers(delivered.html)]
    text_check = url_dangers if plain_text_verbatim else markup_dangers
    found += [f"text part: {p}" for p in text_check(delivered.text)]
    for name, value in delivered.parsed.items():
        if "\r" in value or "\n" in value:
            found.append(f"header {name} spans lines: {value!r}")
        if name in ("Subject", "To"):
            found += [f"{name}: {p}" for p in text_check(value)]

    raw = quopri.decodestring(delivered.message.data).decode("utf-8")
    head, separator, body = raw.partition("\r\n\r\n")
    assert separator
    if plain_text_verbatim:
        assert body.count(delivered.text) == 1
        body = body.replace(delivered.text, "")
        head = "\r\n".join(_without_headers(head.split("\r\n"), ("subject", "to")))
    found += [f"raw bytes: {p}" for p in markup_dangers(head + separator + body)]
    return found


def _without_headers(lines: list[str], names: tuple[str, ...]) -> Iterator[str]:
    """The header lines, without those (folded lines included) of the headers named."""
    dropping = False
    for line in lines:
        if not line[:1].isspace():
            dropping = line.partition(":")[0].strip().lower() in names
        if not dropping:
            yield line


# --- feedparser's sanitizer corpus ---------------------------------------------------------


def corpus_articles(newsletter: NewsletterSettings) -> Iterator[tuple[str, Article]]:
    """Every article the sanitize cases yield, as they are and with filler fields added.

    Many cases have entries without a link or date, which would be skipped unseen; the
    filler variant gives them one (their own elements come later and win).
    """
    source = newsletter.sources[0]
    for path in sorted(p for p in SANITIZE_CASES.rglob("*") if p.is_file()):
        data = path.read_bytes()
        for variant in (data, with_required_fields(data)):
            try:
                articles = parse_feed(variant, source, newsletter)
            except SourceError:
                continue
            for article in articles:
                yield path.name, article


@pytest.mark.skipif(
    not SANITIZE_CASES.is_dir(),
    reason=f"feedparser's sanitize test cases not found at {SANITIZE_CASES}",
)
def test_sanitize_corpus_renders_nothing_executable(demo_settings: Settings) -> None:
    newsletter = dataclasses.replace(demo_settings.newsletters[0], max_per_category=10**6)
    found = list(corpus_articles(newsletter))
    assert len(found) > 500  # most cases really produced an article to check
    _key, start, _end = iso_week_window(WEEK, newsletter.zone, NOW)
    categories = [c.key for c in newsletter.categories]
    # One window, distinct uids (the filler variants share one), every category in use.
    articles = [
        dataclasses.replace(
            article,
            uid=f"{n}:{article.uid}",
            published=start + timedelta(minutes=n + 1),
            updated=None,
            category=categories[n % len(categories)],
        )
        for n, (_name, article) in enumerate(found)
    ]
    failures = []
    for first in range(0, len(articles), PER_ISSUE):
        chunk = articles[first : first + PER_ISSUE]
        delivered = deliver(demo_settings, newsletter, chunk, reader(), f"safety.{first}")
        if problems := message_dangers(delivered):
            cases = sorted({name for name, _ in found[first : first + PER_ISSUE]})
            failures.append(f"articles {first}+ (from {', '.join(cases)}): {problems}")
    assert failures == []


# --- hostile values put straight into the fields ---------------------------------------------

HOSTILE_SCRIPT = '"><script>alert(1)</script>'
HEADER_INJECTION = "\r\nBcc: x@example.org"
# Plain ASCII that the email package would decode to CR LF when the header is set.
ENCODED_INJECTION = "Titel =?utf-8?q?=0D=0ABcc:_x@example.org?= Ende"
SCRIPT_URLS = [
    "javascript:alert(1)",
    " JaVaScRiPt:alert(1)",
    "java\tscript:alert(1)",
    "&#106;avascript:alert(1)",
    "vbscript:msgbox(1)",
    "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
]
IMAGE = "https://kommune-digital.example/bilder/foto.jpg"

HOSTILE: dict[str, dict[str, object]] = {
    "title with a script": {"title": HOSTILE_SCRIPT},
    "title with a header": {"title": "Ein Titel" + HEADER_INJECTION},
    "title with a header after LF": {"title": "Ein Titel\nBcc: x@example.org\n\n<script>"},
    "title with Unicode line breaks": {"title": "Ein Titel\u2028Bcc: x@example.org\u0085"},
    "title with an encoded line break": {"title": ENCODED_INJECTION},
    "link with a quote": {"link": 'https://example.org/a" onmouseover="alert(1)'},
    "image URL with a quote": {"image": Image(IMAGE + '" onerror="alert(1)', "Foto")},
    "alt with a handler": {"image": Image(IMAGE, '" onerror="alert(1)')},
    "alt with a tag": {"image": Image(IMAGE, "<img src=x onerror=alert(1)>")},
    "label with HTML": {"label": "<img src=x onerror=alert(1)>"},
    "label with a header": {"label": "Interview" + HEADER_INJECTION},
    "author with newlines": {"author": "Eve" + HEADER_INJECTION + "\r\n\r\n<script>"},
    "summary with markup": {
        "summary": "<p onclick=alert(1)>Text</p><script>alert(2)</script>"
        "&lt;script&gt;alert(3)&lt;/script&gt;<img src=x onerror=alert(4)>"
    },
    "content with markup": {"content": '<a href="javascript:alert(1)">Text</a><style>x{}</style>'},
    **{f"link {url!r}": {"link": url} for url in SCRIPT_URLS},
    **{f"image URL {url!r}": {"image": Image(url, "Foto")} for url in SCRIPT_URLS},
}


def hostile_article(start: datetime, **fields: object) -> Article:
    values: dict[str, object] = {
        "uid": "hostile-1",
        "source": "Unbekannt",
        "title": "Ein gewöhnlicher Titel",
        "link": "https://kommune-digital.example/meldung/1",
        "published": start + timedelta(days=1),
        "category": "politik",
        "summary": "<p>Ein gewöhnlicher Teaser.</p>",
        **fields,
    }
    return Article(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize("fields", HOSTILE.values(), ids=list(HOSTILE))
def test_hostile_article_fields_stay_inert(
    demo_settings: Settings, fields: dict[str, object]
) -> None:
    newsletter = demo_settings.newsletters[0]
    _key, start, _end = iso_week_window(WEEK, newsletter.zone, NOW)
    # The hostile article alone: its title is the subject's top_title.
    article = hostile_article(start, **fields)
    delivered = deliver(demo_settings, newsletter, [article], reader(), "safety.hostile")
    assert message_dangers(delivered, plain_text_verbatim=True) == []
    assert delivered.parsed["Subject"] == delivered.issue.subject  # one line, as composed
    assert "Bcc" not in delivered.parsed
    if str(fields.get("link", "https:")).startswith("https:"):
        assert "mehr…: https://" in delivered.text
    else:  # a link that is no web address becomes "#", never the value itself
        assert "mehr…: #" in delivered.text and 'href="#"' in delivered.html


@pytest.mark.parametrize(
    "name",
    [
        HOSTILE_SCRIPT,
        "Eve" + HEADER_INJECTION,
        "<img src=x onerror=alert(1)>\nX-Evil: 1",
        "Eve " + ENCODED_INJECTION,
    ],
)
def test_hostile_recipient_name_stays_inert(demo_settings: Settings, name: str) -> None:
    newsletter = demo_settings.newsletters[0]
    _key, start, _end = iso_week_window(WEEK, newsletter.zone, NOW)
    delivered = deliver(
        demo_settings, newsletter, [hostile_article(start)], reader(name=name), "safety.name"
    )
    assert message_dangers(delivered, plain_text_verbatim=True) == []
    [to] = delivered.parsed["To"].addresses
    assert to.addr_spec == "pruefung@example.org"
    # "=?" is taken apart so the email package cannot decode it as an encoded word
    assert to.display_name == " ".join(name.split()).replace("=?", "= ?")
