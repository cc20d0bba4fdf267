"""Who gets what: subscribers imported or signed up (double opt-in), the segments
that decide each reader's cut, and the signed tokens in their links."""

# The stage's modules are its public surface: callers import from them by name.
__all__ = ["segments", "signup", "subscribers", "tokens"]
