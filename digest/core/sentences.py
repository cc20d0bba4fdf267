"""Cut a text to a length: at the end of a sentence where one fits, else at a word with "…".

Sentences are found by sentencex (Wikimedia, MIT licence) with its German rules: a list
of abbreviations ("z. B.", "Nr.", "Dr.", "ca.", "bzw.", "u. a.", "S.", "Art."), numbers
and dates ("1.000", "28.01.2025", "2.5 Mio."), no end where a digit, a month or a word
in lower case follows a full stop ("am 14. Mai"), quotes („…“, »…«) and brackets kept
whole, URLs and ellipses. Its list holds English abbreviations too, so English text is
split well enough. Three rules are added here, each for a full stop: after a word of one
or two letters or a number of one or two digits ("Der 1. FC Köln", "Im 19. Jh.") it
ends no sentence; nor after an abbreviation of :data:`ABBREVIATIONS`, which German news
text puts before a capital ("inkl. MwSt.", "Dipl.-Ing. Meier", "12 Tsd. Besucher") and
sentencex's list lacks; nor before a word in lower case that opens with a letter
outside ASCII ("übergangsweise"), which sentencex does not see as lower case. A sentence
ends in ".", "!", "?" or "…" (closing quotes or brackets may follow): a line without one
is no sentence here. The splitter reads the text up to a little past the limit, in well
under a millisecond (a few hundredths of one for a teaser of 300 characters).
"""

from __future__ import annotations

import math
import re
from functools import lru_cache

import sentencex

from digest.core.limits import ELLIPSIS

__all__ = ["ABBREVIATIONS", "cut_text", "cut_at_word", "last_sentence_end"]

#: A sentence end counts only if it keeps at least this share of the limit: a teaser of
#: one short sentence ("Berlin.") says less than one cut at a word.
MIN_SHARE = 1 / 3
#: Abbreviations (lower case, without the full stop) that end no sentence, besides those
#: sentencex knows: ones German news text puts before a capital ("Dipl.-Ing. Meier"
#: ends in "Ing"). Not "usw." or "etc.", which end many a sentence.
ABBREVIATIONS = frozenset(
    {
        "abb", "abg", "abk", "abs", "abt", "allg", "anm", "aufl", "bhf", "bsp", "bspw",
        "dez", "dipl", "dir", "doz", "dres", "ebd", "exkl", "frz", "geb", "gebr", "gem",
        "ggü", "hbf", "hrsg", "inkl", "ing", "kap", "mär", "okt", "präs", "stv", "tel",
        "tsd", "verh", "vors", "zzgl",
    }
)  # fmt: skip
#: Characters read past the limit, so that the splitter sees what follows a full stop
#: within it and the end of a quote that began before it.
_CONTEXT = 200
# Dropped from the end of a cut so it never reads "Bund,…" or "Bund –…".
_TRAILING = " \t\n,;:.-–—/([{„‚»«"
# Where a sentence may end: its mark, closing quotes or brackets, then a space or the end.
_END_MARK = re.compile(r"[.!?…][\"'“”‘’»«)\]]*(?=\s|$)")
# A full stop after a word of one or two letters or a number of one or two digits.
_SHORT_BEFORE = re.compile(r"(?:^|[\s(„\"'])(?:[^\W\d_]{1,2}|\d{1,2})\.$")
# The word before a full stop, after a space, bracket, quote or hyphen ("Dipl.-Ing.").
_WORD_BEFORE = re.compile(r"(?:^|[\s(„\"'-])([^\W\d_]+)\.$")
# The first letter of the word after a sentence mark.
_NEXT_WORD = re.compile(r"\s+(\w)")


def last_sentence_end(text: str, upto: int, at_least: int = 0) -> int | None:
    """The offset just past the last sentence of ``text`` that ends within ``upto``.

    Only ends at ``at_least`` or later count. sentencex splits the text up to a little
    past ``upto``; an end it finds counts where a sentence mark ends there (see the
    module's docstring) and no short word, number or abbreviation of
    :data:`ABBREVIATIONS` comes before it, nor a word in lower case after it. None if no
    end counts.
    """
    stop = text.find(" ", upto + _CONTEXT)
    window = text if stop < 0 else text[:stop]
    marks: set[int] = set()
    # From a little before at_least: a mark with closing quotes may begin before it.
    for mark in _END_MARK.finditer(text, max(0, at_least - 8)):
        if mark.end() > upto:
            break
        if mark.end() >= at_least:
            marks.add(mark.end())
    if not marks:
        return None
    for boundary in reversed(sentencex.get_sentence_boundaries("de", window)):
        end = boundary["start_index"] + len(boundary["text"].rstrip())
        if end in marks and not _ends_no_sentence(text, end):
            return end
    return None


def _ends_no_sentence(text: str, end: int) -> bool:
    """Whether the full stop just before ``end`` follows a short word or an abbreviation,
    or a word in lower case follows it (sentencex sees only ASCII letters as lower case)."""
    if text[end - 1] != ".":
        return False
    following = _NEXT_WORD.match(text, end)
    if following and following[1].islower():
        return True
    if _SHORT_BEFORE.search(text, 0, end):
        return True
    word = _WORD_BEFORE.search(text, max(0, end - 40), end)
    return word is not None and word[1].lower() in ABBREVIATIONS


@lru_cache(maxsize=4096)
def cut_text(text: str, limit: int) -> str:
    """``text`` if it fits in ``limit`` characters; else its sentences that fit, or a cut.

    The cut ends at the last sentence that ends within ``limit`` and keeps at least
    :data:`MIN_SHARE` of it; without one, at a word boundary with "…" (see
    :func:`cut_at_word`).
    """
    if len(text) <= limit:
        return text
    end = last_sentence_end(text, limit, max(1, math.ceil(limit * MIN_SHARE)))
    return text[:end] if end is not None else cut_at_word(text, limit)


def cut_at_word(text: str, limit: int) -> str:
    """``text`` if it fits in ``limit`` characters, else cut at a word boundary with "…".

    The "…" counts towards ``limit``; only a single word longer than the limit is cut
    inside the word.
    """
    if len(text) <= limit:
        return text
    room = limit - len(ELLIPSIS)
    cut = text[:room]
    if text[room] != " ":
        space = cut.rfind(" ")
        if space > 0:
            cut = cut[:space]
    return cut.rstrip(_TRAILING) + ELLIPSIS
