"""Propose CSS selectors for the items of a listing page, or say why there are none.

The items are the page's most repeated element that holds a link and a date. Elements
are grouped by tag and class, one class at a time, leaving out class names with digits
(WordPress's ``post-6195``), so the items of one list are one group; an element without
such a class is grouped under its parent's class (``ul.news > li``); a bare ``div`` or
``a`` is never proposed. Nothing counts that lies in the page's header, footer,
navigation, sidebars, comments or cookie banner. Of elements nested in each other the
outer one is the item, and a wrapper around several items is none; a group counts its
distinct links, so the parts of one article (picture, headline, "mehr…") are not three.

The parts follow from a few items: a headline that is not a date; a teaser that is not
the headline again, nor the byline ("entry-meta") or a date alone; the date (a class
naming it, also inside a word: "newsdatum"); a label that is a word, not the day of the
month ("tag" is German for day), and its link where words lead in to it ("Veröffentlicht
unter Allgemein"); a picture that is not the author's nor a smiley; read-more links
("weiter…", "Mehr erfahren", "Read more") go into ``exclude``, and are the link where the
headline has none. The next page is the ``rel="next"`` link, else a link whose words
(whole words) say so, outside items and consent banners. A single article gets no
proposal (its lists are related posts, not the site's news): a page that says so
(``og:type``, not on a home page), or whose main text outweighs the dated items.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from selectolax.lexbor import LexborHTMLParser, LexborNode

from digest.config import SelectorSettings
from digest.sources.dates import find_date
from digest.sources.listing import first_link, is_read_more

__all__ = ["Proposal", "propose"]

#: Fewer repetitions than this are no list of news.
MIN_ITEMS = 3
#: Paragraph text of one element that makes an article (characters), and the share of
#: the items' text that one item holding it has where the items are one article's wrappers.
_ARTICLE_TEXT = 500
_ONE_ITEM_SHARE = 0.6
_UTC = ZoneInfo("UTC")
_CSS_IDENT = re.compile(r"-?[_a-zA-Z][_a-zA-Z0-9-]*")
_NEVER_ITEMS = re.compile(
    r"html|head|body|main|script|style|noscript|template|svg|a|span|p|img|br|time|strong|em|"
    r"b|i|u|small|ul|ol|dl|picture|source|figure|figcaption|button|label|input|form|select|"
    r"h[1-6]|header|footer|nav|aside"
)
#: Elements whose content is no listing: by tag, and by the first word of a class or id.
_OUTSIDE_TAGS = frozenset({"header", "footer", "nav", "aside"})
_OUTSIDE_WORDS = re.compile(
    r"cookies?|consent|cmp|gdpr|dsgvo|privacy|comments?|kommentare?|sidebar|widget|related|"
    r"breadcrumbs?|pagination|pager|share|social|menu"
)
_TITLE_WORDS = re.compile(r"^(?:title|titel|headline|heading|ueberschrift|überschrift)$")
_TEASER_WORDS = re.compile(
    r"(?:teaser|excerpt|summary|intro|lead|abstract|desc|description|text|content|"
    r"vorspann|anriss|entry)$"
)
# Words of a class that names the byline or the date line: no teaser ("entry-meta").
_BYLINE_WORDS = re.compile(r"meta|metainfo|byline|author|autor|posted|postmeta|info|dateline")
_LABEL_WORDS = re.compile(
    r"^(?:label|kicker|dachzeile|topline|overline|eyebrow|rubrik|ressort|category|"
    r"categories|kategorie|kategorien|kat|cat|badge|tag|tags)$"
)
_DATE_WORDS = re.compile(r"date|datum|time|zeit|day|tag|monat|month|jahr|year", re.IGNORECASE)
# Words of a class that name a date or a part of one (not "tag": a label in English).
_DATE_PART = re.compile(r"dates?|datum|time|zeit|days?|monat|month|jahr|year|weekday|wochentag")
_WEEKDAYS = re.compile(
    r"montag|dienstag|mittwoch|donnerstag|freitag|samstag|sonnabend|sonntag|mo|di|mi|do|fr|sa|"
    r"so|monday|tuesday|wednesday|thursday|friday|saturday|sunday|mon|tue|wed|thu|fri|sat|sun"
)
# An author's picture, a smiley or an emoji: no picture of the item.
_DECOR = re.compile(r"avatar|smil(?:ey|ies)|emoji", re.IGNORECASE)
_NEXT_WORDS = re.compile(
    r"^(?:»|›|>|→)$|\b(?:weiter|nächste|nächster|nächstes|ältere|älter|next|older|vorwärts)\b",
    re.IGNORECASE,
)
_PAGINATION = re.compile(r"pagination|pager|page-numbers|nav-links|paging|blaettern|seiten")
_CONSENT = re.compile(r"cookie|consent|cmp|gdpr|dsgvo|privacy|datenschutz", re.IGNORECASE)


@dataclass(frozen=True)
class Proposal:
    """Selectors for a page's items; or, without them, why there are none."""

    selectors: SelectorSettings | None
    note: str = ""


