"""The ground every stage stands on: plain values, the exception tree, texts, field
limits, secret redaction and the one address check. No I/O, and no import of any stage."""

__all__: list[str] = []
