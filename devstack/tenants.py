"""Tenant configs on disk → validated → stored as versions in PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import asyncpg

from core.configs.checks import load_config_file
from core.infra.db import tenant_tx
from core.security.secrets import Keyring, put_secret, referenced_names
from core.tenants.config_schema import TenantConfig
from core.tenants.config_store import ConfigError, save_config

# The demo tenants' provider credentials, stored in each tenant's secret store before its config
# is synced. The provider simulator accepts any value; real ones come from the tenant's admins.
DEMO_SECRETS = {
    "SMS_ACCOUNT_SID": "ACdev00000000000000000000000000000",
    "SMS_AUTH_TOKEN": "dev-sms-token",
    "PUSH_SERVER_KEY": "dev-push-server-key",
    "WEBHOOK_SIGNING_SECRET": "whsec_dev-webhook-signing-secret",
}


def config_files(directory: Path) -> list[Path]:
    """The tenant config files (*.yaml) in `directory`, sorted."""
    return sorted(p for p in directory.glob("*.yaml") if not p.name.startswith("."))


def validate_files(files: list[Path]) -> dict[Path, list[str]]:
    """Every error of every file (empty lists for valid files)."""
    report: dict[Path, list[str]] = {}
    for path in files:
        try:
            config = load_config_file(path)
            if config.slug != path.stem:
                report[path] = [f"slug: '{config.slug}' does not match the file name '{path.stem}.yaml'"]
            else:
                report[path] = []
        except ConfigError as exc:
            report[path] = exc.errors
    return report


async def sync_directory(
    pool: asyncpg.Pool, directory: Path, author: str = "tenants sync", demo_keyring: Keyring | None = None
) -> list[tuple[str, int, bool]]:
    """Store each file's config as a new version when it changed: [(slug, version, created)].
    Raises ConfigError listing every invalid file's errors; nothing is stored then. With
    `demo_keyring` (`pennant dev`), the demo secrets the configs use are stored first."""
    report = validate_files(config_files(directory))
    errors = [f"{path.name}: {e}" for path, errs in report.items() for e in errs]
    if errors:
        raise ConfigError(errors)
    configs: list[TenantConfig] = [load_config_file(path) for path in report]
    results = []
    for config in configs:
        if demo_keyring is not None:
            await seed_demo_secrets(pool, demo_keyring, config)
        version, created = await save_config(pool, config, f"{author} ({config.slug}.yaml)")
        results.append((config.slug, version, created))
    return results


async def seed_demo_secrets(pool: asyncpg.Pool, keyring: Keyring, config: TenantConfig) -> list[str]:
    """Store the DEMO_SECRETS that `config` refers to and the tenant does not have yet; their names."""
    wanted = sorted(referenced_names(config) & DEMO_SECRETS.keys())
    added = []
    async with tenant_tx(pool, config.slug) as conn:
        have = {r["name"] for r in await conn.fetch("SELECT name FROM tenant_secrets")}
        for name in wanted:
            if name not in have:
                await put_secret(conn, keyring, config.slug, name, DEMO_SECRETS[name])
                added.append(name)
    return added
