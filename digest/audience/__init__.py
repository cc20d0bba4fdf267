"""Who gets what: subscribers imported or signed up (double opt-in), the segments
that decide each reader's cut, and the signed tokens in their links."""

__all__: list[str] = []
