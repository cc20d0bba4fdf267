"""Issue + a reader's cut → Variant → Message: each recipient's message, the MJML
compiled once per distinct content (issue and cut); per recipient only the personal
fields are filled in."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from digest.audience.segments import cut_for
from digest.audience.tokens import (
    MAIL,
    WEB,
    preferences_url,
    unsubscribe_mailto,
    unsubscribe_url,
)
from digest.config import NewsletterSettings, Settings
from digest.core.models import Issue, Message, Recipient, Rule, Variant
from digest.issue.compose import content_key, render_subject
from digest.message.dkim import DkimSigner
from digest.message.mail import build_message
from digest.message.prepared import PreparedVariant
from digest.message.render import personalize, render_variant

__all__ = ["Personalizer"]


class Personalizer:
    """Cuts, renders (once per distinct content) and builds each recipient's message."""

    def __init__(
        self,
        settings: Settings,
        newsletter: NewsletterSettings,
        issue: Issue,
        now: datetime,
        *,
        archive: bool = False,
        count_clicks: bool = False,
    ) -> None:
        self.settings = settings
        self.newsletter = newsletter
        self.issue = issue
        self.now = now
        # Variants for the public archive page (see render_variant), never sent.
        self.archive = archive
        # What readers get (the send, the archive page): article links counted when the
        # newsletter has click_counts; previews and tests keep the articles' own links.
        self.clicks = (WEB if archive else MAIL) if count_clicks else None
        self._variants: dict[str, Variant] = {}
        self._by_rules: dict[tuple[Rule, ...], Variant | None] = {}
        self._prepared: dict[str, PreparedVariant] = {}

    @property
    def variants(self) -> int:
        return len(self._variants)

    def variant_for(self, recipient: Recipient) -> Variant | None:
        """The rendered variant this recipient shares with others, or None if empty."""
        # The cut depends on the recipient's rules only: readers with the same rules
        # share it, so it is cut once for them all.
        if recipient.rules in self._by_rules:
            return self._by_rules[recipient.rules]
        found = self._variant_for(recipient)
        self._by_rules[recipient.rules] = found
        return found

    def _variant_for(self, recipient: Recipient) -> Variant | None:
        cut = cut_for(self.issue, recipient)
        if cut.is_empty:
            return None
        key = content_key(cut)
        if key not in self._variants:
            cut = replace(cut, subject=render_subject(self.newsletter, cut))
            self._variants[key] = render_variant(
                self.settings, self.newsletter, cut, archive=self.archive, clicks=self.clicks
            )
        return self._variants[key]

    def prepared(self, variant: Variant, signer: DkimSigner | None) -> PreparedVariant:
        """The variant's bytes prepared for many recipients (see digest.message.prepared)."""
        found = self._prepared.get(variant.content_key)
        if found is None:
            found = PreparedVariant(
                self.settings,
                self.newsletter,
                variant,
                now=self.now,
                issue_key=self.issue.key,
                signer=signer,
            )
            self._prepared[variant.content_key] = found
        return found

    def fast_message_for(
        self,
        recipient: Recipient,
        variant: Variant,
        message_id: str,
        *,
        envelope_from: str,
        signer: DkimSigner | None,
    ) -> Message:
        """The message of :meth:`message_for`, from the variant's prepared bytes, signed."""
        subscriber = recipient.subscriber
        sid, nid = subscriber.id or 0, self.newsletter.id
        return self.prepared(variant, signer).message(
            to_addr=subscriber.email,
            to_name=subscriber.name,
            message_id=message_id,
            envelope_from=envelope_from,
            fields={
                "name": subscriber.name,
                "email": subscriber.email,
                "unsubscribe_url": unsubscribe_url(self.settings, nid, sid),
                "preferences_url": preferences_url(self.settings, nid, sid),
            },
            unsubscribe_mailto=unsubscribe_mailto(self.settings, nid, sid),
        )

    def message_for(
        self, recipient: Recipient, variant: Variant, message_id: str | None = None
    ) -> Message:
        subscriber = recipient.subscriber
        sid, nid = subscriber.id or 0, self.newsletter.id
        unsubscribe = unsubscribe_url(self.settings, nid, sid)
        html, text = personalize(
            variant,
            locale=self.newsletter.locale,
            fields={
                "name": subscriber.name,
                "email": subscriber.email,
                "unsubscribe_url": unsubscribe,
                "preferences_url": preferences_url(self.settings, nid, sid),
            },
        )
        return build_message(
            newsletter=self.newsletter,
            settings=self.settings,
            to_addr=subscriber.email,
            to_name=subscriber.name,
            subject=variant.issue.subject,
            html=html,
            text=text,
            unsubscribe_url=unsubscribe,
            unsubscribe_mailto=unsubscribe_mailto(self.settings, nid, sid),
            now=self.now,
            message_id=message_id,
            issue_key=self.issue.key,
        )
