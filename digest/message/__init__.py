"""Issue → Variant → Message: Jinja2 → MJML → HTML and text once per distinct content,
then each reader's MIME bytes, DKIM-signed; also the archive copy of an issue."""

__all__: list[str] = []
