"""The test-send workflow's input and output: model modules only, so the workflow imports no
renderer or database driver (core/campaigns/preview.py and activities/testsend.py do the work)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from core.tenants.config_schema import EmailAddress


class TestSendInput(BaseModel):
    """Send one campaign's rendered email to seed addresses; the ledger is not involved."""

    tenant: str
    campaign_id: str
    send_id: str  # one per request, so a retried send reuses its idempotency keys
    emails: list[EmailAddress] = Field(min_length=1, max_length=20)
    variants: list[str] = Field(min_length=1)
    customer_id: int | None = None


class TestSendMessage(BaseModel):
    """The outcome of one test email."""

    email: str
    variant: str
    status: str  # sent | failed
    reason: str | None = None
    message_id: str | None = None


class TestSendResult(BaseModel):
    """Whose data filled a test send, and each message's outcome."""

    customer_id: int | None  # whose data filled the templates; None for the placeholder
    messages: list[TestSendMessage]
