"""Each tenant's secrets: stored encrypted, written and listed through the API, never read back
through it, and resolved at send time only within the tenant that owns them.

A tenant config names a secret as `secret:NAME` (`channels.<c>.credentials.<k>`,
`suggestions.provider.api_key`). The value is encrypted with AES-256-GCM under the current key of
the platform keyring (`SECRETS_KEYRING`); the associated data binds (tenant, name, key id), so a
row copied to another tenant or name, or relabelled with another key id, fails authentication
instead of decrypting. Rotation: put a new key first in the keyring; new writes use it, and rows
under the older keys still decrypt until `pennant tenants secrets rotate` rewrites them.

What this replaces: `env:NAME` references, which let a tenant name any process environment
variable (the admin key included). Stored config versions may still hold `env:` references, for
history and diff; they never resolve.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import os
import re
import secrets as _random
import time
from dataclasses import dataclass
from typing import Literal

import asyncpg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import BaseModel, Field

from core.infra.db import TenantConn, tenant_tx
from core.tenants.config_schema import LEGACY_SECRET_PREFIX, TenantConfig

SECRET_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
SECRET_REF_RE = re.compile(r"^secret:([A-Za-z][A-Za-z0-9_]{0,63})$")
# A provider token or signing secret is well under this; the cap keeps a row (and a decrypt) small.
MAX_SECRET_BYTES = 8192
# Resolved values are kept this long per worker/API process: a rotated secret is used within it.
RESOLVE_TTL_SECONDS = 10.0
_KEY_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_NONCE_BYTES = 12


class KeyringError(ValueError):
    """SECRETS_KEYRING is missing or malformed; the message names the setting, never a key."""


class SecretUnavailable(Exception):
    """A `secret:` reference that cannot be resolved; the message names where and why, never a value."""


@dataclass(frozen=True)
class Keyring:
    """The platform's secret-encryption keys, current first: `kid:base64(32 bytes)[,kid:…]`."""

    keys: tuple[tuple[str, bytes], ...]

    @classmethod
    def parse(cls, text: str | None) -> Keyring:
        """The keyring from its setting's text; KeyringError naming what is wrong."""
        if not text or not text.strip():
            raise KeyringError("SECRETS_KEYRING is not set (generate one with `pennant tenants secrets new-key`)")
        keys: list[tuple[str, bytes]] = []
        for n, entry in enumerate(e.strip() for e in text.split(",") if e.strip()):
            kid, sep, encoded = entry.partition(":")
            if not sep or not _KEY_ID_RE.match(kid):
                raise KeyringError(f"SECRETS_KEYRING entry {n + 1}: expected <key id>:<base64 of 32 bytes>")
            try:
                key = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
            except (binascii.Error, ValueError):
                raise KeyringError(f"SECRETS_KEYRING entry {n + 1} ({kid}): not base64") from None
            if len(key) != 32:
                raise KeyringError(f"SECRETS_KEYRING entry {n + 1} ({kid}): the key must be 32 bytes")
            if any(k == kid for k, _ in keys):
                raise KeyringError(f"SECRETS_KEYRING: key id {kid} appears twice")
            keys.append((kid, key))
        if not keys:
            raise KeyringError("SECRETS_KEYRING has no key")
        return cls(tuple(keys))

    @staticmethod
    def new_entry(kid: str | None = None) -> str:
        """A fresh keyring entry (`kid:key`) to put first in SECRETS_KEYRING."""
        kid = kid or dt.datetime.now(dt.UTC).strftime("k%Y%m%d%H%M%S")
        return f"{kid}:{base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip('=')}"

    @property
    def current_id(self) -> str:
        """The key id new writes use."""
        return self.keys[0][0]

    def _key(self, kid: str) -> bytes:
        for k, key in self.keys:
            if k == kid:
                return key
        raise SecretUnavailable(f"encrypted under key {kid}, which is not in SECRETS_KEYRING")

    @staticmethod
    def _aad(tenant: str, name: str, kid: str) -> bytes:
        return b"\0".join((b"pennant-secret-v1", tenant.encode(), name.encode(), kid.encode()))

    def encrypt(self, tenant: str, name: str, value: str) -> tuple[str, bytes, bytes]:
        """(key id, nonce, ciphertext) for `value` under the current key."""
        kid, key = self.keys[0]
        nonce = os.urandom(_NONCE_BYTES)
        return kid, nonce, AESGCM(key).encrypt(nonce, value.encode(), self._aad(tenant, name, kid))

    def decrypt(self, tenant: str, name: str, kid: str, nonce: bytes, ciphertext: bytes) -> str:
        """The value; SecretUnavailable when the row does not belong to (tenant, name, kid)."""
        try:
            plain = AESGCM(self._key(kid)).decrypt(nonce, ciphertext, self._aad(tenant, name, kid))
        except InvalidTag:
            raise SecretUnavailable("does not decrypt for this tenant and name") from None
        return plain.decode()

    def fingerprint(self, tenant: str, name: str, value: str) -> str:
        """A short HMAC of the value under a key derived from the current one: equal values show
        equal fingerprints within a tenant and name; a plain hash would let anyone test guesses."""
        derived = hmac.new(self.keys[0][1], b"pennant-secret-fingerprint-v1", hashlib.sha256).digest()
        mac = hmac.new(derived, b"\0".join((tenant.encode(), name.encode(), value.encode())), hashlib.sha256)
        return mac.hexdigest()[:16]


