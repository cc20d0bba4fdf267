"""Issue → Variant → Message: Jinja2 → MJML → HTML and text once per distinct content,
then each reader's MIME bytes, DKIM-signed; also the archive copy of an issue."""

from digest.message.dkim import signer_for
from digest.message.mail import MessageError, build_message
from digest.message.personalize import Personalizer
from digest.message.render import render_variant

__all__ = ["MessageError", "Personalizer", "build_message", "render_variant", "signer_for"]
