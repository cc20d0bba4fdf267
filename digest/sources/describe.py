"""What an article page says about itself, and which of it makes a teaser.

A page offers several descriptions: ``<meta name="description">``, Open Graph, Twitter,
``itemprop="description"`` (of the article, not of a person), the ``description`` of its
JSON-LD Article, NewsArticle or WebPage nodes (never of a Person or an Organization), and
its main text as trafilatura extracts it, photo captions and credits left out.
:func:`describe_page` reads them all, in that order, as plain text: entities a site
escaped twice (``&amp;uuml;``) unescaped, markup, soft hyphens and zero-width spaces
dropped, a date (and time) it opens with ("06.11.2023, 11.41 Uhr : ") left out, points
on lines of their own made sentences. :func:`choose` takes the first one that holds up;
it rejects one that

- is the headline again (equal or nearly, or the headline with the site's name),
- is very short (under :data:`MIN_CHARS` characters or :data:`MIN_WORDS` words),
- is the site's tagline: it opens with the site's name and a dash or bar ("Recht am
  Bild - Informationen rund um ..."), or a label of the page's kind and date
  ("Fachmeldung vom 18.10.2021 aus dem Bereich Steuern");
- was cut by the site: it ends in "..." or "…", or mid-sentence ("findet am 14.",
  "… und die"), or a sentence breaks off after complete ones, or it is the start of a
  longer text of the page, cut inside a word or at a length;
- looks like an SEO template (:func:`seo_template`): check marks and arrows ("✓", "▶"),
  calls to action ("Jetzt lesen", "hier informieren", "mehr erfahren"), or title-like
  parts joined by " | ";
- is shared by several articles of the source in one run (a site's tagline), which the
  caller finds by comparing pages (:func:`text_key`).

Where the site cut a description that the main text carries, the main text gives the
teaser: from where the description opens, if that is the article's opening, else from
its start. Otherwise a cut description still gives its complete sentences, after every
uncut one. The main text loses the headline where it opens with it; in a description,
words a print layout hyphenated ("Erle-gungsprämie") are joined where the main text has
them whole.
"""

from __future__ import annotations

import difflib
import html
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from selectolax.lexbor import LexborHTMLParser, LexborNode

from digest.core.sentences import last_sentence_end
from digest.sources.listing import decode_html

__all__ = [
    "Described",
    "describe_page",
    "choose",
    "clean",
    "flaw",
    "seo_template",
    "site_cut",
    "text_key",
    "MIN_CHARS",
    "MIN_WORDS",
]

