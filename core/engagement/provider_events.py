"""Provider events: delivery receipts, bounces and complaints from the email, SMS and push
providers, matched to the ledger, stored once in message_events, and turned into suppressions.

Two shapes come in (api/routes/provider_events.py reads them; the devstack SMTP sink and
provider simulator send them):

- email, SendGrid/Postmark-like: a JSON array of events, each `{"event": "delivered" | "bounce"
  | "spamreport" | "complaint", "event_id" (or "sg_event_id"), "timestamp" (unix seconds),
  "email", "message_id" (or "smtp-id": the message's Message-ID), "idempotency_key", "type":
  "hard" | "soft" (bounces; hard when absent)}`;
- sms and push, Twilio-status-callback-like: `MessageSid`, `MessageStatus` (`delivered`,
  `undelivered`, `failed`; others are ignored), `ErrorCode`, optional `IdempotencyKey`, as a form
  post (one event) or JSON (an object or an array of objects).

Events about messages sent through the platform's own provider accounts come to
`/v1/provider-events/{channel}`, signed with the platform's `provider_events_secret`; events about
messages a tenant sent through its own account (a channel endpoint it set) come to
`/v1/tenants/{t}/provider-events/{channel}`, signed with the tenant's own secret
TENANT_EVENTS_SECRET from its secret store. Each key matches only its own account's messages.
Both sign in the form of Pennant's outgoing webhooks (activities/channels/webhook_http.py) but
under a purpose of their own (SIGNING_PURPOSE).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Literal

import asyncpg
from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from core.common.signing import sign, verify
from core.content.channels import parse_message_key
from core.customers.suppressions import suppress
from core.infra.db import tenant_tx

Provider = Literal["email", "sms", "push"]
PROVIDERS: tuple[Provider, ...] = ("email", "sms", "push")
Kind = Literal["delivered", "bounce", "complaint"]

TIMESTAMP_HEADER = "X-Pennant-Timestamp"
SIGNATURE_HEADER = "X-Pennant-Signature"
# Older than this (or as far in the future) and a signed request is refused as a replay.
TOLERANCE_SECONDS = 300
MAX_EVENTS = 1000
# The secret, in a tenant's own store, that signs events from its own provider accounts.
TENANT_EVENTS_SECRET = "PROVIDER_EVENTS_SECRET"
# Provider-event signatures are domain-separated from outgoing webhook signatures: a payload a
# tenant's webhook channel signed is never a valid provider event, whatever secret it used.
SIGNING_PURPOSE = "pennant-provider-event-v1"

_EMAIL_KINDS: dict[str, Kind] = {
    "delivered": "delivered",
    "bounce": "bounce",
    "bounced": "bounce",
    "spamreport": "complaint",
    "complaint": "complaint",
}
# Twilio error codes that say the number can never receive messages; any other failure is soft.
HARD_STATUS_ERRORS = frozenset({"21211", "21610", "21612", "21614", "30005", "30006", "UNREGISTERED"})


class EmailEvent(BaseModel):
    """One event of an email provider's event webhook (SendGrid/Postmark-like)."""

    # Providers send many more fields than these; they are not ours to refuse.
    model_config = ConfigDict(extra="allow")

    event: str = Field(min_length=1, max_length=64)
    event_id: str = Field(min_length=1, max_length=255, validation_alias=AliasChoices("event_id", "sg_event_id"))
    timestamp: dt.datetime | None = None
    email: str | None = Field(default=None, max_length=320)
    message_id: str | None = Field(
        default=None, max_length=998, validation_alias=AliasChoices("message_id", "smtp-id", "MessageID")
    )
    idempotency_key: str | None = Field(default=None, max_length=500)
    type: Literal["hard", "soft"] | None = None
    reason: str | None = Field(default=None, max_length=2000)


