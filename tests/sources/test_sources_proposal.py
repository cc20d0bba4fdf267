"""The selectors :func:`propose` finds, on small pages in the shapes of real ones.

Each shape is one that discover got wrong on a saved real page (the page is named; the
pages are in tests/sources/listings/real/ and test_sources_discover_real.py runs them).
"""

from __future__ import annotations

from selectolax.lexbor import LexborHTMLParser

from digest.config import SelectorSettings
from digest.sources.listing import first_link
from digest.sources.proposal import propose

DAYS = ["13. Januar 2014", "23. Juli 2013", "10. Juli 2013", "26. Mai 2013", "2. März 2013"]
TEXT = "Ein Absatz mit genug Worten, dass er als Vorspann taugt, und noch ein paar mehr."


def page(items: str, *, head: str = "", before: str = "", after: str = "") -> LexborHTMLParser:
    return LexborHTMLParser(
        f"<html><head>{head}</head><body><div id='content'>{before}{items}{after}</div>"
        "</body></html>"
    )


def selectors(tree: LexborHTMLParser) -> SelectorSettings:
    proposal = propose(tree)
    assert proposal.selectors is not None, proposal.note
    return proposal.selectors


def wordpress_posts(image: str = "") -> str:
    # A WordPress theme of the 2010s: byline "Publiziert am <date> von <author>",
    # categories after "Veröffentlicht unter".
    return "".join(
        f'<div id="post-{n}" class="post-{n} post type-post">'
        f'<h2 class="entry-title"><a href="/2013/{n}/beitrag-{n}/">Beitrag Nummer {n} im Blog</a>'
        f'</h2><div class="entry-meta"><span class="meta-prep">Publiziert am</span> '
        f'<a href="/2013/{n}/beitrag-{n}/"><span class="entry-date">{day}</span></a> '
        f'<span class="meta-sep">von</span> <span class="author"><a href="/author/u/">uriebe'
        f'</a></span></div><div class="entry-content">{image}<p>{TEXT}</p></div>'
        f'<div class="entry-utility"><span class="cat-links"><span class="prep">Veröffentlicht '
        f'unter</span> <a href="/category/allgemein/">Allgemein</a></span></div></div>'
        for n, day in enumerate(DAYS)
    )


def test_the_byline_is_no_teaser_and_a_label_is_its_link() -> None:
    # echte-demokratie-jetzt.de/blog: "entry-meta" (entry!) held only the byline.
    found = selectors(page(wordpress_posts()))
    assert (found.item, found.date) == ("div.post", "span.entry-date")
    assert found.teaser == "div.entry-content"
    assert found.label == "span.cat-links a"  # "Allgemein", not "Veröffentlicht unter …"


def test_a_pager_above_and_below_the_list_is_the_next_page() -> None:
    # echte-demokratie-jetzt.de/blog: div.nav-previous twice, both to page 2.
    nav = (
        '<div class="navigation"><div class="nav-previous"><a href="/blog/page/2/">'
        '← Ältere Beiträge</a></div><div class="nav-next"></div></div>'
    )
    tree = page(wordpress_posts(), before=nav, after=nav)
    assert selectors(tree).next == "div.nav-previous"
    # Two pagers that lead to different pages are no next page.
    other = nav.replace("/blog/page/2/", "/blog/page/3/")
    assert selectors(page(wordpress_posts(), before=nav, after=other)).next == ""


def test_the_next_link_inside_a_pager_of_numbers() -> None:
    # colours-of-the-soul.alhelm.net: WP-PageNavi "1 2 3 » Letzte »", its links classless.
    pager = (
        '<div class="wp-pagenavi"><span class="pages">Seite 1 von 35</span>'
        '<span class="current">1</span><a href="/page/2/" title="2">2</a>'
        '<a href="/page/3/" title="3">3</a><a href="/page/2/">»</a>'
        '<a href="/page/35/" title="Letzte »">Letzte »</a></div>'
    )
    found = selectors(page(wordpress_posts(), after=pager))
    assert found.next == "div.wp-pagenavi a:nth-last-of-type(2)"
    node = page(wordpress_posts(), after=pager).css_first(found.next)
    link = first_link(node) if node is not None else None
    assert link is not None and link.attributes["href"] == "/page/2/"


