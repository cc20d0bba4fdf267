"""Article → Issue: pick a window's articles, group them by category (compose), keep
the prepared issue with the editors' changes (prepare, editing) and hold it for review."""

__all__: list[str] = []
