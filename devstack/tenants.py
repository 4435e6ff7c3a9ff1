"""Tenant configs on disk → validated → stored as versions in PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import asyncpg

from core.tenants.config_schema import TenantConfig
from core.tenants.config_store import ConfigError, load_config_file, save_config


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
    pool: asyncpg.Pool, directory: Path, author: str = "tenants sync"
) -> list[tuple[str, int, bool]]:
    """Store each file's config as a new version when it changed: [(slug, version, created)].
    Raises ConfigError listing every invalid file's errors; nothing is stored then."""
    report = validate_files(config_files(directory))
    errors = [f"{path.name}: {e}" for path, errs in report.items() for e in errs]
    if errors:
        raise ConfigError(errors)
    configs: list[TenantConfig] = [load_config_file(path) for path in report]
    results = []
    for config in configs:
        version, created = await save_config(pool, config, f"{author} ({config.slug}.yaml)")
        results.append((config.slug, version, created))
    return results
