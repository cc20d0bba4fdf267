"""A rendered mail's HTML as a small tree, to check what its markup says element by element.

Conditional comments (``<!--[if mso]>…<![endif]-->``) are comments to the parser, so
the tree is the document a client that is not Outlook reads.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser

#: A colour as red, green, blue from 0 to 255.
RGB = tuple[float, float, float]

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    parent: Node | None = None
    children: list[Node] = field(default_factory=list)
    #: The text directly inside this element (not its children's).
    own_text: str = ""

    @property
    def style(self) -> dict[str, str]:
        """The inline style, property → value, lowercased, runs of spaces made one."""
        declarations = {}
        for part in self.attrs.get("style", "").split(";"):
            name, colon, value = part.partition(":")
            if colon:
                declarations[name.strip().lower()] = " ".join(value.split()).lower()
        return declarations

    def iter(self) -> Iterator[Node]:
        """This element and every element inside it, in document order."""
        yield self
        for child in self.children:
            yield from child.iter()

    def find_all(self, tag: str) -> list[Node]:
        return [node for node in self.iter() if node.tag == tag]

    def ancestors(self) -> Iterator[Node]:
        node = self.parent
        while node is not None:
            yield node
            node = node.parent

    @property
    def text(self) -> str:
        return self.own_text + "".join(child.text for child in self.children)


class _Builder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.current = self.root

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs}, self.current)
        self.current.children.append(node)
        if tag not in VOID:
            self.current = node

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.current.children.append(Node(tag, {k: v or "" for k, v in attrs}, self.current))

    def handle_endtag(self, tag: str) -> None:
        node: Node | None = self.current
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.current = node.parent

    def handle_data(self, data: str) -> None:
        self.current.own_text += data


def parse(html: str) -> Node:
    builder = _Builder()
    builder.feed(html)
    builder.close()
    return builder.root


def _rgb(value: str) -> RGB | None:
    value = value.removesuffix("!important").strip()
    if not value.startswith("#") or len(value) not in (4, 7):
        return None
    digits = value[1:]
    if len(digits) == 3:
        digits = "".join(c * 2 for c in digits)
    return (int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16))


def _luminance(rgb: RGB) -> float:
    def channel(c: float) -> float:
        c /= 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(foreground: RGB, background: RGB) -> float:
    """The WCAG contrast ratio of two colours (1 to 21)."""
    light, dark = sorted((_luminance(foreground), _luminance(background)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def text_colour(node: Node) -> RGB:
    """The inline text colour in effect at ``node`` (black where none is set)."""
    for element in (node, *node.ancestors()):
        found = _rgb(element.style.get("color", ""))
        if found:
            return found
    return (0, 0, 0)


def background_colour(node: Node) -> RGB:
    """The inline background in effect at ``node`` (white where none is set)."""
    for element in (node, *node.ancestors()):
        style = element.style
        for value in (
            style.get("background-color"),
            style.get("background"),
            element.attrs.get("bgcolor"),
        ):
            found = _rgb(value or "")
            if found:
                return found
    return (255, 255, 255)
