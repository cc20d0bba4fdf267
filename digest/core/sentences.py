"""Cut a text to a length: at the end of a sentence where one fits, else at a word with "…".

Sentences are found by SoMaJo (its German rules), which knows abbreviations, ordinals
and dates ("z. B.", "Nr. 5", "28.01.2025", "Dr.", "am 14. Mai") and does not take their
full stops for the end of a sentence; it handles English text well enough too. It is
asked about the last few full stops within the limit, each with the words around it,
so cutting a long text costs about as much as a short one (a few milliseconds).
"""

from __future__ import annotations

import functools
import math
import re
from typing import TYPE_CHECKING

from digest.core.limits import ELLIPSIS

if TYPE_CHECKING:
    from somajo import SoMaJo

__all__ = ["cut_text", "cut_at_word", "last_sentence_end"]

#: A sentence end counts only if it keeps at least this share of the limit: a teaser of
#: one short sentence ("Berlin.") says less than one cut at a word.
MIN_SHARE = 1 / 3
#: Text read around a full stop so the splitter sees what comes before and after it.
_CONTEXT = 40
#: Most full stops asked about for one cut (a text of abbreviations and numbers has many).
_MAX_CHECKS = 8
# Dropped from the end of a cut so it never reads "Bund,…" or "Bund –…".
_TRAILING = " \t\n,;:.-–—/([{„‚»«"
# Where a sentence may end: its mark, closing quotes or brackets, then a space or the end.
_SHORT_BEFORE = re.compile(r"(?:^|[\s(„\"'])(?:[^\W\d_]{1,2}|\d{1,2})\.$")
_END_MARK = re.compile(r"[.!?…][\"'“”‘’»«)\]]*(?=\s|$)")


@functools.cache
def _splitter() -> SoMaJo:
    from somajo import SoMaJo  # imported where used: loading its rules takes a moment

    return SoMaJo("de_CMC", split_sentences=True, character_offsets=True)


def last_sentence_end(text: str, upto: int, at_least: int = 0) -> int | None:
    """The offset just past the last sentence of ``text`` that ends within ``upto``.

    Only ends at ``at_least`` or later count. Each full stop (or "!", "?", "…") is put to
    SoMaJo with the words around it, last first, so a long text costs no more than a
    short one; after a few that end no sentence ("z. B.", "Nr. 5", "28.01.2025") the
    answer is None.
    """
    marks = []
    for mark in _END_MARK.finditer(text, at_least):
        if mark.end() > upto:
            break
        marks.append(mark.end())
    # A full stop after a word of one or two letters ("z. B.", "Nr.", "Dr.") or after a
    # day ("am 14. Mai") is not asked about: it hardly ever ends a sentence, and an
    # earlier sentence end does as well.
    likely = [end for end in marks if not _SHORT_BEFORE.search(text, 0, end)]
    for end in reversed(likely[-_MAX_CHECKS:]):
        if _ends_a_sentence(text, end):
            return end
    return None


def _ends_a_sentence(text: str, end: int) -> bool:
    start = text.rfind(" ", 0, max(0, end - _CONTEXT)) + 1
    stop = text.find(" ", end + _CONTEXT)
    window = text[start : stop if stop >= 0 else len(text)]
    for sentence in _splitter().tokenize_text([window]):
        offset = sentence[-1].character_offset
        if offset is not None and start + offset[1] == end:
            return True
    return False


@functools.lru_cache(maxsize=4096)
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
