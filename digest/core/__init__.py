"""The ground every stage stands on: plain values, the exception tree, texts, field
limits, secret redaction and the one address check. No I/O, and no import of any stage."""

# The stage's modules are its public surface: callers import from them by name.
__all__ = ["addresses", "errors", "i18n", "limits", "models", "redact"]
