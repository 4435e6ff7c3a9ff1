"""The signed endpoints providers post delivery receipts, bounces and complaints to.

`POST /v1/provider-events/{email|sms|push}`, signed with the platform's provider-events secret,
for messages sent through the platform's provider accounts; `POST
/v1/tenants/{t}/provider-events/{email|sms|push}`, signed with the tenant's own
`PROVIDER_EVENTS_SECRET` (from its secret store), for messages it sent through its own accounts
(see core/engagement/provider_events.py for the shapes and the scheme). Unsigned, forged or stale → 401;
malformed → 422 naming the field; otherwise 200 with what became of the events. Events about
messages Pennant does not know are acknowledged (a provider retries anything but a 2xx) and
counted as ignored.
"""

from __future__ import annotations

import json
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import Field, TypeAdapter, ValidationError

from api.deps import PoolDep, SecretsDep, SettingsDep
from api.schemas import ProviderEventsAnswer
from core.engagement.provider_events import (
    MAX_EVENTS,
    TENANT_EVENTS_SECRET,
    EmailEvent,
    Provider,
    ProviderEvent,
    StatusCallback,
    check_signature,
    email_events,
    record,
    status_events,
)
from core.security.secrets import SecretUnavailable
from core.tenants.config_schema import SLUG_RE

router = APIRouter(tags=["provider events"])

_EMAIL = TypeAdapter(Annotated[list[EmailEvent], Field(max_length=MAX_EVENTS)])
_STATUS = TypeAdapter(Annotated[list[StatusCallback], Field(max_length=MAX_EVENTS)])


def _invalid(exc: ValidationError, wrap: bool = False) -> RequestValidationError:
    """The validation errors located under `body` (a single form event is `body.<field>`)."""
    errors = []
    for err in exc.errors(include_url=False):
        loc = err.get("loc", ())
        if wrap and loc and loc[0] == 0:
            loc = loc[1:]
        errors.append({**err, "loc": ("body", *loc)})
    return RequestValidationError(errors)


def _not_json(reason: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ("body",), "msg": reason, "type": "value_error"}])


def _status_callbacks(body: bytes, content_type: str) -> list[StatusCallback]:
    """Callbacks from a form post (one, as Twilio sends them) or JSON (an object or an array)."""
    wrap = True
    parsed: Any
    if "json" in content_type:
        try:
            parsed = json.loads(body)
        except ValueError as exc:
            raise _not_json(f"not JSON ({exc})") from None
        if isinstance(parsed, dict):
            parsed = [parsed]
        elif isinstance(parsed, list):
            wrap = False
        else:
            raise _not_json("expected a JSON object or an array of objects")
    else:
        try:
            form = parse_qs(body.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            raise _not_json("form body is not UTF-8") from None
        parsed = [{name: values[-1] for name, values in form.items()}]
    try:
        return _STATUS.validate_python(parsed)
    except ValidationError as exc:
        raise _invalid(exc, wrap) from None


def _events(provider: Provider, body: bytes, content_type: str) -> list[ProviderEvent]:
    if provider == "email":
        try:
            return email_events(_EMAIL.validate_json(body))
        except ValidationError as exc:
            raise _invalid(exc) from None
    return status_events(provider, _status_callbacks(body, content_type))


@router.post("/v1/provider-events/{provider}", response_model=ProviderEventsAnswer, include_in_schema=False)
async def receive_provider_events(
    provider: Provider, request: Request, pool: PoolDep, settings: SettingsDep
) -> ProviderEventsAnswer:
    """Record a provider's signed events against the messages they are about."""
    # Left out of the OpenAPI document: providers, not API clients, call it, with a signature
    # instead of an API key.
    body = await request.body()
    refusal = check_signature(settings.provider_events_secret, request.headers, body)
    if refusal is not None:
        raise HTTPException(401, refusal)
    outcome = await record(pool, provider, _events(provider, body, request.headers.get("content-type", "").lower()))
    return ProviderEventsAnswer.model_validate(outcome, from_attributes=True)


@router.post(
    "/v1/tenants/{tenant}/provider-events/{provider}", response_model=ProviderEventsAnswer, include_in_schema=False
)
async def receive_tenant_provider_events(
    tenant: str, provider: Provider, request: Request, pool: PoolDep, secrets: SecretsDep
) -> ProviderEventsAnswer:
    """Record events from a tenant's own provider account, signed with the tenant's own secret;
    they match only that tenant's messages sent through its own accounts."""
    body = await request.body()
    secret = None
    if SLUG_RE.match(tenant):
        try:
            secret = await secrets.resolve(tenant, f"secret:{TENANT_EVENTS_SECRET}", "provider events")
        except SecretUnavailable:
            secret = None
    # The same answer for an unknown tenant as for one without the secret: nothing to enumerate.
    refusal = check_signature(secret, request.headers, body, f"the tenant's secret {TENANT_EVENTS_SECRET}")
    if refusal is not None:
        raise HTTPException(401, refusal)
    events = _events(provider, body, request.headers.get("content-type", "").lower())
    outcome = await record(pool, provider, events, tenant=tenant)
    return ProviderEventsAnswer.model_validate(outcome, from_attributes=True)
