"""Simple charts as inline SVG, drawn on the server: no script, no style element.

Each chart is an ``<svg role="img">`` named by its ``<title>`` and described by its
``<desc>`` (the text alternative: every value the chart shows, in words), and the page
shows the same figures as a table next to it. Every text that goes in is escaped here;
colours and sizes are presentation attributes, which the pages' Content-Security-Policy
allows (inline styles it does not). The drawing is scaled by its ``viewBox``: 320 units
wide, so on a phone one unit is about one CSS pixel.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from markupsafe import Markup, escape

__all__ = ["SERIES_STYLES", "bar_chart", "line_chart"]

WIDTH = 320
_TEXT = "#1d2a38"
_GRID = "#8a99a8"
_BAR = "#1d3557"
#: Colour and dash pattern of each line: told apart without colour too.
SERIES_STYLES = (
    ("#1d3557", ""),
    ("#2a7d4f", "6 3"),
    ("#b3261e", "2 2"),
    ("#8a4b00", "8 3 2 3"),
)
_ids = itertools.count(1)


def _shortened(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _frame(height: int, title: str, description: str, body: list[str]) -> Markup:
    n = next(_ids)
    title_id, desc_id = f"chart-{n}-title", f"chart-{n}-desc"
    return Markup(
        f'<svg class="chart" role="img" viewBox="0 0 {WIDTH} {height}" '
        f'width="{WIDTH}" height="{height}" aria-labelledby="{title_id}" '
        f'aria-describedby="{desc_id}" '
        f'font-family="system-ui, sans-serif" font-size="11" fill="{_TEXT}">'
        f'<title id="{title_id}">{escape(title)}</title>'
        f'<desc id="{desc_id}">{escape(description)}</desc>' + "".join(body) + "</svg>"
    )


def bar_chart(
    title: str, description: str, rows: Sequence[tuple[str, int]], numbers: Sequence[str]
) -> Markup:
    """Horizontal bars, one per ``(label, value)``, each labelled above and valued
    (``numbers``: the values as the page writes them) after."""
    highest = max((value for _label, value in rows), default=0) or 1
    room = WIDTH - 64  # the longest bar, and space for its number after it
    body: list[str] = []
    y = 4
    for (label, value), number in zip(rows, numbers, strict=True):
        length = round(room * value / highest)
        body.append(f'<text x="0" y="{y + 11}">{escape(_shortened(label, 52))}</text>')
        body.append(
            f'<rect x="0" y="{y + 15}" width="{max(length, 1)}" height="12" fill="{_BAR}"/>'
        )
        body.append(f'<text x="{length + 4}" y="{y + 25}">{escape(number)}</text>')
        y += 34
    return _frame(max(y, 20), title, description, body)


def line_chart(
    title: str,
    description: str,
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[int]]],
) -> Markup:
    """One line per ``(name, values)`` over ``labels`` (the x axis: first, middle and
    last are written), a legend under it."""
    top, plot_height, left = 14, 120, 28
    plot_width = WIDTH - left - 4
    highest = max((max(values, default=0) for _name, values in series), default=0) or 1
    steps = max(len(labels) - 1, 1)

    def x(i: int) -> float:
        return left + plot_width * i / steps

    def y(value: int) -> float:
        return top + plot_height * (1 - value / highest)

    bottom = top + plot_height
    body = [
        f'<line x1="{left}" y1="{bottom}" x2="{WIDTH - 4}" y2="{bottom}" stroke="{_GRID}"/>',
        f'<line x1="{left}" y1="{top}" x2="{WIDTH - 4}" y2="{top}" stroke="{_GRID}" '
        'stroke-dasharray="2 3"/>',
        f'<text x="{left - 4}" y="{top + 4}" text-anchor="end">{highest}</text>',
        f'<text x="{left - 4}" y="{bottom + 4}" text-anchor="end">0</text>',
    ]
    if labels:
        for i, anchor in ((0, "start"), (len(labels) // 2, "middle"), (len(labels) - 1, "end")):
            body.append(
                f'<text x="{x(i):.1f}" y="{bottom + 16}" text-anchor="{anchor}">'
                f"{escape(labels[i])}</text>"
            )
    legend_y = bottom + 34
    for n, (name, values) in enumerate(series):
        colour, dashes = SERIES_STYLES[n % len(SERIES_STYLES)]
        dash = f' stroke-dasharray="{dashes}"' if dashes else ""
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values))
        body.append(
            f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>'
        )
        lx = (n % 2) * (WIDTH // 2)
        ly = legend_y + (n // 2) * 16
        body.append(
            f'<line x1="{lx}" y1="{ly - 4}" x2="{lx + 22}" y2="{ly - 4}" stroke="{colour}" '
            f'stroke-width="2"{dash}/>'
        )
        body.append(f'<text x="{lx + 28}" y="{ly}">{escape(name)}</text>')
    height = legend_y + ((len(series) + 1) // 2) * 16
    return _frame(height, title, description, body)
