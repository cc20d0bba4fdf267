"""Cut a text to a length: at the end of a sentence where one fits, else at a word with "…".

Sentences are found by SoMaJo (its German rules), which knows abbreviations, ordinals
and dates ("z. B.", "Nr. 5", "28.01.2025", "Dr.", "am 14. Mai") and does not take their
full stops for the end of a sentence; it handles English text well enough too.
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING

from digest.core.limits import ELLIPSIS

if TYPE_CHECKING:
    from somajo import SoMaJo

__all__ = ["cut_text", "cut_at_word", "sentence_ends"]

#: A sentence end counts only if it keeps at least this share of the limit: a teaser of
#: one short sentence ("Berlin.") says less than one cut at a word.
MIN_SHARE = 1 / 3
#: Text read past the limit so the splitter sees what follows a full stop.
_LOOKAHEAD = 60
# Dropped from the end of a cut so it never reads "Bund,…" or "Bund –…".
_TRAILING = " \t\n,;:.-–—/([{„‚»«"
# What a sentence may end with: its mark, then closing quotes or brackets.
_ENDS_SENTENCE = re.compile(r"[.!?…][\"'“”‘’»«)\]]*$")


@functools.cache
def _splitter() -> SoMaJo:
    from somajo import SoMaJo  # imported where used: loading its rules takes a moment

    return SoMaJo("de_CMC", split_sentences=True, character_offsets=True)


def sentence_ends(text: str, upto: int | None = None) -> list[int]:
    """Offsets just past each complete sentence of ``text`` that ends by ``upto``."""
    upto = len(text) if upto is None else upto
    window = text[: upto + _LOOKAHEAD]
    ends = []
    for sentence in _splitter().tokenize_text([window]):
        offset = sentence[-1].character_offset
        if offset is None:
            continue
        end = offset[1]
        if end > upto:
            break
        if _ENDS_SENTENCE.search(window[:end]):
            ends.append(end)
    return ends


@functools.lru_cache(maxsize=4096)
def cut_text(text: str, limit: int) -> str:
    """``text`` if it fits in ``limit`` characters; else its sentences that fit, or a cut.

    The cut ends at the last sentence that ends within ``limit`` and keeps at least
    :data:`MIN_SHARE` of it; without one, at a word boundary with "…" (see
    :func:`cut_at_word`).
    """
    if len(text) <= limit:
        return text
    ends = sentence_ends(text, limit)
    if ends and ends[-1] >= limit * MIN_SHARE:
        return text[: ends[-1]]
    return cut_at_word(text, limit)


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