class SecretInfo(BaseModel):
    """What the API shows of a secret: never its value."""

    name: str
    fingerprint: str = Field(description="HMAC of the value under a platform key; changes when the value does")
    origin: Literal["tenant", "generated"]
    key_id: str = Field(description="the platform key it is encrypted under")
    created_at: dt.datetime
    updated_at: dt.datetime


def referenced_names(config: TenantConfig) -> set[str]:
    """The secret names `config` uses."""
    return {m.group(1) for ref in config.secret_refs().values() if (m := SECRET_REF_RE.match(ref))}


def _check_name(name: str) -> None:
    if not SECRET_NAME_RE.match(name):
        raise ValueError(f"name: '{name[:80]}' is not a secret name (a letter, then letters, digits or _; ≤ 64)")


_COLUMNS = "name, fingerprint, origin, key_id, created_at, updated_at"


async def put_secret(
    conn: TenantConn, keyring: Keyring, tenant: str, name: str, value: str, origin: str = "tenant"
) -> tuple[SecretInfo, bool]:
    """Store `value` as the tenant's secret `name` (in `conn`'s tenant transaction); (info, created)."""
    _check_name(name)
    if not value or len(value.encode()) > MAX_SECRET_BYTES:
        raise ValueError(f"value: must be 1 to {MAX_SECRET_BYTES} bytes")
    kid, nonce, ciphertext = keyring.encrypt(tenant, name, value)
    row = await conn.fetchrow(
        f"""INSERT INTO tenant_secrets (tenant_id, name, key_id, nonce, ciphertext, fingerprint, origin)
            VALUES ($1, $2, $3, $4, $5, $6, $7)
            ON CONFLICT (tenant_id, name) DO UPDATE SET key_id = EXCLUDED.key_id, nonce = EXCLUDED.nonce,
                ciphertext = EXCLUDED.ciphertext, fingerprint = EXCLUDED.fingerprint,
                origin = EXCLUDED.origin, updated_at = now()
            RETURNING {_COLUMNS}, (xmax = 0) AS created""",
        tenant,
        name,
        kid,
        nonce,
        ciphertext,
        keyring.fingerprint(tenant, name, value),
        origin,
    )
    assert row is not None  # an upsert returns its row
    created = bool(row["created"])
    return SecretInfo(**{k: row[k] for k in SecretInfo.model_fields}), created


async def generate_secret(conn: TenantConn, keyring: Keyring, tenant: str, name: str) -> tuple[SecretInfo, str]:
    """A new random value (256 bits) stored as `name`; (info, the value, to be shown once)."""
    value = "whsec_" + _random.token_urlsafe(32)
    info, _ = await put_secret(conn, keyring, tenant, name, value, origin="generated")
    return info, value


async def list_secrets(conn: TenantConn) -> list[SecretInfo]:
    """The tenant's secrets (of `conn`'s tenant transaction), by name."""
    rows = await conn.fetch(f"SELECT {_COLUMNS} FROM tenant_secrets ORDER BY name")
    return [SecretInfo(**dict(r)) for r in rows]


async def delete_secret(conn: TenantConn, name: str) -> bool:
    """Delete the secret `name`; whether it existed. The caller checks it is not in use first."""
    return str(await conn.execute("DELETE FROM tenant_secrets WHERE name = $1", name)) != "DELETE 0"


async def destroy_secrets(pool: asyncpg.Pool, tenant: str) -> int:
    """Delete every secret of `tenant` (removal); how many there were."""
    async with tenant_tx(pool, tenant) as conn:
        status = await conn.execute("DELETE FROM tenant_secrets")
    return int(str(status).split()[-1])


@dataclass(frozen=True)
class ConfigInUse:
    """A config version something still resolves secrets with: the tenant's current one, or one
    that runs in progress are pinned to (their sends resolve at send time)."""

    tenant: str
    version: int
    config: TenantConfig
    current: bool
    runs: list[str]


async def configs_in_use(conn: TenantConn | asyncpg.Pool) -> list[ConfigInUse]:
    """Every config version in use that `conn` can see: one tenant's inside its tenant
    transaction, every live tenant's through the owner role's pool. Versions that no longer
    parse are left out (they resolve nothing)."""
    rows = await conn.fetch(
        """SELECT v.tenant_id, v.version, v.config, (v.version = t.current_version) AS current,
                  array_agg(r.id::text) FILTER (WHERE r.id IS NOT NULL) AS runs
             FROM tenant_config_versions v
             JOIN tenants t ON t.slug = v.tenant_id AND t.removed_at IS NULL
             LEFT JOIN runs r ON r.tenant_id = v.tenant_id AND r.config_version = v.version
                             AND r.status IN ('scheduled', 'running', 'paused')
            WHERE v.version = t.current_version OR r.id IS NOT NULL
            GROUP BY v.tenant_id, v.version, v.config, t.current_version
            ORDER BY v.tenant_id, v.version"""
    )
    found: list[ConfigInUse] = []
    for row in rows:
        try:
            config = TenantConfig.model_validate(row["config"])
        except ValueError:
            continue
        found.append(ConfigInUse(row["tenant_id"], row["version"], config, row["current"], row["runs"] or []))
    return found


