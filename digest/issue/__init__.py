"""Article → Issue: pick a window's articles, group them by category (compose), keep
the prepared issue with the editors' changes (prepare, editing) and hold it for review."""

# The stage's modules are its public surface: callers import from them by name.
__all__ = ["compose", "editing", "editors", "prepare", "review"]