class StatusCallback(BaseModel):
    """One status callback of an SMS or push provider (Twilio-like)."""

    model_config = ConfigDict(extra="allow")

    MessageSid: str = Field(min_length=1, max_length=255)
    MessageStatus: str = Field(min_length=1, max_length=32)
    ErrorCode: str | None = Field(default=None, max_length=64)
    IdempotencyKey: str | None = Field(default=None, max_length=500)
    Timestamp: dt.datetime | None = None


@dataclass(frozen=True)
class ProviderEvent:
    """One event in Pennant's terms; `kind` None means a status Pennant does not record."""

    dedupe_key: str
    # The provider's own name for the event (its event id, or the message sid of a status).
    source_id: str
    kind: Kind | None
    bounce_type: Literal["hard", "soft"] | None
    occurred_at: dt.datetime
    idempotency_key: str | None
    provider_message_id: str | None


@dataclass
class Outcome:
    """What one request's events came to (the endpoint's answer)."""

    received: int = 0
    stored: int = 0
    duplicates: int = 0
    # Acknowledged but not recorded: no ledger row of ours (unmatched) or a status we do not track.
    unmatched: int = 0
    unsupported: int = 0
    suppressed: int = 0
    # Which events matched no message: a provider may report before the sender has recorded
    # the message, and can try those again later.
    unmatched_ids: list[str] = field(default_factory=list)

    @property
    def ignored(self) -> int:
        """Events acknowledged without being stored."""
        return self.unmatched + self.unsupported


def _aware(moment: dt.datetime | None) -> dt.datetime:
    if moment is None:
        return dt.datetime.now(dt.UTC)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def email_events(events: list[EmailEvent]) -> list[ProviderEvent]:
    """Email provider events in Pennant's terms."""
    out = []
    for e in events:
        kind = _EMAIL_KINDS.get(e.event.lower())
        bounce_type = (e.type or "hard") if kind == "bounce" else None
        out.append(
            ProviderEvent(
                f"email:{e.event_id}",
                e.event_id,
                kind,
                bounce_type,
                _aware(e.timestamp),
                e.idempotency_key,
                e.message_id,
            )
        )
    return out


def status_events(provider: Provider, callbacks: list[StatusCallback]) -> list[ProviderEvent]:
    """SMS or push status callbacks in Pennant's terms."""
    # A message reaches each status once, so (message, status) names the event.
    out = []
    for c in callbacks:
        status = c.MessageStatus.lower()
        kind: Kind | None = None
        bounce_type: Literal["hard", "soft"] | None = None
        if status == "delivered":
            kind = "delivered"
        elif status in ("undelivered", "failed"):
            kind = "bounce"
            bounce_type = "hard" if (c.ErrorCode or "").strip() in HARD_STATUS_ERRORS else "soft"
        out.append(
            ProviderEvent(
                f"{provider}:{c.MessageSid}:{status}",
                c.MessageSid,
                kind,
                bounce_type,
                _aware(c.Timestamp),
                c.IdempotencyKey,
                c.MessageSid,
            )
        )
    return out


def _parse_key(key: str, channel: str) -> tuple[str, uuid.UUID, int] | None:
    """(tenant, run, customer) of a message key (core.content.channels.message_key) on `channel`."""
    parts = parse_message_key(key)
    if parts is None or parts[3] != channel:
        return None
    try:
        run_id, customer_id = uuid.UUID(parts[1]), int(parts[2])
    except ValueError:
        return None
    if not 0 < customer_id < 2**63:
        return None
    return parts[0], run_id, customer_id


@dataclass(frozen=True)
class _Message:
    tenant: str
    run_id: uuid.UUID
    customer_id: int
    address: str | None


def _unambiguous(rows: list[Any]) -> dict[str, _Message]:
    """Provider message id → its message, leaving out an id that names more than one message:
    a provider's id is unique within its account, so a repeated one proves nothing (an endpoint
    that answers every message with the same id) and matches none of them."""
    messages: dict[str, _Message] = {}
    repeated: set[str] = set()
    for r in rows:
        pid = r["provider_message_id"]
        if pid in messages:
            repeated.add(pid)
        messages[pid] = _Message(r["tenant_id"], r["run_id"], r["customer_id"], r["address"])
    for pid in repeated:
        del messages[pid]
    return messages


