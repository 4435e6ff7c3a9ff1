"""Local credentials: an admin key, one key per tenant, the link-signing and provider-events
secrets and the tenant-secrets keyring, kept in `.data/dev-credentials.json` so a second
`make run` keeps working with the same keys."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import asyncpg

from core.security.secrets import Keyring
from core.tenants.keys import new_key, store_key


async def ensure_credentials(
    pool: asyncpg.Pool, path: Path, tenants: list[str], admin_key: str | None = None
) -> dict[str, Any]:
    """Load or create the local admin key, tenant keys and secrets, store the keys, save the file."""
    creds: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    creds["admin_key"] = admin_key or creds.get("admin_key") or new_key("adm")
    creds.setdefault("link_signing_secret", secrets.token_urlsafe(32))
    creds.setdefault("provider_events_secret", secrets.token_urlsafe(32))
    creds.setdefault("secrets_keyring", Keyring.new_entry("dev1"))
    keys: dict[str, str] = creds.setdefault("tenants", {})
    for tenant in tenants:
        keys.setdefault(tenant, new_key(f"tk_{tenant.replace('-', '_')}"))
    await store_key(pool, creds["admin_key"], None, "dev admin")
    for tenant, key in keys.items():
        if tenant in tenants:
            await store_key(pool, key, tenant, "dev tenant key")
    _save(path, creds)
    return creds


def dev_keyring(path: Path) -> str:
    """The local stack's tenant-secrets keyring, made and saved on first use."""
    creds: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    if "secrets_keyring" not in creds:
        creds["secrets_keyring"] = Keyring.new_entry("dev1")
        _save(path, creds)
    return str(creds["secrets_keyring"])


def _save(path: Path, creds: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(creds, indent=2) + "\n")
    tmp.chmod(0o600)
    tmp.replace(path)
