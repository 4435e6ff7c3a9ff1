"""`Idempotency-Key` on the creating POSTs: a retry gets the original response, once.

An ASGI middleware, so it sees the exact response a route produced. For a POST to one of
IDEMPOTENT_ROUTES carrying the header from an authenticated caller:

1. claim (caller's API key, idempotency key) in `idempotency_keys` with the request's
   fingerprint: the primary key lets exactly one of several concurrent requests win the claim;
2. the winner runs the route and stores its status and body; the others wait for that
   (up to WAIT_SECONDS, then 409) and replay it; a stored response is replayed for 24 h;
3. the same key with another fingerprint (route, query or body) is 422 naming the header.

Responses that a retry could change are not kept: 5xx and exceptions (the claim is dropped so
the retry runs again), 422 (fix the body and retry with the same key) and 429.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.asgi_io import read_body, replaying, send_response
from api.input_guard import PathTemplates
from core.infra.db import tenant_tx
from core.tenants.keys import lookup_key

HEADER = "Idempotency-Key"
# The creating POSTs, as OpenAPI path templates.
IDEMPOTENT_ROUTES = frozenset(
    {
        "/v1/tenants",
        "/v1/tenants/{tenant}/keys",
        "/v1/tenants/{tenant}/campaigns",
        "/v1/tenants/{tenant}/campaigns/{campaign_id}/runs",
        "/v1/tenants/{tenant}/campaigns/{campaign_id}:test-send",
        "/v1/tenants/{tenant}/suppressions",
    }
)
RETENTION = dt.timedelta(hours=24)
# A claim whose request has not finished by then (a crashed API process) may be taken over.
CLAIM_TIMEOUT = dt.timedelta(minutes=2)
WAIT_SECONDS = 30.0
MAX_KEY_LENGTH = 255
# Stored responses are small JSON; a larger one is passed through but not kept.
MAX_STORED_BYTES = 1024 * 1024
_ADMIN_SCOPE = "*"  # not a tenant slug, so admin keys share a scope no tenant can reach
_NOT_STORED = {422, 429}
_CLEANUP_EVERY_SECONDS = 600.0

_CLAIM_SQL = """
INSERT INTO idempotency_keys AS k (tenant_id, api_key_id, key, fingerprint, locked_until, expires_at)
VALUES ($1, $2, $3, $4, now() + $5::interval, now() + $6::interval)
ON CONFLICT (tenant_id, api_key_id, key) DO UPDATE
    SET fingerprint = EXCLUDED.fingerprint, status = NULL, content_type = NULL, body = NULL, nonce = NULL,
        locked_until = EXCLUDED.locked_until, expires_at = EXCLUDED.expires_at, created_at = now()
    WHERE k.expires_at <= now() OR (k.status IS NULL AND k.locked_until <= now())
RETURNING true
"""
_WHERE = "tenant_id = $1 AND api_key_id = $2 AND key = $3"
_EXISTING_SQL = f"SELECT fingerprint, status, content_type, body, nonce FROM idempotency_keys WHERE {_WHERE}"
_STORE_SQL = f"""
UPDATE idempotency_keys SET status = $5, content_type = $6, body = $7, nonce = $8
WHERE {_WHERE} AND fingerprint = $4 AND status IS NULL
"""
_RELEASE_SQL = f"DELETE FROM idempotency_keys WHERE {_WHERE} AND fingerprint = $4 AND status IS NULL"


@dataclass(frozen=True)
class _Claim:
    """One caller's use of one idempotency key for one request."""

    scope_id: str  # the row's tenant_id: the caller's tenant, or _ADMIN_SCOPE
    api_key_id: uuid.UUID
    key: str
    digest: str
    secret: str  # the caller's API key: seals the stored response

    @property
    def ids(self) -> tuple[str, uuid.UUID, str]:
        return self.scope_id, self.api_key_id, self.key


def seal(data: bytes, secret: str, key: str, nonce: bytes) -> bytes:
    """XOR `data` with a SHAKE-256 keystream keyed by the caller's API key, the idempotency key
    and a random nonce; sealing twice unseals. Stored responses can hold secrets (a new API key),
    and the table must not reveal what the api_keys table only holds hashed."""
    if not data:
        return data
    stream = hashlib.shake_256(b"\0".join((b"pennant-idempotency", secret.encode(), key.encode(), nonce)))
    pad = stream.digest(len(data))
    return (int.from_bytes(data, "big") ^ int.from_bytes(pad, "big")).to_bytes(len(data), "big")


def key_problem(key: str) -> str | None:
    """Why `key` is not a usable idempotency key, or None."""
    if not 1 <= len(key) <= MAX_KEY_LENGTH:
        return f"must be 1 to {MAX_KEY_LENGTH} characters"
    if not (key.isascii() and key.isprintable()):
        return "must be printable ASCII"
    return None


def fingerprint(method: str, path: str, query: bytes, body: bytes) -> str:
    """What makes two requests 'the same': route, query and body (JSON compared by value, so
    whitespace and key order do not matter)."""
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode() if body else b""
    except ValueError:
        canonical = body
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode("utf-8", "surrogateescape"), query, canonical):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def _error(message: str) -> bytes:
    problem = f"header.{HEADER}: {message}"
    return json.dumps({"detail": problem, "errors": [problem]}).encode()