def _split(
    events: list[ProviderEvent], channel: str, tenant: str | None = None
) -> tuple[dict[int, tuple[str, uuid.UUID, int]], dict[int, str]]:
    """The events to look up by Pennant's message key (of `tenant`'s messages when given), and
    the rest by the provider's message id: index → (tenant, run, customer) and index → id."""
    keyed = {
        i: p
        for i, e in enumerate(events)
        if e.idempotency_key and (p := _parse_key(e.idempotency_key, channel)) and (tenant is None or p[0] == tenant)
    }
    by_id = {i: e.provider_message_id for i, e in enumerate(events) if i not in keyed and e.provider_message_id}
    return keyed, by_id


def _matched(keyed_rows: list[Any], by_id: dict[int, str], id_rows: list[Any]) -> dict[int, _Message]:
    """Index of each event → its message, from the rows found by key (carrying the event's index
    `i`) and by provider message id."""
    found = {r["i"]: _Message(r["tenant_id"], r["run_id"], r["customer_id"], r["address"]) for r in keyed_rows}
    messages = _unambiguous(id_rows)
    for i, pid in by_id.items():
        if pid in messages:
            found[i] = messages[pid]
    return found


async def _match(pool: asyncpg.Pool, channel: str, events: list[ProviderEvent]) -> dict[int, _Message]:
    """Index of each event → the platform-account ledger row of the message it is about."""
    keyed, by_id = _split(events, channel)
    keyed_rows: list[Any] = []
    id_rows: list[Any] = []
    # Outside a tenant transaction on purpose: the event names no tenant we may trust before
    # the ledger does, and a provider's message id can only be found across tenants. The app
    # role reads no tenant's rows outside one: these are the owner's narrow functions (048).
    async with pool.acquire() as conn:
        if keyed:
            keyed_rows = await conn.fetch(
                """SELECT i, tenant_id, run_id, customer_id, address
                   FROM pennant_messages_by_key($5, $1::int[], $2::text[], $3::uuid[], $4::bigint[])""",
                list(keyed),
                [p[0] for p in keyed.values()],
                [p[1] for p in keyed.values()],
                [p[2] for p in keyed.values()],
                channel,
            )
        if by_id:
            id_rows = await conn.fetch(
                """SELECT tenant_id, run_id, customer_id, address, provider_message_id
                   FROM pennant_messages_by_provider_id($2, $1::text[])""",
                list(set(by_id.values())),
                channel,
            )
    return _matched(keyed_rows, by_id, id_rows)


async def _match_own(pool: asyncpg.Pool, tenant: str, channel: str, events: list[ProviderEvent]) -> dict[int, _Message]:
    """Index of each event → the ledger row of one of `tenant`'s messages sent through its own
    provider account: read inside the tenant's transaction, so no other tenant's row can match."""
    keyed, by_id = _split(events, channel, tenant)
    keyed_rows: list[Any] = []
    id_rows: list[Any] = []
    async with tenant_tx(pool, tenant) as conn:
        if keyed:
            keyed_rows = await conn.fetch(
                """SELECT k.i, d.tenant_id, d.run_id, d.customer_id, d.address
                   FROM unnest($1::int[], $2::uuid[], $3::bigint[]) AS k(i, run_id, customer_id)
                   JOIN deliveries d ON d.tenant_id = $4 AND d.run_id = k.run_id AND d.customer_id = k.customer_id
                                    AND d.channel = $5
                   WHERE d.status = 'sent' AND d.provider_account = 'tenant'""",
                list(keyed),
                [p[1] for p in keyed.values()],
                [p[2] for p in keyed.values()],
                tenant,
                channel,
            )
        if by_id:
            id_rows = await conn.fetch(
                """SELECT tenant_id, run_id, customer_id, address, provider_message_id FROM deliveries
                   WHERE tenant_id = $1 AND provider_message_id = ANY($2::text[]) AND channel = $3
                     AND status = 'sent' AND provider_account = 'tenant'""",
                tenant,
                list(set(by_id.values())),
                channel,
            )
    return _matched(keyed_rows, by_id, id_rows)