def propose(tree: LexborHTMLParser, page_url: str = "") -> Proposal:
    """Selectors for the page's repeated dated items, or a note on what the page holds.

    A site's home page (``page_url`` without a path) is never one article, whatever its
    ``og:type`` says (some sites put "article" on every page).
    """
    for hidden in tree.css("script, style, noscript, template"):
        hidden.decompose()
    if tree.body is None:
        return Proposal(None, "the page has no body")
    if urlsplit(page_url).path.strip("/") and _one_article(tree):
        # Its related posts, "more from the site" boxes and comments are lists, but
        # not the site's news; the news are on its home or section pages.
        return Proposal(
            None,
            'the page is one article (og:type "article"), no list of news; nothing '
            "proposed: try the site's home page or news section",
        )
    page = _Page(tree)
    found = page.best(need_date=True)
    if found is None:
        undated = page.best(need_date=False)
        if undated is None:
            return Proposal(
                None, "no repeated dated items on the page, nor repeated items with links"
            )
        n, selector = len(undated[1]), undated[0]
        return Proposal(
            None,
            f"no repeated dated items on the page: {n} items without dates ({selector}); "
            "nothing proposed",
        )
    item, items = found
    if (article := _article_length(tree, items)) is not None:
        return Proposal(
            None,
            f"no list of news on the page: its main text is one article ({article:,} "
            f"characters) beside {len(items)} dated items ({item}); nothing proposed",
        )
    return Proposal(page.parts(item, items[:5]))


def _article_length(tree: LexborHTMLParser, items: list[LexborNode]) -> int | None:
    """The length of the page's main text where it is one article, not the items': the
    element with the most paragraph text lies outside the items and holds more text than
    all of them (an article with a box of related posts), or it lies in one item that
    holds most of the items' text (an article in a wrapper that repeats for the sidebar).
    """
    paragraphs: Counter[int] = Counter()
    holders: dict[int, LexborNode] = {}
    for p in tree.css("p"):
        if (parent := p.parent) is not None:
            paragraphs[parent.mem_id] += len(_text(p))
            holders[parent.mem_id] = parent
    if not paragraphs:
        return None
    key, size = paragraphs.most_common(1)[0]
    if size < _ARTICLE_TEXT:
        return None
    lengths = {n.mem_id: len(_text(n)) for n in items}
    total = sum(lengths.values())
    main = holders[key]
    holder = next((a for a in [main, *_ancestors(main)] if a.mem_id in lengths), None)
    if holder is None:
        return size if size >= total else None
    return size if lengths[holder.mem_id] >= _ONE_ITEM_SHARE * total else None


def _one_article(tree: LexborHTMLParser) -> bool:
    """Whether the page says it is one article (Open Graph's ``og:type``)."""
    for meta in tree.css('meta[property="og:type"], meta[name="og:type"]'):
        if (meta.attributes.get("content") or "").strip().casefold() == "article":
            return True
    return False


