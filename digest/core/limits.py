"""The longest value each field of an Article may hold, declared once.

Sources cut what is longer when they collect it (with a warning naming the source), so
everything downstream (the store, the issue, the subject line, the web pages) can rely
on these bounds. Lengths are in characters (code points), not bytes.
"""

from __future__ import annotations

__all__ = [
    "MAX_TITLE",
    "MAX_SUMMARY",
    "MAX_CONTENT",
    "MAX_LABEL",
    "MAX_AUTHOR",
    "MAX_REGION",
    "MAX_CATEGORY",
    "MAX_IMAGE_ALT",
    "MAX_URL",
    "MAX_UID",
    "MAX_HTML_DEPTH",
    "ELLIPSIS",
]

#: A headline; also what the subject line may quote.
MAX_TITLE = 300
#: The summary as HTML (before and after sanitizing); the teaser is cut from it.
MAX_SUMMARY = 10_000
#: The full content as HTML; kept for the teaser when there is no summary.
MAX_CONTENT = 100_000
#: The small label shown above a headline ("Exklusiv", "Interview").
MAX_LABEL = 60
#: The author's name.
MAX_AUTHOR = 200
#: A region name; regions come from the configuration, never from a feed as given.
MAX_REGION = 100
#: A category key; categories come from the configuration, never from a feed as given.
MAX_CATEGORY = 100
#: The text that describes an article's picture.
MAX_IMAGE_ALT = 300
#: A link or picture URL; longer ones are not used at all (a cut URL points elsewhere).
MAX_URL = 2_000
#: An item's id as kept; a longer one is replaced by a digest of it (the store indexes it).
MAX_UID = 500
#: How deep the HTML of one field may nest; deeper markup fails its source (sanitizing
#: takes time quadratic in the depth).
MAX_HTML_DEPTH = 200

#: What ends a text that was cut.
ELLIPSIS = "…"