class IdempotencyKeys:
    """ASGI middleware implementing `Idempotency-Key` for IDEMPOTENT_ROUTES."""

    def __init__(self, app: ASGIApp, fastapi_app: FastAPI) -> None:
        self.app = app
        self.templates = PathTemplates(fastapi_app)
        self._next_cleanup = 0.0

    @asynccontextmanager
    async def _conn(self, pool: asyncpg.Pool, claim: _Claim) -> AsyncIterator[Any]:
        # Every caller's rows go through row-level security like every tenant table; admin
        # keys' rows belong to the scope '*', which is no tenant's slug.
        async with tenant_tx(pool, claim.scope_id) as conn:
            yield conn

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        key = headers.get(HEADER.lower())
        found = self.templates.match(scope["path"], "POST") if key is not None else None
        if key is None or found is None or found[0] not in IDEMPOTENT_ROUTES:
            await self.app(scope, receive, send)
            return
        if problem := key_problem(key):
            await send_response(send, 422, _error(problem))
            return
        pool: asyncpg.Pool = scope["app"].state.pool
        scheme, _, token = headers.get("authorization", "").partition(" ")
        token = token.strip()
        principal = await lookup_key(pool, token) if scheme.lower() == "bearer" and token else None
        if principal is None or principal.key_id is None:  # the route answers 401; nothing is claimed
            await self.app(scope, receive, send)
            return
        body = await read_body(receive)
        if body is None:  # the client went away
            return
        claim = _Claim(
            scope_id=principal.tenant or _ADMIN_SCOPE,
            api_key_id=uuid.UUID(principal.key_id),
            key=key,
            digest=fingerprint("POST", scope["path"], scope.get("query_string", b""), body),
            secret=token,
        )
        await self._cleanup(pool)

        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            async with self._conn(pool, claim) as conn:
                mine = await conn.fetchval(_CLAIM_SQL, *claim.ids, claim.digest, CLAIM_TIMEOUT, RETENTION)
                existing = None if mine else await conn.fetchrow(_EXISTING_SQL, *claim.ids)
            if mine:
                await self._run(scope, receive, body, send, pool, claim)
                return
            if existing is None:  # released or expired between the two statements: claim again
                continue
            if existing["fingerprint"] != claim.digest:
                await send_response(
                    send, 422, _error("already used with a different request (route or body); send a new key")
                )
                return
            if existing["status"] is not None:
                stored = seal(existing["body"], claim.secret, claim.key, existing["nonce"])
                content_type = (existing["content_type"] or "application/json").encode("latin-1")
                await send_response(send, existing["status"], stored, content_type, [(b"idempotent-replayed", b"true")])
                return
            if time.monotonic() > deadline:
                await send_response(send, 409, _error("a request with this key is still in progress; retry later"))
                return
            # The first request is still running: wait for its response rather than run twice.
            await asyncio.sleep(0.05)

    async def _run(
        self, scope: Scope, receive: Receive, body: bytes, send: Send, pool: asyncpg.Pool, claim: _Claim
    ) -> None:
        status = 500
        content_type = "application/json"
        chunks: list[bytes] = []
        size = 0

        async def capture(message: Message) -> None:
            nonlocal status, content_type, size
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", []):
                    if name.lower() == b"content-type":
                        content_type = value.decode("latin-1")
            elif message["type"] == "http.response.body":
                size += len(message.get("body", b""))
                if size <= MAX_STORED_BYTES:
                    chunks.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, replaying(body, receive), capture)
        except BaseException:
            await _quietly(self._release(pool, claim))
            raise
        if status >= 500 or status in _NOT_STORED or size > MAX_STORED_BYTES:
            await self._release(pool, claim)
            return
        nonce = secrets.token_bytes(16)
        sealed = seal(b"".join(chunks), claim.secret, claim.key, nonce)
        async with self._conn(pool, claim) as conn:
            await conn.execute(_STORE_SQL, *claim.ids, claim.digest, status, content_type, sealed, nonce)

    async def _release(self, pool: asyncpg.Pool, claim: _Claim) -> None:
        async with self._conn(pool, claim) as conn:
            await conn.execute(_RELEASE_SQL, *claim.ids, claim.digest)

    async def _cleanup(self, pool: asyncpg.Pool) -> None:
        # Expired rows are dead weight only (a claim replaces them); sweep now and then.
        now = time.monotonic()
        if now < self._next_cleanup:
            return
        self._next_cleanup = now + _CLEANUP_EVERY_SECONDS
        await pool.execute("SELECT pennant_sweep_idempotency_keys()")


async def _quietly(work: Any) -> None:
    # Best effort while failing anyway: an unreleased claim expires after CLAIM_TIMEOUT.
    try:
        await asyncio.shield(work)
    except Exception:  # the original error is what matters
        pass


def install(app: FastAPI) -> None:
    """Add the middleware and document the header on the routes that honour it."""
    app.add_middleware(IdempotencyKeys, fastapi_app=app)
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = build()
        for path, operations in schema.get("paths", {}).items():
            if path in IDEMPOTENT_ROUTES and "post" in operations:
                operations["post"].setdefault("parameters", []).append(
                    {
                        "name": HEADER,
                        "in": "header",
                        "required": False,
                        "description": "retries with the same key get the first response (kept 24 h); "
                        "the same key with a different request is 422",
                        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH},
                    }
                )
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