class _Page:
    def __init__(self, tree: LexborHTMLParser) -> None:
        self.tree = tree
        self.outside: dict[int, bool] = {}

    def best(self, *, need_date: bool) -> tuple[str, list[LexborNode]] | None:
        """The selector whose items score highest, with its items.

        Of selectors that score alike, the one whose items hold the others' wins: the
        whole item with its picture, not its text box.
        """
        scored = []
        for selector, count in self.groups().items():
            if count >= MIN_ITEMS and (found := self.score(selector, need_date)) is not None:
                scored.append((found[0], selector, found[1]))
        if not scored:
            return None
        top = max(score for score, _, _ in scored)
        alike = [entry for entry in scored if entry[0] >= 0.98 * top]
        _, selector, items = min(alike, key=lambda entry: len(_ancestors(entry[2][0])))
        return selector, items

    def groups(self) -> Counter[str]:
        groups: Counter[str] = Counter()
        body = self.tree.body
        assert body is not None
        for node in body.traverse(include_text=False):
            tag = node.tag or ""
            if _NEVER_ITEMS.fullmatch(tag) or tag.startswith(("-", "#")) or self.is_outside(node):
                continue
            classes = _classes(node)
            groups.update(f"{tag}.{c}" for c in classes)
            if tag == "article":
                groups[tag] += 1
            parent = node.parent
            if not classes and parent is not None and (parent_classes := _classes(parent)):
                groups[f"{parent.tag}.{parent_classes[0]} > {tag}"] += 1
        return groups

    def score(self, selector: str, need_date: bool) -> tuple[float, list[LexborNode]] | None:
        nodes = self.tree.css(selector)
        inside = [n for n in nodes if not self.is_outside(n)]
        outermost = _outermost(inside)
        wrappers = len(inside) - len(outermost)  # nested in one another: no strangers
        items = [n for n in outermost if _main_link(n)]
        if need_date:
            items = [n for n in items if _has_date(n)]
        links = {_main_link(n) for n in items}
        if len(links) < MIN_ITEMS:
            return None
        # Many items, each its own link, nearly all the selector finds; a class to tell
        # them apart; and text enough to be news.
        score = len(links) * len(links) / (len(nodes) - wrappers) * (2 if "." in selector else 1)
        score *= 1 + min(3.0, min(len(_text(n)) for n in items[:5]) / 200)
        return score, items

    def is_outside(self, node: LexborNode) -> bool:
        """Whether ``node`` lies in a header, footer, navigation, sidebar, comments, banner."""
        chain: list[LexborNode] = []
        current: LexborNode | None = node
        while current is not None and current.tag not in ("html", None):
            if current.mem_id in self.outside:
                break
            chain.append(current)
            current = current.parent
        outside = current is not None and self.outside.get(current.mem_id, False)
        for element in reversed(chain):
            outside = outside or _outside_itself(element)
            self.outside[element.mem_id] = outside
        return self.outside.get(node.mem_id, False)

    def parts(self, item: str, sample: list[LexborNode]) -> SelectorSettings:
        date = _date_selector(sample)
        title = _title_selector(sample)
        more = _read_more_selector(sample)
        return SelectorSettings(
            item=item,
            title=title,
            link=_link_selector(sample, title),
            date=date,
            exclude=", ".join(s for s in (date, more) if s),
            teaser=_teaser_selector(sample, title, date),
            image=_image_selector(sample),
            label=_label_selector(sample, title, date),
            next=self.next_selector(item),
        )

    def next_selector(self, item: str) -> str:
        tree = self.tree
        if tree.css_first('a[rel~="next"][href]') is not None:
            return 'a[rel~="next"]'
        items = {n.mem_id for n in tree.css(item)}
        found: list[tuple[bool, str]] = []
        for link in tree.css("a[href]"):
            text = _text(link)
            if not _NEXT_WORDS.search(text):
                continue
            if _CONSENT.search(f"{text} {link.attributes.get('href')}"):
                continue
            ancestors = list(_ancestors(link))
            if any(a.mem_id in items for a in ancestors) or any(
                _CONSENT.search(f"{a.attributes.get('class')} {a.attributes.get('id')}")
                for a in ancestors
            ):
                continue
            in_pagination = any(
                _PAGINATION.search(a.attributes.get("class") or "") for a in ancestors
            )
            if selector := _next_link_selector(tree, link):
                found.append((in_pagination, selector))
        found.sort(key=lambda f: not f[0])  # links in a pagination first
        return found[0][1] if found else ""


def _next_link_selector(tree: LexborHTMLParser, link: LexborNode) -> str:
    """A selector whose first match leads where ``link`` does: by the link's class, else
    by its parent's (and its place among the parent's links, counted from the end, where
    it is not the first: "1 2 3 » Letzte »")."""
    href = _href(link)
    for holder in (link, link.parent):
        if holder is None or not (classes := _classes(holder)):
            continue
        selector = f"{holder.tag}.{classes[0]}"
        if holder is not link and (first := first_link(holder)) and first.mem_id != link.mem_id:
            siblings = [a for a in holder.iter(include_text=False) if a.tag == "a"]
            if link.mem_id not in [a.mem_id for a in siblings]:
                continue
            from_end = len(siblings) - [a.mem_id for a in siblings].index(link.mem_id)
            selector += f" a:nth-last-of-type({from_end})"
        # One link; or the same pager above and below the list.
        if {_href(n) for n in tree.css(selector)} == {href}:
            return selector
    return ""


def _href(node: LexborNode) -> str:
    link = first_link(node)
    return (link.attributes.get("href") or "").strip() if link is not None else ""


def _outside_itself(node: LexborNode) -> bool:
    if node.tag in _OUTSIDE_TAGS:
        return True
    names = (node.attributes.get("class") or "").split() + (node.attributes.get("id") or "").split()
    return any(_words(name)[:1] and _OUTSIDE_WORDS.fullmatch(_words(name)[0]) for name in names)


