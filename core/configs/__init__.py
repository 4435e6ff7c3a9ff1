"""Configs: a tenant config checked in full before it is stored — the schema, then every
template rendered for a sample customer and every named segment compiled, each problem with
its path. Above content and customers, whose checks it runs; core.tenants.config_store below
it stores and reads the versions."""

from __future__ import annotations

from typing import TYPE_CHECKING

from core import lazy_exports

if TYPE_CHECKING:
    from core.configs.checks import load_config_file, parse_config, parse_config_yaml

_EXPORTS = {
    "load_config_file": "checks",
    "parse_config": "checks",
    "parse_config_yaml": "checks",
}
__all__ = ["load_config_file", "parse_config", "parse_config_yaml"]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