async def record(
    pool: asyncpg.Pool, channel: Provider, events: list[ProviderEvent], tenant: str | None = None
) -> Outcome:
    """Store each event against its message once; a hard bounce or complaint suppresses the address.

    Without `tenant`, the events came signed with the platform's key and match only messages sent
    through the platform's accounts; with it, they came signed with that tenant's own key and match
    only its messages sent through its own accounts."""
    # A replayed event id is ignored by the unique dedupe key; only a new one suppresses.
    outcome = Outcome(received=len(events))
    tracked = [e for e in events if e.kind is not None]
    outcome.unsupported = len(events) - len(tracked)
    matched = await (_match(pool, channel, tracked) if tenant is None else _match_own(pool, tenant, channel, tracked))
    outcome.unmatched = len(tracked) - len(matched)
    outcome.unmatched_ids = [e.source_id for i, e in enumerate(tracked) if i not in matched][:MAX_EVENTS]
    per_tenant: dict[str, list[tuple[ProviderEvent, _Message]]] = defaultdict(list)
    for i, message in matched.items():
        per_tenant[message.tenant].append((tracked[i], message))
    for tenant, pairs in sorted(per_tenant.items()):
        async with tenant_tx(pool, tenant) as conn:
            inserted = await conn.fetch(
                """INSERT INTO message_events
                       (tenant_id, run_id, customer_id, channel, kind, bounce_type, occurred_at, dedupe_key)
                   SELECT $1, run_id, customer_id, $2, kind, bounce_type, occurred_at, dedupe_key
                   FROM unnest($3::uuid[], $4::bigint[], $5::text[], $6::text[], $7::timestamptz[], $8::text[])
                        AS e(run_id, customer_id, kind, bounce_type, occurred_at, dedupe_key)
                   ON CONFLICT (tenant_id, dedupe_key) WHERE dedupe_key IS NOT NULL DO NOTHING
                   RETURNING dedupe_key""",
                tenant,
                channel,
                [m.run_id for _, m in pairs],
                [m.customer_id for _, m in pairs],
                [e.kind for e, _ in pairs],
                [e.bounce_type for e, _ in pairs],
                [e.occurred_at for e, _ in pairs],
                [e.dedupe_key for e, _ in pairs],
            )
            new = {r["dedupe_key"] for r in inserted}
            outcome.stored += len(new)
            outcome.duplicates += len(pairs) - len(new)
            for event, message in pairs:
                if event.dedupe_key not in new or not message.address:
                    continue
                reason = "complaint" if event.kind == "complaint" else "bounce" if event.bounce_type == "hard" else None
                if reason is not None and await suppress(conn, tenant, channel, message.address, reason):
                    outcome.suppressed += 1
    return outcome


def signed_headers(secret: str, body: bytes, timestamp: str) -> dict[str, str]:
    """The signature headers a provider sends with `body` (what the devstack emitters send)."""
    return {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: sign(secret, timestamp, body, SIGNING_PURPOSE)}


def check_signature(
    secret: str | None, headers: Any, body: bytes, unset: str = "setting PROVIDER_EVENTS_SECRET"
) -> str | None:
    """Why a request's signature is refused, or None when it is good and fresh."""
    if not secret:
        return f"provider events are not configured ({unset})"
    timestamp, signature = headers.get(TIMESTAMP_HEADER), headers.get(SIGNATURE_HEADER)
    if not timestamp or not signature:
        return f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} header"
    if not verify(secret, timestamp, body, signature, TOLERANCE_SECONDS, SIGNING_PURPOSE):
        return f"bad signature or a timestamp more than {TOLERANCE_SECONDS} s from now"
    return None
