"""Console sessions: a signed, HttpOnly, SameSite=Lax cookie naming the API key that signed in
(its id, never the key), the tenant being worked on and the session's CSRF token.

The key itself is checked once at sign-in (core/tenants/keys.py `lookup_key`); every later request
re-reads the key's row by id, so revoking the key ends its console sessions at once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from dataclasses import asdict, dataclass, replace
from typing import Any

import asyncpg

from core.infra.settings import Settings
from core.tenants.keys import Principal

COOKIE = "pennant_console"
# A session lasts a working day; signing in again is one paste of the key.
LIFETIME_SECONDS = 12 * 3600


@dataclass(frozen=True)
class Session:
    """Who signed in (the key's id, its tenant or None for an admin key), which tenant the
    console shows, and the CSRF token every form and console call must carry."""

    key_id: str
    key_tenant: str | None
    tenant: str | None
    csrf: str
    expires: float

    @property
    def principal(self) -> Principal:
        """The session as the API's caller: the same checks as a request with its key."""
        return Principal(tenant=self.key_tenant, key_id=self.key_id)

    @property
    def is_admin(self) -> bool:
        """Whether the session was opened with an admin key (which may pick any tenant)."""
        return self.key_tenant is None

    def with_tenant(self, tenant: str) -> Session:
        """The same session working on `tenant`."""
        return replace(self, tenant=tenant)


def signing_key(settings: Settings) -> bytes:
    """The HMAC key of session cookies: derived from the link-signing secret (or the admin key);
    random per process when neither is set (sessions then end with the process)."""
    secret = settings.link_signing_secret or settings.admin_key
    if not secret:
        return _PROCESS_SECRET
    return hashlib.sha256(b"pennant-console-session\0" + secret.encode()).digest()


_PROCESS_SECRET = secrets.token_bytes(32)


def new_session(principal: Principal) -> Session:
    """A fresh session for a verified key; a tenant key's session works on its own tenant."""
    assert principal.key_id is not None
    return Session(
        key_id=principal.key_id,
        key_tenant=principal.tenant,
        tenant=principal.tenant,
        csrf=secrets.token_urlsafe(24),
        expires=time.time() + LIFETIME_SECONDS,
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def encode(session: Session, key: bytes) -> str:
    """The cookie value: base64url JSON and its HMAC-SHA256."""
    body = _b64(json.dumps(asdict(session), separators=(",", ":")).encode())
    mac = _b64(hmac.new(key, body.encode(), hashlib.sha256).digest())
    return f"{body}.{mac}"


def decode(value: str | None, key: bytes) -> Session | None:
    """The session in a cookie value, or None when it is missing, forged or expired."""
    if not value or value.count(".") != 1:
        return None
    body, mac = value.split(".")
    expected = _b64(hmac.new(key, body.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(mac, expected):
        return None
    try:
        data: dict[str, Any] = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        session = Session(**data)
    except (ValueError, TypeError):
        return None
    return session if session.expires > time.time() else None


def csrf_ok(session: Session, presented: str | None) -> bool:
    """Whether a form's or header's token is the session's."""
    return presented is not None and hmac.compare_digest(session.csrf.encode(), presented.encode())


async def key_still_valid(pool: asyncpg.Pool, session: Session) -> bool:
    """Whether the session's key still exists for the same tenant and is not revoked."""
    try:
        uid = uuid.UUID(session.key_id)
    except ValueError:
        return False
    row = await pool.fetchrow("SELECT tenant_id, revoked_at FROM api_keys WHERE id = $1", uid)
    return row is not None and row["revoked_at"] is None and row["tenant_id"] == session.key_tenant


# Login CSRF: the sign-in form carries a token that must equal a pre-session cookie set with
# the form (double submit, signed so a cookie planted from elsewhere does not verify).
LOGIN_COOKIE = "pennant_console_login"
LOGIN_LIFETIME_SECONDS = 3600


def _login_mac(nonce: str, key: bytes) -> str:
    return _b64(hmac.new(key, b"pennant-console-login\0" + nonce.encode(), hashlib.sha256).digest())


def new_login_token(key: bytes) -> str:
    """A fresh sign-in form token: a random nonce and its HMAC."""
    nonce = secrets.token_urlsafe(18)
    return f"{nonce}.{_login_mac(nonce, key)}"


def login_token_valid(token: str | None, key: bytes) -> bool:
    """Whether `token` is one this console signed."""
    if not token or token.count(".") != 1:
        return False
    nonce, mac = token.split(".")
    return hmac.compare_digest(mac, _login_mac(nonce, key))


def login_token_ok(cookie: str | None, presented: str | None, key: bytes) -> bool:
    """Whether the sign-in form's token is the pre-session cookie's, and signed by this console."""
    if not cookie or not presented or not login_token_valid(cookie, key):
        return False
    return hmac.compare_digest(cookie.encode(), presented.encode())
