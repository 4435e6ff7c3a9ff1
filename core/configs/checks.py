"""A tenant config parsed and checked in full: the schema, then every template rendered for a
sample customer and every named segment compiled, and no process-environment secret reference;
every problem as `path: reason` in one ConfigError, so one round trip shows them all. The API
runs these in the check pool's children (core/content/check_pool.py); save_config stores what
passes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from core.common.validation import error_lines
from core.content.rendering import check_template_set
from core.customers.segments import SegmentError, compile_segment
from core.tenants.config_schema import LEGACY_SECRET_PREFIX, Brand, TemplateSet, TenantConfig
from core.tenants.config_store import ConfigError


def parse_config(data: Any) -> TenantConfig:
    """Validate a config mapping: schema, then templates and segments. Raises ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(["(root): must be a mapping"])
    try:
        config = TenantConfig.model_validate(data)
    except ValidationError as exc:
        # Report the template and segment problems too, so one round trip shows them all.
        raise ConfigError(error_lines(exc.errors()) + _semantic_errors(data)) from None
    errors = _semantic_errors(data) + [
        f"{path}: '{ref}' names a process environment variable, which tenant config may no longer do;"
        " store the value with PUT /v1/tenants/{tenant}/secrets/NAME and write secret:NAME"
        for path, ref in config.secret_refs().items()
        if ref.startswith(LEGACY_SECRET_PREFIX)
    ]
    if errors:
        raise ConfigError(errors)
    return config


def _semantic_errors(data: dict[str, Any]) -> list[str]:
    """Template and segment problems of whatever parts of `data` are well-formed."""
    errors: list[str] = []
    templates = data.get("templates")
    if isinstance(templates, dict):
        try:
            brand: Brand | None = Brand.model_validate(data.get("brand"))
        except ValidationError:
            brand = None  # already reported by the schema; templates render with a sample brand
        for name, raw in templates.items():
            try:
                errors += check_template_set(str(name), TemplateSet.model_validate(raw), brand)
            except ValidationError:
                pass  # already reported by the schema
    segments = data.get("segments")
    if isinstance(segments, dict):
        for name, spec in segments.items():
            try:
                compile_segment(spec, segments, path=f"segments.{name}")
            except SegmentError as exc:
                errors += exc.errors
    return errors


def parse_config_yaml(text: str, source: str = "<config>") -> TenantConfig:
    """Parse YAML text; syntax errors give line and column."""
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise ConfigError([f"{source}: YAML syntax error at {where}: {exc.problem}"]) from None
    return parse_config(data)


def load_config_file(path: Path) -> TenantConfig:
    """Parse and validate one tenant YAML file."""
    return parse_config_yaml(path.read_text(encoding="utf-8"), str(path))