#: A description shorter than this many characters, or words, says too little.
MIN_CHARS = 40
MIN_WORDS = 5
#: Longest JSON-LD block read; larger ones are skipped.
_MAX_JSON_LD = 200_000
#: Longest description read, in characters; a page's main text is read up to its room.
_MAX_DESCRIPTION = 5_000
_META = (
    ("meta description", 'meta[name="description"]'),
    ("og:description", 'meta[property="og:description"]'),
    ("og:description", 'meta[name="og:description"]'),
    ("twitter:description", 'meta[name="twitter:description"]'),
    ("twitter:description", 'meta[property="twitter:description"]'),
)
_TITLES = (
    'meta[property="og:title"]',
    'meta[name="og:title"]',
    'meta[name="twitter:title"]',
    'meta[property="twitter:title"]',
)
#: The JSON-LD and microdata types whose description is the article's.
_ARTICLE_TYPES = frozenset(
    {
        "article",
        "newsarticle",
        "analysisnewsarticle",
        "backgroundnewsarticle",
        "opinionnewsarticle",
        "reportagenewsarticle",
        "reviewnewsarticle",
        "blogposting",
        "liveblogposting",
        "report",
        "techarticle",
        "scholarlyarticle",
        "webpage",
        "itempage",
    }
)
_ENTITY = re.compile(r"&(?:[A-Za-z][A-Za-z0-9]{1,31}|#[0-9]{1,7}|#[xX][0-9A-Fa-f]{1,6});")
# A line break a site escaped once too often: a backslash and "n" in the text.
_LITERAL_BREAK = re.compile(r"\\[nrt](?=\s|$)")
# Soft hyphens and zero-width spaces: invisible on the page, in the way in a teaser.
_HIDDEN = re.compile("[\u00ad\u200b-\u200d\u2060\ufeff]")
_TAG = re.compile(r"</?[A-Za-z][^<>]{0,500}>")
_WORD = re.compile(r"\w+")
_SENTENCE_END = (".", "!", "?", "…", '"', "“", "”", "»", "«", ")")
_TITLE_SEPARATORS = re.compile(r"\s+[|–—·:-]{1,2}\s+")
# Marks that SEO templates put in descriptions: arrows ("→", "▶"), symbols and dingbats
# ("☀", "★", "✓", "➤"), emoji.
_SEO_MARKS = re.compile(
    "[\u2190-\u21ff\u25b6-\u25c4\u2600-\u27bf\u2b00-\u2bff\U0001f300-\U0001faff]"
)
_CALL_TO_ACTION = re.compile(
    r"\b(?:jetzt|hier)\s+(?:\w+\s+){0,2}?(?:lesen|informieren|vergleichen|ansehen|entdecken|"
    r"bestellen|kaufen|sichern|testen|buchen|anmelden|herunterladen|downloaden|abonnieren|"
    r"erfahren|klicken|reinschauen)\b|\bmehr erfahren\b|\bread more\b|\bclick here\b",
    re.IGNORECASE,
)
# Where one sentence ends and the next begins, for telling a cut description: a word of
# three letters or more (not "z. B.", "Nr.", "Dr.") or a year, then a capital.
_SENTENCE_BREAK = re.compile(r"(?:[^\W\d_]{3,}|\d{4})[.!?][\"'“”»«)]*\s+(?=[\"„»«(]?[A-ZÄÖÜ])")
_CUT_MARK = re.compile(r"(?:\.\.\.|…|\[\s*(?:\.\.\.|…)\s*\])\s*$")
# "… findet am 14.": a day of the month after a preposition or article, and no month.
_DANGLING_ORDINAL = re.compile(
    r"\b(?:am|vom|zum|bis|ab|seit|dem|den|der|des|im|zur|bis zum|nr)\.?\s+\d{1,2}\.$",
    re.IGNORECASE,
)
# A date (and time) a site puts before the text: "06.11.2023, 11.41 Uhr : ", "06.11.23 - ".
_DATELINE = re.compile(
    r"^\d{1,2}\.\d{1,2}\.(?:\d{4}|\d{2})(?:,?\s+\d{1,2}[.:]\d{2}(?:\s+Uhr)?)?"
    r"(?:\s*[:|–—-])?\s+(?=[\"„»«(]?[A-ZÄÖÜ])"
)
# "Fachmeldung vom 18.10.2021 aus dem Bereich Steuern": the kind of page and its date.
_LABEL = re.compile(
    r"^[^\W\d_]+(?:\s+Nr\.\s*\d+)?\s+vom\s+\d{1,2}\.\s*(?:\d{1,2}\.|[^\W\d_]+)\s*\d{2,4}\b"
)
# A word a print layout hyphenated at the end of a line: "Erle-gungsprämie", "zahl-te".
_BROKEN_WORD = re.compile(r"(?<![\w-])([^\W\d_]+)-([a-zäöüß][^\W\d_]*)(?![\w-])")
#: Where in the main text a description the site cut may open and still be its lead.
_LEAD = 200
#: A description this long that is the start of a longer text of the page was cut there.
_CUT_LENGTH = 150
#: A name of the site is at most this long.
_SITE_NAME = 40
# Elements that hold a photo's caption or credit, by their class.
_CAPTION_CLASS = re.compile(
    r"caption|copyright|credit|bildunterschrift|bildnachweis|image-(?:alt|description)",
    re.IGNORECASE,
)
_CREDIT = re.compile(r"(?:©|\(c\)\s|Fotos?:|Bild(?:quelle)?:|Quelle:|Copyright\b)", re.IGNORECASE)
# A description that ends in one of these words (and no full stop) breaks off mid-sentence.
_DANGLING_WORD = re.compile(
    r"\b(?:und|oder|aber|der|die|das|den|dem|des|ein|eine|einen|einem|einer|eines|am|im|in|"
    r"mit|für|von|vom|zu|zum|zur|auf|an|bei|nach|über|unter|aus|durch|gegen|ohne|um|als|wie|"
    r"dass|sowie|sich|auch|noch|the|and|or|of|to|a|an|for|with|by|from|on|at)$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Described:
    """A page's headlines, its site's names and its teaser candidates (origin, text)."""

    titles: tuple[str, ...]
    sites: tuple[str, ...]
    candidates: tuple[tuple[str, str], ...]


def describe_page(data: bytes, content_type: str | None = None, room: int = 2_000) -> Described:
    """The candidates of an article page, best first; its main text up to ``room`` characters.

    The main text is extracted only where the descriptions leave a choice to make: fewer
    than two different ones that hold up on this page alone.
    """
    tree = LexborHTMLParser(decode_html(data, content_type))
    titles = _titles(tree)
    sites = _site_names(tree, titles)
    candidates: list[tuple[str, str]] = []
    for origin, selector in _META:
        for node in tree.css(selector):
            candidates.append((origin, node.attributes.get("content") or ""))
    for node in tree.css('[itemprop="description"]'):
        if _of_an_article(node):
            value = node.attributes.get("content") if node.tag == "meta" else _text(node)
            candidates.append(("itemprop", value or ""))
    for description in _json_ld_descriptions(tree):
        candidates.append(("JSON-LD", description))
    found: list[tuple[str, str]] = []
    for origin, value in candidates:
        cleaned = _without_dateline(clean(_points(value[:_MAX_DESCRIPTION])))
        if cleaned and all(cleaned != seen for _, seen in found):
            found.append((origin, cleaned))
    holding = {text_key(value) for _, value in found if flaw(value, titles, sites) is None}
    if len(holding) < 2 and (main := _main_text(tree, room)):
        found.append(("main text", main))
    return Described(titles, sites, tuple(found))


def choose(described: Described, shared: Iterable[str] = (), titles: Iterable[str] = ()) -> str:
    """The first candidate that holds up, else what stands in for one the site cut; or ''.

    ``shared`` holds the :func:`text_key` of texts other articles of the source carry too;
    ``titles`` are more headlines the article is known by (its feed's title).
    """
    shared = set(shared)
    headlines = described.titles + tuple(t for t in titles if t)
    texts = [value for _, value in described.candidates]
    main = next((v for o, v in described.candidates if o == "main text"), "")
    main = _without_headline(main, headlines) if text_key(main) not in shared else ""
    instead: str | None = None  # for a description the site cut; '' for the main text
    for origin, value in described.candidates:
        if text_key(value) in shared:
            continue
        if origin == "main text":  # cut to its room here, and no template
            if instead:
                return instead  # the rest of a cut description comes first
            short = len(main) < MIN_CHARS or len(text_key(main).split()) < MIN_WORDS
            return "" if short else main
        problem = flaw(value, headlines, described.sites)
        if problem is None and _cut_short(value, texts):
            problem = "cut by the site"
        if problem is None:
            return _mended(value, main)
        if problem == "cut by the site" and instead is None:
            instead = _instead_of_cut(value, main, headlines, described.sites)
    return instead or ""


def clean(value: str) -> str:
    """Plain text on one line: entities left escaped once more unescaped, tags dropped."""
    for _ in range(3):
        if not _ENTITY.search(value):
            break
        value = html.unescape(value)
    if "<" in value:
        value = _TAG.sub(" ", value)
    value = _LITERAL_BREAK.sub(" ", _HIDDEN.sub("", value))
    return " ".join(value.replace("\xa0", " ").split())


def text_key(value: str) -> str:
    """``value`` as compared across pages and with headlines: lower case, words only."""
    return " ".join(_WORD.findall(value.casefold()))


def flaw(value: str, titles: Iterable[str], sites: Iterable[str] = ()) -> str | None:
    """Why ``value`` makes no teaser for a page with these headlines; None if it does.

    ``sites`` are the names the site goes by.
    """
    key = text_key(value)
    if len(value) < MIN_CHARS or len(key.split()) < MIN_WORDS:
        return "too short"
    sites = [site for site in sites if text_key(site)]
    if any(key == text_key(site) for site in sites):
        return "the site's name"
    for title in titles:
        if _repeats(key, text_key(title)):
            return "the headline again"
    if _tagline(value, sites):
        return "the site's tagline"
    if site_cut(value):
        return "cut by the site"
    if seo_template(value):
        return "an SEO template"
    return None


def site_cut(value: str) -> bool:
    """Whether the site cut ``value`` short: "...", "…", or a sentence left unfinished."""
    value = value.rstrip()
    if _CUT_MARK.search(value) or _DANGLING_ORDINAL.search(value):
        return True
    if _DANGLING_WORD.search(value):
        return True
    # Complete sentences, then one that breaks off: a description cut at a length.
    ends = list(_SENTENCE_BREAK.finditer(value))
    tail = value[ends[-1].end() :] if ends else ""
    return len(tail.split()) >= 4 and not tail.endswith(_SENTENCE_END)


def seo_template(value: str) -> bool:
    """Whether ``value`` reads like an SEO template rather than a description.

    A small heuristic: a check mark, arrow, star or emoji; a call to action ("Jetzt
    lesen", "hier vergleichen", "mehr erfahren"); or parts joined by " | ", as in
    "X im Test | Unabhängiges und kritisches Testverfahren ✓ … ▶ Jetzt lesen".
    """
    return bool(_SEO_MARKS.search(value) or _CALL_TO_ACTION.search(value) or " | " in value)


def _repeats(key: str, title: str) -> bool:
    if not title:
        return False
    if key == title or key in title:
        return True
    if key.startswith(title) and len(key) - len(title) < 30:
        return True  # the headline and the site's name
    if min(len(key), len(title)) < 0.8 * max(len(key), len(title)):
        return False  # too different in length to be 90 % alike
    return difflib.SequenceMatcher(None, key, title).ratio() >= 0.9


def _tagline(value: str, sites: Iterable[str]) -> bool:
    """Whether ``value`` is a label or opens with the site's name and a dash or bar."""
    if _LABEL.match(value) and len(value.split()) <= 12:
        return True
    separator = _TITLE_SEPARATORS.search(value)
    if separator is None or separator.start() == 0:
        return False
    opening = text_key(value[: separator.start()])
    return any(
        separator.start() <= len(site) + 8 and f"{opening} ".startswith(f"{text_key(site)} ")
        for site in sites
    )


def _cut_short(value: str, texts: Iterable[str]) -> bool:
    """Whether ``value`` is the start of a longer text of the page, cut inside a word or
    at a length (and not at the end of a sentence)."""
    if value.endswith(_SENTENCE_END):
        return False
    return any(
        len(text) > len(value)
        and text.startswith(value)
        and (text[len(value)].isalnum() or len(value) >= _CUT_LENGTH)
        for text in texts
    )


def _instead_of_cut(
    value: str, main: str, headlines: tuple[str, ...], sites: tuple[str, ...]
) -> str | None:
    """What stands in for ``value``, a description the site cut: the main text from where
    it opens ('' for the main text from its start, where that comes first), or its
    complete sentences; None if neither holds up."""
    opening = _CUT_MARK.sub("", value).rstrip()
    start = main.find(opening[:MIN_CHARS]) if main else -1
    if start < 0 and main and 0 < (skip := opening.find(main[:MIN_CHARS])) <= _LEAD:
        opening, start = opening[skip:], 0  # it opens with a heading the main text has not
    if start > _LEAD:
        return ""  # the description is from further down: the article's opening is better
    if start >= 0:
        same = len(os.path.commonprefix([opening, main[start:]]))
        # The main text breaks off there too ("Rathaus... Gemeinsam"): the site's lead ends
        # in "...", which a teaser must not.
        goes_on = not main[start + same :].lstrip().startswith(("...", "…"))
        if same >= min(len(opening), 2 * MIN_CHARS) and goes_on:
            return main[start:]
    whole = _mended(_whole_sentences(value), main)
    return whole if whole and flaw(whole, headlines, sites) is None else None


def _whole_sentences(value: str) -> str:
    value = _CUT_MARK.sub("", value).rstrip()
    end = last_sentence_end(value, len(value), MIN_CHARS)
    return value[:end] if end is not None else ""


def _mended(value: str, main: str) -> str:
    """``value`` with words a print layout hyphenated joined, where ``main`` has them whole."""
    if not main or "-" not in value:
        return value

    def join(broken: re.Match[str]) -> str:
        whole = broken.group(1) + broken.group(2)
        found = re.search(rf"(?<!\w){re.escape(whole)}(?!\w)", main)
        return whole if found and broken.group(0) not in main else broken.group(0)

    return _BROKEN_WORD.sub(join, value)


def _points(value: str) -> str:
    """``value`` with lines that end in no full stop made sentences: points on lines of
    their own, or a short heading above the text.

    "… gegen den Klimawandel\nHohe Speicher- und Transportfähigkeit …" would read as one
    sentence once the line breaks are gone; so would "So bleibt man attraktiv\\n Das
    Zentrum lud ein." (a line break a site escaped once too often).
    """
    lines = [line.strip(" \t\xa0") for line in _LITERAL_BREAK.sub("\n", value).splitlines()]
    lines = [line for line in lines if line]
    if len(lines) < 2 or not all(line[0].isupper() for line in lines[1:]):
        return value
    ends = (*_SENTENCE_END, ":", ",", ";")
    unfinished = [not line.endswith(ends) and not _DANGLING_WORD.search(line) for line in lines]
    if all(unfinished) and lines[0][0].isupper():
        return " ".join(f"{line}." for line in lines)
    if unfinished[0] and len(lines[0].split()) <= 10 and not any(unfinished[1:]):
        return " ".join([f"{lines[0]}.", *lines[1:]])
    return value


def _without_dateline(value: str) -> str:
    return _DATELINE.sub("", value, count=1)


def _without_headline(value: str, headlines: tuple[str, ...]) -> str:
    """The main text without the headline it opens with (twice, as heading and in bold)."""
    longest_first = sorted((h for h in headlines if len(h) >= 10), key=len, reverse=True)
    for _ in range(3):
        opening = next((h for h in longest_first if value.casefold().startswith(h.casefold())), "")
        if not opening:
            break
        value = value[len(opening) :].lstrip(" .:–—-|")
    return value


def _titles(tree: LexborHTMLParser) -> tuple[str, ...]:
    titles = [_attribute(tree, selector) for selector in _TITLES]
    heading = tree.css_first("h1")
    titles.append(_text(heading) if heading is not None else "")
    title = tree.css_first("title")
    if title is not None and (whole := _text(title)):
        titles.append(whole)
        titles.extend(part for part in _TITLE_SEPARATORS.split(whole) if len(part) >= 20)
    titles.extend(_json_ld_values(tree, "headline"))
    return tuple(dict.fromkeys(clean(t) for t in titles if t and clean(t)))


def _site_names(tree: LexborHTMLParser, titles: tuple[str, ...]) -> tuple[str, ...]:
    """The names the site goes by: its og:site_name, the first and last parts of <title>."""
    names = [_attribute(tree, 'meta[property="og:site_name"]')]
    title = tree.css_first("title")
    parts = _TITLE_SEPARATORS.split(clean(_text(title))) if title is not None else []
    if len(parts) > 1:
        names += [parts[0], parts[-1]]
    return tuple(
        dict.fromkeys(
            name
            for name in names
            if 3 <= len(name) <= _SITE_NAME and len(name.split()) <= 5 and name not in titles
        )
    )


def _attribute(tree: LexborHTMLParser, selector: str) -> str:
    node = tree.css_first(selector)
    return clean(node.attributes.get("content") or "") if node is not None else ""


def _text(node: LexborNode) -> str:
    return " ".join((node.text(deep=True, separator=" ") or "").split())


def _of_an_article(node: LexborNode) -> bool:
    """Whether the microdata item ``node`` belongs to is an article (or the page)."""
    parent = node.parent
    while parent is not None:
        if "itemscope" in parent.attributes:
            kind = (parent.attributes.get("itemtype") or "").rstrip("/").rsplit("/", 1)[-1]
            return kind.casefold() in _ARTICLE_TYPES
        parent = parent.parent
    return True


def _json_ld_descriptions(tree: LexborHTMLParser) -> Iterator[str]:
    yield from _json_ld_values(tree, "description")


def _json_ld_values(tree: LexborHTMLParser, key: str) -> list[str]:
    """The ``key`` strings of the page's JSON-LD nodes of an article type."""
    found: list[str] = []
    for script in tree.css('script[type="application/ld+json"]'):
        raw = script.text(deep=True) or ""
        if len(raw) > _MAX_JSON_LD:
            continue
        try:
            document = json.loads(raw)
        except (ValueError, RecursionError):
            continue
        found.extend(_node_values(document, key))
    return found


def _node_values(value: Any, key: str, depth: int = 0) -> Iterator[str]:
    if depth > 6:
        return
    if isinstance(value, list):
        for entry in value:
            yield from _node_values(entry, key, depth + 1)
    elif isinstance(value, dict):
        if _is_article(value.get("@type")) and isinstance(value.get(key), str):
            yield value[key]
        for name, entry in value.items():
            if name != key and isinstance(entry, (dict, list)):
                yield from _node_values(entry, key, depth + 1)


def _is_article(kind: Any) -> bool:
    kinds = kind if isinstance(kind, list) else [kind]
    return any(
        isinstance(k, str) and re.split(r"[/:#]", k)[-1].casefold() in _ARTICLE_TYPES for k in kinds
    )


def _main_text(tree: LexborHTMLParser, room: int) -> str:
    """The page's main text up to about ``room`` characters, captions and credits left out.

    Changes ``tree``: the captions are taken out of it.
    """
    import trafilatura  # imported where used: it takes a third of a second to load

    _drop_captions(tree)
    main = trafilatura.extract(tree.html, include_comments=False, include_tables=False) or ""
    lines = [line for line in main.splitlines() if line.strip()]
    # Headings (the headline above all) are the lines that end in no punctuation.
    while len(lines) > 1 and not lines[0].rstrip().endswith((*_SENTENCE_END, ":")):
        lines.pop(0)
    return _without_dateline(clean(" ".join(lines)[: room + 200]))


def _drop_captions(tree: LexborHTMLParser) -> None:
    """Take photo captions and credits out of ``tree``: <figcaption>, elements whose class
    names a caption or credit, short ones that open with "©" or "Foto:"."""
    found = {
        node.mem_id: node
        for node in tree.css("figcaption, [class], p, span, em, small, cite, div")
        if node.tag == "figcaption"
        or (_CAPTION_CLASS.search(node.attributes.get("class") or "") and len(_text(node)) < 400)
        or (len(text := _text(node)) < 120 and _CREDIT.match(text))
    }
    for node in found.values():
        parent = node.parent
        while parent is not None and parent.mem_id not in found:
            parent = parent.parent
        if parent is None:  # not inside another one, which goes with it
            node.decompose()