async def users_of(conn: TenantConn, name: str) -> list[str]:
    """Where the secret `name` is in use, in `conn`'s tenant transaction (see configs_in_use)."""
    found: list[str] = []
    for used in await configs_in_use(conn):
        if name in referenced_names(used.config):
            if used.current:
                found.append(f"the current config (version {used.version})")
            found += [f"run {run} (config version {used.version})" for run in used.runs]
    return found


async def rotate_rows(pool: asyncpg.Pool, keyring: Keyring, tenant: str) -> int:
    """Re-encrypt the tenant's secrets not under the current key; how many were rewritten."""
    count = 0
    async with tenant_tx(pool, tenant) as conn:
        rows = await conn.fetch(
            "SELECT name, key_id, nonce, ciphertext FROM tenant_secrets WHERE key_id <> $1 FOR UPDATE",
            keyring.current_id,
        )
        for row in rows:
            value = keyring.decrypt(tenant, row["name"], row["key_id"], row["nonce"], row["ciphertext"])
            kid, nonce, ciphertext = keyring.encrypt(tenant, row["name"], value)
            await conn.execute(
                "UPDATE tenant_secrets SET key_id = $2, nonce = $3, ciphertext = $4 WHERE name = $1",
                row["name"],
                kid,
                nonce,
                ciphertext,
            )
            count += 1
    return count


class SecretResolver:
    """Resolves a config's `secret:NAME` references for the tenant the config belongs to.

    Reads go through the tenant's own transaction (row-level security), so a reference can only
    ever name a secret of the tenant whose config it is. Values are kept RESOLVE_TTL_SECONDS in
    this process, so a batch of sends costs one read per secret, not one per message.
    """

    def __init__(self, pool: asyncpg.Pool, keyring_text: str | None, ttl_seconds: float = RESOLVE_TTL_SECONDS):
        self.pool = pool
        self.keyring_text = keyring_text
        self.ttl = ttl_seconds
        self._cache: dict[tuple[str, str], tuple[float, str]] = {}

    def keyring(self) -> Keyring:
        """The keyring (KeyringError when SECRETS_KEYRING is unset or malformed)."""
        return Keyring.parse(self.keyring_text)

    async def resolve(self, tenant: str, ref: str | None, where: str) -> str:
        """The value behind `ref` (written at config path `where`) for `tenant`."""
        if ref is None:
            raise SecretUnavailable(f"{where} is not configured")
        match = SECRET_REF_RE.match(ref)
        if match is None:
            # env:NAME survives only in old stored versions; it never reads the environment.
            raise SecretUnavailable(f"{where}: '{ref}' is not a secret:NAME reference (env: references were removed)")
        name = match.group(1)
        now = time.monotonic()
        cached = self._cache.get((tenant, name))
        if cached and cached[0] > now:
            return cached[1]
        try:
            keyring = self.keyring()
        except KeyringError as exc:
            raise SecretUnavailable(f"{where}: {exc}") from None
        async with tenant_tx(self.pool, tenant) as conn:
            row = await conn.fetchrow("SELECT key_id, nonce, ciphertext FROM tenant_secrets WHERE name = $1", name)
        if row is None:
            raise SecretUnavailable(f"{where}: secret {name} is not set for tenant {tenant}")
        try:
            value = keyring.decrypt(tenant, name, row["key_id"], row["nonce"], row["ciphertext"])
        except SecretUnavailable as exc:
            raise SecretUnavailable(f"{where}: secret {name} {exc}") from None
        self._cache[(tenant, name)] = (now + self.ttl, value)
        return value

    def forget(self, tenant: str, name: str | None = None) -> None:
        """Drop cached values (after a write in this process)."""
        for key in [k for k in self._cache if k[0] == tenant and (name is None or k[1] == name)]:
            del self._cache[key]


async def legacy_references(owner_pool: asyncpg.Pool) -> list[tuple[str, str, list[str]]]:
    """What still names `env:` variables, for the upgrade: (tenant, the current config or a run in
    progress, the config paths). Reads every tenant, so it takes the owner role's pool."""
    found: list[tuple[str, str, list[str]]] = []
    for used in await configs_in_use(owner_pool):
        paths = sorted(p for p, ref in used.config.secret_refs().items() if ref.startswith(LEGACY_SECRET_PREFIX))
        if not paths:
            continue
        if used.current:
            found.append((used.tenant, f"current config (version {used.version})", paths))
        found += [(used.tenant, f"run {run} (config version {used.version})", paths) for run in used.runs]
    return found
