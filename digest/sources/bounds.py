"""Cut over-long feed values to the limits in :mod:`digest.core.limits`, and measure HTML depth.

Everything here is linear in the length of its input, so it can run before the parts
that are not (nh3 sanitizing is quadratic in the nesting depth of the markup).
"""

from __future__ import annotations

import re

from digest.core.limits import ELLIPSIS

__all__ = ["shorten", "bound_markup", "html_depth_exceeds"]

_TAG_NAME = re.compile(r"<(/?)([A-Za-z][^\s/>]*)")
# The rest of a tag up to its ">", as the HTML tokenizer reads it: a quote only opens a
# value right after "=", and a quoted value may hold ">".
_TAG_REST = re.compile(r"""(?:[^>=]|=\s*(?:"[^"]*"|'[^']*'|(?=[^"'])))*+>""")
_RAW_TEXT_END = {
    name: re.compile(rf"</{name}[\s/>]", re.IGNORECASE)
    for name in ("script", "style", "textarea", "title", "xmp", "iframe", "noembed", "noframes")
}
_VOID = frozenset(
    [
        "area",
        "base",
        "br",
        "col",
        "embed",
        "hr",
        "img",
        "input",
        "keygen",
        "link",
        "meta",
        "param",
        "source",
        "track",
        "wbr",
    ]
)
# A start tag of these closes an open one of the same name right above it (<p>a<p>b).
_CLOSES_SIBLING = frozenset(
    ["p", "li", "dt", "dd", "option", "optgroup", "tr", "td", "th", "rt", "rp"]
)


def shorten(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters at a word boundary, ending in "…"."""
    if len(text) <= limit:
        return text
    cut = text[: limit - len(ELLIPSIS) + 1]
    space = cut.rfind(" ")
    cut = cut[:space] if space > limit // 2 else cut[:-1]
    return cut.rstrip(" ,;:.-–—") + ELLIPSIS


def bound_markup(markup: str, limit: int) -> str:
    """HTML cut to at most ``limit`` characters, never inside a tag, an entity or a word.

    The result may leave elements open; the sanitizer closes them.
    """
    if len(markup) <= limit:
        return markup
    cut = markup[: limit - len(ELLIPSIS)]
    if cut.rfind("<") > cut.rfind(">"):
        cut = cut[: cut.rfind("<")]
    amp = cut.rfind("&")
    if amp > cut.rfind(";") and amp > len(cut) - 40:
        cut = cut[:amp]
    space = cut.rfind(" ")
    if space > max(cut.rfind(">"), len(cut) - 100):
        cut = cut[:space]
    return cut.rstrip() + ELLIPSIS


def html_depth_exceeds(markup: str, limit: int) -> bool:
    """Whether the elements of ``markup`` may nest deeper than ``limit`` levels.

    A linear scan that follows the HTML tokenizer (comments, quoted attribute values,
    raw text in <script> and the like, void elements) and the common implied end tags.
    Where the parser's tree building would close more elements than this scan does, the
    scan errs towards a deeper count.
    """
    if markup.count("<") <= limit:
        return False
    open_tags: list[str] = []
    pos = 0
    while (start := markup.find("<", pos)) >= 0:
        if markup.startswith("<!--", start):
            end = markup.find("-->", start + 4)
            if end < 0:
                break  # the rest is a comment
            pos = end + 3
            continue
        name_match = _TAG_NAME.match(markup, start)
        if name_match is None:
            pos = start + 1
            continue
        rest = _TAG_REST.match(markup, name_match.end())
        if rest is None:
            break  # a tag that never ends swallows the rest
        pos = rest.end()
        closing, name = name_match.group(1), name_match.group(2).lower()
        if closing:
            if name in open_tags:
                del open_tags[len(open_tags) - 1 - open_tags[::-1].index(name) :]
            continue
        if name in _VOID:
            continue
        if name in _RAW_TEXT_END:
            end_match = _RAW_TEXT_END[name].search(markup, pos)
            if end_match is None:
                break
            pos = end_match.start() + 1
            continue
        if open_tags and open_tags[-1] == name and name in _CLOSES_SIBLING:
            continue
        open_tags.append(name)
        if len(open_tags) > limit:
            return True
    return False
