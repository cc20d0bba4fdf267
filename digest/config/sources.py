"""[[newsletters.sources]] and their [newsletters.sources.selectors]: where articles come from."""

from __future__ import annotations

from dataclasses import dataclass

from digest.config.declare import REQUIRED, Setting, one_of, quoted, repr_without_passwords

__all__ = ["SOURCE", "SELECTORS", "SourceSettings", "SelectorSettings", "SOURCE_TIME_FACTOR"]


def _css_problem(value: str) -> str | None:
    if not value:
        return None
    from selectolax.lexbor import LexborHTMLParser, SelectolaxError

    try:
        LexborHTMLParser("<p></p>").css(value)
    except SelectolaxError:
        return f"is not a CSS selector: {quoted(value)}"
    return None


def _date_format_problem(value: str) -> str | None:
    if value and "%" not in value:
        return "must be a strptime format with % codes, such as '[%d.%m.%Y]'"
    return None


#: A source as a whole may take this many times its `timeout`.
SOURCE_TIME_FACTOR = 3


S = Setting
SOURCE = [
    S("name", str, REQUIRED, "Name of the source, used in warnings."),
    S(
        "url",
        str,
        REQUIRED,
        "http(s) URL or local path (relative to the config file) of an "
        "RSS 2.0, Atom or JSON Feed document.",
    ),
    S(
        "default_category",
        str,
        REQUIRED,
        "Category of items whose own categories map to none of the newsletter's.",
    ),
    S(
        "timeout",
        (int, float),
        20,
        "Seconds before a fetch is given up. The source as a whole (robots.txt, its listing "
        f"pages, the article pages of `fetch_articles`) ends {SOURCE_TIME_FACTOR} times this "
        "after it began: article pages not read by then leave their teasers empty, and a "
        "warning says how many.",
        bounds=(1, 300),
    ),
    S(
        "max_bytes",
        int,
        5_000_000,
        "Largest response accepted, in bytes.",
        bounds=(1_000, 100_000_000),
    ),
    S(
        "allow_private",
        bool,
        False,
        "Fetch from loopback, private and link-local addresses too (an intranet feed); "
        "by default digest refuses them after DNS resolution and on every redirect. "
        "Cloud metadata addresses are always refused; local paths need no permission.",
    ),
    S(
        "kind",
        str,
        "feed",
        "'feed' (RSS, Atom or JSON Feed) or 'html': a listing page read with the CSS "
        "selectors in `[newsletters.sources.selectors]`.",
        one_of("feed", "html"),
    ),
    S(
        "date_format",
        str,
        "",
        "How an html source's dates are written, as a strptime format such as "
        "'[%d.%m.%Y]' or '%d. %B %Y' (German or English month names); empty: found in the "
        "date text, as '28.01.2025', '30. Januar 2025' or ISO 8601. Dates without a zone are "
        "in the newsletter's `timezone`.",
        _date_format_problem,
    ),
    S(
        "max_pages",
        int,
        3,
        "Most listing pages of an html source read per run, following its `next` link.",
        bounds=(1, 20),
    ),
    S(
        "max_age_days",
        int,
        14,
        "An html source follows its `next` link only while the page's items are newer "
        "than this many days.",
        bounds=(1, 365),
    ),
    S(
        "fetch_articles",
        bool,
        False,
        "For items without a teaser, fetch the article page and take the teaser from its "
        "description (meta, Open Graph, JSON-LD) or its main text.",
    ),
]


SELECTORS = [
    S("item", str, REQUIRED, "CSS selector of each item on the listing page.", _css_problem),
    S("title", str, REQUIRED, "Selector of the headline, within the item.", _css_problem),
    S(
        "link",
        str,
        "",
        "Selector of the element whose `href` is the article's link, within the item; "
        "empty: the headline if it is a link, else the first link in the item.",
        _css_problem,
    ),
    S(
        "date",
        str,
        "",
        "Selector of the date, within the item (its `datetime` attribute, else its text); "
        "empty: the item's text.",
        _css_problem,
    ),
    S("teaser", str, "", "Selector of the teaser text, within the item.", _css_problem),
    S(
        "image",
        str,
        "",
        "Selector of the picture, within the item: its `src` (or `data-src`) and `alt`.",
        _css_problem,
    ),
    S("label", str, "", "Selector of the label ('Interview'), within the item.", _css_problem),
    S(
        "category",
        str,
        "",
        "Selector of the item's category name, mapped like a feed's categories.",
        _css_problem,
    ),
    S(
        "exclude",
        str,
        "",
        "Selector of parts of the item left out of the teaser (a date, a 'mehr...' link).",
        _css_problem,
    ),
    S(
        "next",
        str,
        "",
        "Selector of the link to the next (older) page, on the whole page; empty: one page.",
        _css_problem,
    ),
]


@dataclass(frozen=True)
class SelectorSettings:
    """The CSS selectors that find an html source's items and their parts."""

    item: str
    title: str
    link: str = ""
    date: str = ""
    teaser: str = ""
    image: str = ""
    label: str = ""
    category: str = ""
    exclude: str = ""
    next: str = ""


@dataclass(frozen=True)
class SourceSettings:
    name: str
    url: str
    default_category: str
    timeout: float = 20
    max_bytes: int = 5_000_000
    allow_private: bool = False
    kind: str = "feed"
    date_format: str = ""
    max_pages: int = 3
    max_age_days: int = 14
    fetch_articles: bool = False
    selectors: SelectorSettings | None = None

    __repr__ = repr_without_passwords

    @property
    def time_limit(self) -> float:
        """Seconds the whole source may take: every page and article page it reads."""
        return self.timeout * SOURCE_TIME_FACTOR
