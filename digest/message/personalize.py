"""Issue + a reader's cut → Variant → Message: each recipient's message, the MJML
compiled once per distinct content (the reader's articles and their locale); per
recipient only the personal fields are filled in.

A reader's locale (:func:`digest.core.i18n.reader_locale`: their own, else the
newsletter's) decides every text of ours in their message: the greeting, the labels, the
week and the dates, and the language of the pages their links open. The variant cache is
keyed by what a variant shows, not by the choices that led there: readers whose
categories and regions give the same articles share one variant per locale.
"""

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
from digest.core.i18n import reader_locale
from digest.core.models import Issue, Message, Recipient, Rule, Subscriber, Variant
from digest.issue.compose import content_key, localize_issue, render_subject
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
        self._by_choice: dict[tuple[tuple[Rule, ...], str], Variant | None] = {}
        self._localized: dict[str, Issue] = {}
        self._prepared: dict[str, PreparedVariant] = {}

    @property
    def variants(self) -> int:
        """How many variants were compiled: one per distinct (articles, locale)."""
        return len(self._variants)

    def locale_of(self, subscriber: Subscriber) -> str:
        """The locale of every text of ours this subscriber gets."""
        return reader_locale(subscriber.locale, self.newsletter.locale)

    def variant_for(self, recipient: Recipient) -> Variant | None:
        """The rendered variant this recipient shares with others, or None if empty."""
        # The cut depends on the recipient's rules and locale only: readers with the
        # same ones share it, so it is cut once for them all.
        choice = (recipient.rules, self.locale_of(recipient.subscriber))
        if choice in self._by_choice:
            return self._by_choice[choice]
        found = self._variant_for(recipient, choice[1])
        self._by_choice[choice] = found
        return found

    def _issue_in(self, locale: str) -> Issue:
        """The whole issue with its labels and subject in ``locale``, made once."""
        if locale == (self.issue.locale or self.newsletter.locale):
            return self.issue
        found = self._localized.get(locale)
        if found is None:
            found = self._localized[locale] = localize_issue(self.newsletter, self.issue, locale)
        return found

    def _variant_for(self, recipient: Recipient, locale: str) -> Variant | None:
        cut = cut_for(self._issue_in(locale), recipient)
        if cut.is_empty:
            return None
        # The key of what the reader sees: their articles and the locale (the subject
        # follows from both), whichever choices led there.
        key = content_key(cut)
        if key not in self._variants:
            cut = replace(cut, subject=render_subject(self.newsletter, cut))
            self._variants[key] = render_variant(
                self.settings, self.newsletter, cut, archive=self.archive, clicks=self.clicks
            )
        return self._variants[key]

    def _links(self, subscriber: Subscriber, variant: Variant) -> dict[str, str]:
        """The personal fields of ``subscriber``'s message; their links name the locale
        of the variant when it is not the newsletter's, so the pages speak it too."""
        sid, nid = subscriber.id or 0, self.newsletter.id
        locale = variant.issue.locale or self.newsletter.locale
        own = locale if locale != self.newsletter.locale else None
        return {
            "name": subscriber.name,
            "email": subscriber.email,
            "unsubscribe_url": unsubscribe_url(self.settings, nid, sid, locale=own),
            "preferences_url": preferences_url(self.settings, nid, sid, locale=own),
        }

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
            fields=self._links(subscriber, variant),
            unsubscribe_mailto=unsubscribe_mailto(self.settings, nid, sid),
        )

    def message_for(
        self, recipient: Recipient, variant: Variant, message_id: str | None = None
    ) -> Message:
        subscriber = recipient.subscriber
        sid, nid = subscriber.id or 0, self.newsletter.id
        fields = self._links(subscriber, variant)
        unsubscribe = fields["unsubscribe_url"]
        html, text = personalize(
            variant, locale=variant.issue.locale or self.newsletter.locale, fields=fields
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