def test_a_date_class_in_a_word_and_a_date_in_brackets_is_no_teaser() -> None:
    # die-partei.net/sh: <p class="newsdatum">[Samstag, 19. Juli 2014]</p>, then the text in
    # div.newstext; "newsdatum" is no date word of its own, "[…]" was taken for the teaser.
    items = "".join(
        f'<div class="newsentry"><p class="newsdatum">[<a href="/sh/{n}/">Samstag, {day}</a>]'
        f'</p><h2 class="newsheading"><a href="/sh/{n}/">Meldung Nummer {n} der PARTEI</a></h2>'
        f'<div class="newstext"><p>{TEXT}</p></div></div>'
        for n, day in enumerate(DAYS)
    )
    found = selectors(page(items))
    assert (found.item, found.date, found.teaser) == (
        "div.newsentry",
        "p.newsdatum",
        "div.newstext",
    )
    assert found.exclude == "p.newsdatum"


def test_the_read_more_link_as_the_only_article_link_is_the_link() -> None:
    # greenpeace.de: the headline has no link; the label links to "#"; "Mehr erfahren" is
    # the article's only link.
    items = "".join(
        f'<article class="Teaser"><h3 class="Teaser-headline"><span>Thema Nummer {n} im Blick'
        f'</span></h3><ul class="Teaser-metaInfo"><li class="Teaser-metaItem label-small">'
        f'<a href="#" class="Teaser-formatLink">Nachricht</a></li><li>{day}</li></ul>'
        f'<p class="Teaser-copy">{TEXT}</p><a href="/thema/{n}" class="Teaser-link">'
        "Mehr erfahren</a></article>"
        for n, day in enumerate(DAYS)
    )
    found = selectors(page(items))
    assert found.item == "article.Teaser"
    assert found.link == "a.Teaser-link"
    assert found.teaser == "p.Teaser-copy"  # not the date line "Nachricht 13. Januar 2014"
    # Where the headline links to the article, no link selector is needed.
    assert selectors(page(wordpress_posts())).link == ""


def test_no_author_pictures_nor_smileys() -> None:
    # en.blog.wordpress.com: each post's only picture is its author's (Gravatar).
    avatar = '<img class="avatar avatar-64" src="https://2.gravatar.com/avatar/e85c?s=64">'
    assert selectors(page(wordpress_posts(avatar))).image == ""
    # colours-of-the-soul.alhelm.net: a smiley before the post's picture.
    smiley = '<img class="wp-smiley" src="/wp-includes/images/smilies/icon_wink.gif" alt=";)">'
    picture = '<img class="size-medium" src="/uploads/bild.jpg" alt="Bild">'
    assert selectors(page(wordpress_posts(smiley + picture))).image == "img:not(.wp-smiley)"
    assert selectors(page(wordpress_posts(picture))).image == "img"


def test_an_article_page_proposes_nothing() -> None:
    # paris-luttes.info: an article with a box of recent articles, each with a date.
    head = '<meta property="og:type" content="article" />'
    proposal = propose(page(wordpress_posts(), head=head), "https://paris-luttes.info/a-12355")
    assert proposal.selectors is None
    assert proposal.note.startswith('the page is one article (og:type "article")')
    # A home page is no single article, whatever it says (austria.info, 96fm.ie say so).
    assert propose(page(wordpress_posts(), head=head), "https://blog.example/").selectors
    website = '<meta property="og:type" content="website" />'
    assert propose(page(wordpress_posts(), head=website)).selectors is not None


def test_an_article_beside_a_box_of_latest_posts_proposes_nothing() -> None:
    # Articles without og:type: the article's text outweighs the dated posts beside it.
    body = "<p>" + " ".join([TEXT] * 12) + "</p>"
    latest = "".join(
        f'<div class="latest-item"><a href="/news/{n}/">Kurzmeldung Nummer {n} vom Tag</a>'
        f"<span>{day}</span></div>"
        for n, day in enumerate(DAYS[:4])
    )
    tree = page(f'<div class="box-latest">{latest}</div>', before=f"<h1>Titel</h1>{body}")
    proposal = propose(tree, "https://verband.example/news/details/ein-artikel/")
    assert proposal.selectors is None
    assert proposal.note.startswith("no list of news on the page: its main text is one article")
    # transgen.de: the article and two teasers each in a wrapper of the same class.
    wrapped = "".join(
        f'<div class="clearfix"><div><h2><a href="/aktuell/{n}.html">Meldung Nummer {n} '
        f"aus der Redaktion</a></h2><span>{day}</span>{body if n == 0 else ''}</div></div>"
        for n, day in enumerate(DAYS[:3])
    )
    assert propose(page(wrapped), "https://www.transgen.de/aktuell/1.html").selectors is None
    # Blog posts in full, each as long as an article, are a list.
    full = wordpress_posts().replace(f"<p>{TEXT}</p>", body)
    assert propose(page(full), "https://blog.example/blog/").selectors is not None