def _classes(node: LexborNode) -> list[str]:
    """The class names of ``node`` that are CSS identifiers without digits."""
    return [
        c
        for c in (node.attributes.get("class") or "").split()
        if _CSS_IDENT.fullmatch(c) and not any(ch.isdigit() for ch in c)
    ]


def _words(name: str) -> list[str]:
    return [w for w in re.split(r"[-_]+", name.casefold()) if w]


def _ancestors(node: LexborNode) -> list[LexborNode]:
    found = []
    parent = node.parent
    while parent is not None and parent.tag not in ("html", None):
        found.append(parent)
        parent = parent.parent
    return found


def _outermost(nodes: list[LexborNode]) -> list[LexborNode]:
    """``nodes`` without those inside another, nor wrappers holding two or more."""
    ids = {n.mem_id for n in nodes}
    holders = {n.mem_id: [a.mem_id for a in _ancestors(n) if a.mem_id in ids] for n in nodes}
    inner: Counter[int] = Counter(h for found in holders.values() for h in found)
    wrappers = {key for key, n in inner.items() if n >= 2}  # their items are the items
    return [
        n
        for n in nodes
        if n.mem_id not in wrappers and all(h in wrappers for h in holders[n.mem_id])
    ]


def _text(node: LexborNode | None) -> str:
    if node is None:
        return ""
    return " ".join((node.text(deep=True, separator=" ") or "").split())


def _main_link(node: LexborNode) -> str:
    """The item's article link: its first link with words, else its first link."""
    link = _main_link_node(node)
    return _href(link) if link is not None else ""


def _main_link_node(node: LexborNode) -> LexborNode | None:
    first = None
    for link in node.css("a[href]") if node.tag != "a" else [node]:
        if not _is_page_link(_href(link)):
            continue
        if len(_text(link)) >= 10 and not is_read_more(link):
            return link
        first = first or link
    return first


def _is_page_link(href: str) -> bool:
    return bool(href) and not href.startswith(("#", "javascript:", "mailto:", "tel:"))


def _link_selector(sample: list[LexborNode], title: str) -> str:
    """A selector for the article link where the headline has none and the item's first
    link is another one (a label's ``href="#"``): the "Mehr erfahren" link, say."""
    for item in sample:
        title_node = item.css_first(title) if title else None
        if title_node is not None and _is_page_link(_href(title_node)):
            return ""
        main, first = _main_link_node(item), first_link(item)
        if main is None or first is None or _href(first) == _href(main):
            return ""
    main = _main_link_node(sample[0])
    classes = _classes(main) if main is not None else []
    return f"a.{classes[0]}" if classes else ""


def _has_date(node: LexborNode) -> bool:
    if node.css_first("time[datetime]") is not None:
        return True
    return find_date(_text(node), _UTC) is not None


def _common(sample: list[LexborNode], candidates: list[str], share: float = 1.0) -> str:
    """The first candidate that finds text (or an image) in ``share`` of the items."""
    for candidate in dict.fromkeys(candidates):
        hits = sum(
            (n := s.css_first(candidate)) is not None and (n.tag == "img" or bool(_text(n)))
            for s in sample
        )
        if hits and hits >= share * len(sample):
            return candidate
    return ""


def _classed(
    sample: list[LexborNode],
    tag: str,
    words: re.Pattern[str] | None = None,
    *,
    anywhere: bool = False,
) -> list[str]:
    """Class selectors of ``tag`` elements in the items (a word of the class matching).

    With ``anywhere``, the word may be part of a longer one ("newsdatum").
    """
    found = []
    for item in sample:
        for node in item.css(tag):
            for name in _classes(node):
                matches = (words.search if anywhere else words.match) if words else None
                if matches is None or any(matches(w) for w in _words(name)):
                    found.append(f"{node.tag}.{name}")
    return list(dict.fromkeys(found))


def _date_selector(sample: list[LexborNode]) -> str:
    if _common(sample, ["time[datetime]"]):
        return "time[datetime]"
    for candidate in _classed(sample, "*", _DATE_WORDS, anywhere=True):
        if all(
            (n := s.css_first(candidate)) is not None and find_date(_text(n), _UTC) for s in sample
        ):
            return candidate
    return ""


def _image_selector(sample: list[LexborNode]) -> str:
    """``img`` where half the items have a picture: not the author's, nor a smiley."""
    decor = {
        classes[0]
        for item in sample
        for img in item.css("img")
        if _is_decor(img) and (classes := _classes(img))
    }
    selector = "img" + "".join(f":not(.{name})" for name in sorted(decor))
    pictures = [n for s in sample if (n := s.css_first(selector)) is not None]
    if len(pictures) < len(sample) / 2 or any(_is_decor(n) for n in pictures):
        return ""
    return selector


