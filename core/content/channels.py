"""The channel registry: every fact about a channel in one place — where its address and
consent live on a customer, how its addresses compare, its template parts and limits, and its
renderer. Delivery, preview, test sends, save-time checks, segments and suppressions read it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, get_args

from core.content import templating
from core.content.templating import Part
from core.tenants.config_schema import ChannelName, EmailTemplate, PushTemplate, TemplateContent, WebhookTemplate


@dataclass(frozen=True)
class Channel:
    """What Pennant knows about one channel."""

    name: ChannelName
    # The customers column that holds the recipient's address on this channel. A webhook goes
    # to the tenant's own endpoint and names the recipient by the tenant's id for them.
    address_column: str
    # The customers column that records marketing consent, or None: the channel then reads
    # the boolean attribute `consent_<name>`.
    consent_column: str | None
    # Addresses compare case-insensitively (email) or exactly as given (trimmed).
    case_insensitive: bool
    # The template's parts, each with its output limit (see core.content.templating).
    parts: tuple[Part, ...]
    # (template, context, subject override) → the rendered content the adapter sends.
    render: Callable[[Any, dict[str, Any], str | None], Any]
    # template → (path suffix, source, part) of every template string in it, for checks.
    sources: Callable[[Any], list[tuple[str, str, Part]]]

    def address(self, customer: dict[str, Any]) -> str | None:
        """The customer's address on this channel, if any."""
        value = customer.get(self.address_column)
        return str(value) if value else None

    def consented(self, customer: dict[str, Any]) -> bool:
        """Whether the customer has given marketing consent on this channel."""
        if self.consent_column is not None:
            return bool(customer.get(self.consent_column))
        return bool((customer.get("attributes") or {}).get(f"consent_{self.name}"))

    def normalise(self, address: str) -> str:
        """The address as the suppression list stores and compares it."""
        address = address.strip()
        return address.lower() if self.case_insensitive else address

    def template(self, content: TemplateContent) -> Any:
        """This channel's part of a template (None when the template has none)."""
        return getattr(content, self.name)


def _email_sources(t: EmailTemplate) -> list[tuple[str, str, Part]]:
    found = [("subject", t.subject, templating.EMAIL_SUBJECT), ("html", t.html, templating.EMAIL_HTML)]
    return found + ([("text", t.text, templating.EMAIL_TEXT)] if t.text is not None else [])


def _push_sources(t: PushTemplate) -> list[tuple[str, str, Part]]:
    data = [(f"data.{k}", v, templating.PUSH_DATA) for k, v in t.data.items()]
    return [("title", t.title, templating.PUSH_TITLE), ("body", t.body, templating.PUSH_BODY), *data]


def _webhook_sources(t: WebhookTemplate) -> list[tuple[str, str, Part]]:
    return [(path, v, templating.WEBHOOK_VALUE) for path, v in templating.payload_strings(t.payload, "payload")]


CHANNELS: dict[str, Channel] = {
    c.name: c
    for c in (
        Channel(
            "email",
            "email",
            "consent_email",
            True,
            (templating.EMAIL_SUBJECT, templating.EMAIL_HTML, templating.EMAIL_TEXT),
            lambda t, ctx, subject: templating.render_email(t, ctx, subject_override=subject),
            _email_sources,
        ),
        Channel(
            "sms",
            "phone",
            "consent_sms",
            False,
            (templating.SMS_BODY,),
            lambda t, ctx, _: templating.render_sms(t, ctx),
            lambda t: [("body", t.body, templating.SMS_BODY)],
        ),
        Channel(
            "push",
            "push_token",
            "consent_push",
            False,
            (templating.PUSH_TITLE, templating.PUSH_BODY, templating.PUSH_DATA),
            lambda t, ctx, _: templating.render_push(t, ctx),
            _push_sources,
        ),
        Channel(
            "webhook",
            "external_id",
            None,
            False,
            (templating.WEBHOOK_VALUE,),
            lambda t, ctx, _: templating.render_webhook(t, ctx),
            _webhook_sources,
        ),
    )
}
assert set(CHANNELS) == set(get_args(ChannelName)), "every ChannelName needs a registry entry"


def channel(name: str) -> Channel:
    """The registry entry for `name` (KeyError for an unknown channel)."""
    return CHANNELS[name]


def message_key(tenant: str, run_id: str, customer_id: int, channel: str) -> str:
    """A message's identity and idempotency key: (tenant, run, recipient, channel). The ledger
    is unique on it and every provider receives it, so a retried send is recognised."""
    return f"{tenant}:{run_id}:{customer_id}:{channel}"


def parse_message_key(key: str) -> tuple[str, str, str, str] | None:
    """(tenant, run, recipient, channel) of a key `message_key` built, as text; None for any
    other shape (a provider may echo anything)."""
    parts = key.split(":")
    return (parts[0], parts[1], parts[2], parts[3]) if len(parts) == 4 else None
