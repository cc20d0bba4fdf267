"""The README's configuration reference, generated from the declarations."""

from __future__ import annotations

from pathlib import Path

from digest.config.declare import bounds_text, type_name
from digest.config.settings import SECTIONS

__all__ = ["reference_markdown", "update_readme", "README_START", "README_END"]


def reference_markdown() -> str:
    """A Markdown table of every key, for README.md (``python -m digest.config``)."""
    lines = []
    for section, (settings, is_array) in SECTIONS.items():
        title = f"[[{section}]]" if is_array else (f"[{section}]" if section else "top level")
        lines += [
            "",
            f"**{title}**",
            "",
            "| key | type | default | meaning |",
            "| --- | --- | --- | --- |",
        ]
        for s in settings:
            name = f"{section}.{s.name}" if section else s.name
            default = (
                "required"
                if s.required
                else ("inherited" if s.default is None else f"`{s.default!r}`".replace("|", "\\|"))
            )
            if isinstance(s.default, bool):
                default = f"`{str(s.default).lower()}`"
            meaning = s.help.replace("|", "\\|")
            kind = type_name(s.type)
            if s.bounds:
                kind += f", {bounds_text(s.bounds)}"
            lines.append(f"| `{name}` | {kind} | {default} | {meaning} |")
    return "\n".join(lines).strip() + "\n"


def update_readme(path: Path) -> bool:
    """Rewrite the generated reference in README.md; True if it changed."""
    text = path.read_text(encoding="utf-8")
    start = text.index(README_START)
    start = text.index("\n", start) + 1
    end = text.index(README_END)
    updated = text[:start] + reference_markdown() + text[end:]
    if updated != text:
        path.write_text(updated, encoding="utf-8")
    return updated != text


README_START = "<!-- settings:start"
README_END = "<!-- settings:end -->"
