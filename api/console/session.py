"""Console sessions: a signed, HttpOnly, SameSite=Lax cookie naming the session's server-side
row, the API key that signed in (its id, never the key), the tenant being worked on and the
session's CSRF token.

The key itself is checked once at sign-in (core/tenants/keys.py `lookup_key`); every later request
re-reads the key's row by id and the session's row (migration 050), so revoking the key or signing
out ends the session everywhere: a copied cookie is dead once its row is revoked. The cookie is
signed with CONSOLE_SESSION_SECRET, a key shared with nothing else.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import secrets
import time
import uuid
from dataclasses import asdict, dataclass, replace
from typing import Any

import asyncpg
from fastapi import Request

from core.infra.db import tenant_tx
from core.infra.settings import Settings
from core.tenants.keys import Principal

COOKIE = "pennant_console"
# A session lasts a working day; signing in again is one paste of the key.
LIFETIME_SECONDS = 12 * 3600


@dataclass(frozen=True)
class Session:
    """Who signed in (the key's id, its tenant or None for an admin key), which tenant the
    console shows, and the CSRF token every form and console call must carry."""

    id: str
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
    """The HMAC key of session cookies and sign-in forms: derived from CONSOLE_SESSION_SECRET only
    (never the link-signing secret or the admin key, so a leak of either forges no session); random
    per process when unset, which only `pennant_env=dev` allows (sessions then end with the process)."""
    secret = settings.console_session_secret
    if not secret:
        return _PROCESS_SECRET
    return hashlib.sha256(b"pennant-console-session\0" + secret.encode()).digest()


_PROCESS_SECRET = secrets.token_bytes(32)


def new_session(principal: Principal) -> Session:
    """A fresh session for a verified key; a tenant key's session works on its own tenant.
    Not valid until `record`ed."""
    assert principal.key_id is not None
    return Session(
        id=str(uuid.uuid4()),
        key_id=principal.key_id,
        key_tenant=principal.tenant,
        tenant=principal.tenant,
        csrf=secrets.token_urlsafe(24),
        expires=time.time() + LIFETIME_SECONDS,
    )


def secure_cookies(request: Request, settings: Settings) -> bool:
    """Whether cookies set on this request are `Secure`: the CONSOLE_SECURE_COOKIES setting when
    set, else whether the request came over TLS as uvicorn sees it (its scheme follows a trusted
    proxy's X-Forwarded-Proto; FORWARDED_ALLOW_IPS says which proxies are trusted)."""
    if settings.console_secure_cookies is not None:
        return settings.console_secure_cookies
    return request.url.scheme == "https"


async def record(pool: asyncpg.Pool, session: Session) -> None:
    """Store the session's row: a tenant key's in its tenant's table (inside tenant_tx), an admin
    key's in the platform table."""
    expires = dt.datetime.fromtimestamp(session.expires, dt.UTC)
    if session.key_tenant is None:
        await pool.execute(
            "INSERT INTO console_admin_sessions (id, key_id, expires_at) VALUES ($1, $2, $3)",
            uuid.UUID(session.id), uuid.UUID(session.key_id), expires,
        )  # fmt: skip
        return
    async with tenant_tx(pool, session.key_tenant) as conn:
        # Ended sessions are kept a day (when and how each ended), then go as the tenant signs in.
        await conn.execute(
            "DELETE FROM console_sessions WHERE tenant_id = $1 AND expires_at < now() - interval '1 day'",
            session.key_tenant,
        )
        await conn.execute(
            "INSERT INTO console_sessions (tenant_id, id, key_id, expires_at) VALUES ($1, $2, $3, $4)",
            session.key_tenant, uuid.UUID(session.id), uuid.UUID(session.key_id), expires,
        )  # fmt: skip


async def session_live(pool: asyncpg.Pool, session: Session) -> bool:
    """Whether the session's row exists for the same key, unrevoked and unexpired."""
    try:
        sid, kid = uuid.UUID(session.id), uuid.UUID(session.key_id)
    except ValueError:
        return False
    live = "revoked_at IS NULL AND expires_at > now()"
    if session.key_tenant is None:
        found = await pool.fetchval(
            f"SELECT 1 FROM console_admin_sessions WHERE id = $1 AND key_id = $2 AND {live}", sid, kid
        )
    else:
        async with tenant_tx(pool, session.key_tenant) as conn:
            found = await conn.fetchval(
                f"SELECT 1 FROM console_sessions WHERE tenant_id = $1 AND id = $2 AND key_id = $3 AND {live}",
                session.key_tenant, sid, kid,
            )  # fmt: skip
    return found is not None


async def end(pool: asyncpg.Pool, session: Session) -> None:
    """Sign out: the session's row is revoked, so its cookie (and every copy of it) is refused."""
    sid = uuid.UUID(session.id)
    if session.key_tenant is None:
        await pool.execute(
            "UPDATE console_admin_sessions SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL", sid
        )
        return
    async with tenant_tx(pool, session.key_tenant) as conn:
        await conn.execute(
            "UPDATE console_sessions SET revoked_at = now() WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL",
            session.key_tenant, sid,
        )  # fmt: skip


async def end_tenant_sessions(pool: asyncpg.Pool, tenant: str) -> int:
    """End every console session opened with `tenant`'s keys (removing a tenant); how many."""
    async with tenant_tx(pool, tenant) as conn:
        done: str = await conn.execute(
            "UPDATE console_sessions SET revoked_at = now() WHERE tenant_id = $1 AND revoked_at IS NULL", tenant
        )
    return int(done.split()[-1])


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


async def still_valid(pool: asyncpg.Pool, session: Session) -> bool:
    """Whether the session may act: its key still exists for the same tenant unrevoked, and the
    session itself has not been signed out (nor expired) server-side."""
    return await key_still_valid(pool, session) and await session_live(pool, session)


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