def _is_decor(img: LexborNode) -> bool:
    """An author's picture, a smiley or an icon, by its class or address (Gravatar's)."""
    names = " ".join([*_classes(img), img.attributes.get("src") or ""])
    return bool(_DECOR.search(names))


def _title_selector(sample: list[LexborNode]) -> str:
    headings = ["h1", "h2", "h3", "h4", "h5", "h6"]
    candidates = headings + _classed(sample, "*", _TITLE_WORDS) + _classed(sample, "a")
    for candidate in candidates:
        texts = [_text(s.css_first(candidate)) for s in sample]
        if all(len(t) >= 10 and find_date(t, _UTC) is None for t in texts):
            return candidate
    return _common(sample, ["strong"]) or "a"


def _teaser_selector(sample: list[LexborNode], title: str, date: str) -> str:
    """A part with text of its own: not the headline again, not only the date."""
    candidates = (
        _classed(sample, "p", _TEASER_WORDS, anywhere=True)
        + _classed(sample, "div", _TEASER_WORDS, anywhere=True)
        + _classed(sample, "p")
        + ["p"]
    )
    for candidate in candidates:
        if any(_BYLINE_WORDS.fullmatch(w) for w in _words(candidate.partition(".")[2])):
            continue
        if all(_own_text(s, candidate, title, date) for s in sample):
            return candidate
    return ""


def _own_text(item: LexborNode, candidate: str, title: str, date: str) -> bool:
    node = item.css_first(candidate)
    if node is None or (title and node.css_first(title) is not None):
        return False
    headline = _text(item.css_first(title)).casefold() if title else ""
    text = _text(node)
    if date and (date_node := node.css_first(date)) is not None:
        text = text.replace(_text(date_node), "")
    words = " ".join(text.split()).casefold()
    if headline and (words in headline or words.startswith(headline)):
        return False  # the headline again
    if len(words) < 60 and find_date(words, _UTC) is not None:
        return False  # a date with a weekday or brackets: "[ Samstag, 19. Juli 2014 ]"
    return len(words) >= 20


def _label_selector(sample: list[LexborNode], title: str, date: str) -> str:
    """A word or two in most items: not the headline, not a date nor a part of one.

    A class that also names a part of a date ("datum-tag") is none; a class "tag" is one
    only where it holds a word that is no weekday, outside the date.
    """
    for candidate in _classed(sample, "*", _LABEL_WORDS):
        if any(_DATE_PART.fullmatch(w) for w in _words(candidate.partition(".")[2])):
            continue
        hits = 0
        for item in sample:
            node = item.css_first(candidate)
            text = _text(node)
            if node is None or not text or len(text) > 40 or not re.search(r"[^\W\d_]", text):
                continue
            if _WEEKDAYS.fullmatch(text.casefold().strip(".,")) or find_date(text, _UTC):
                continue
            if title and (node.css_first(title) is not None or _matches(node, title)):
                continue
            if date and any(_matches(a, date) for a in [node, *_ancestors(node)[:3]]):
                continue
            hits += 1
        if hits >= len(sample) / 3:  # labels mark some items, not all
            return _label_link(sample, candidate)
    return ""


def _label_link(sample: list[LexborNode], label: str) -> str:
    """``label``, or its link where the label's words lead in to it: "Veröffentlicht
    unter Allgemein", "Abgelegt unter: Fotos", "Posted in News"."""
    nodes = [n for s in sample if (n := s.css_first(label)) is not None]
    links = [n.css_first("a") for n in nodes]
    if all(
        a is not None and _text(a) and _text(a) != _text(n)
        for a, n in zip(links, nodes, strict=True)
    ):
        return f"{label} a"
    return label


def _matches(node: LexborNode, selector: str) -> bool:
    """Whether ``node`` itself is one that ``selector`` finds."""
    parent = node.parent
    return parent is not None and any(m.mem_id == node.mem_id for m in parent.css(selector))


def _read_more_selector(sample: list[LexborNode]) -> str:
    """A selector for the items' "weiter…", "mehr…", "Mehr erfahren" links, if they have one."""
    for item in sample:
        for link in item.css("a"):
            if not is_read_more(link):
                continue
            if classes := _classes(link):
                return f"a.{classes[0]}"
            parent = link.parent
            if parent is not None and parent is not item and (classes := _classes(parent)):
                return f"{parent.tag}.{classes[0]} a"
    return ""
