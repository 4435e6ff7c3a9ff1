"""The configuration page: the tenant's YAML in an editor, checked as PUT /config checks it
(errors shown at their lines), the diff against the current version before saving, the version
history, and the suppression list."""

from __future__ import annotations

from typing import Any

import yaml
from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from api.console.common import INVALID, PREFIX, Console, ConsoleDep, checked_form, first, problems, redirect
from api.console.yaml_lines import located
from api.schemas import ConfigVersionSummary, Suppression, SuppressionIn
from core.common.validation import InvalidInput
from core.configs.checks import parse_config_yaml
from core.content.check_pool import run_check
from core.customers import service as customer_service
from core.tenants.config_schema import TenantConfig
from core.tenants.config_store import ConfigError, config_diff, get_version, list_versions, save_config

router = APIRouter(prefix=PREFIX, include_in_schema=False)

_NOTICES = {
    "saved": "Configuration saved as a new version; new runs use it.",
    "unchanged": "Nothing changed: the configuration equals the current version.",
    "suppressed": "Address suppressed.",
    "lifted": "Suppression lifted.",
}


def as_yaml(config: dict[str, Any]) -> str:
    """A stored config as the editor shows it (keys in the model's order)."""
    return yaml.safe_dump(config, sort_keys=False, allow_unicode=True, width=100)


async def _page(ctx: Console, status: int = 200, **extra: Any) -> HTMLResponse:
    current = await get_version(ctx.pool, ctx.tenant)
    versions = [ConfigVersionSummary.of(v) for v in await list_versions(ctx.pool, ctx.tenant)]
    suppressions = [Suppression(**r) for r in await customer_service.list_suppressions(ctx.pool, ctx.tenant, None, 200)]
    extra.setdefault("text", as_yaml(current["config"]) if current else "")
    return ctx.render(
        "config.html",
        status,
        current=current,
        versions=versions,
        suppressions=suppressions,
        notice=_NOTICES.get(ctx.request.query_params.get("done", "")),
        **extra,
    )


@router.get("/config", response_class=HTMLResponse)
async def config_page(ctx: ConsoleDep) -> HTMLResponse:
    """The editor with the current version, its history and the suppression list."""
    return await _page(ctx)


async def _check(ctx: Console, text: str) -> TenantConfig:
    """Parse and validate as PUT /config does (the slug must stay the tenant's), in the check pool."""
    config = await run_check("body", parse_config_yaml, text, "body")
    if config.slug != ctx.tenant:
        raise ConfigError([f"slug: '{config.slug}' does not match the tenant in the path ('{ctx.tenant}')"])
    return config


@router.post("/config", response_class=HTMLResponse)
async def check_or_save(ctx: ConsoleDep) -> Response:
    """`check`: validate and show the diff against the current version; `save`: store it as
    the next version (checked again: it may have been edited since)."""
    form = await checked_form(ctx.request, ctx.session)
    text = first(form, "yaml")
    try:
        config = await _check(ctx, text)
    except InvalidInput as exc:
        return await _page(ctx, 422, text=text, errors=located(text, problems(exc)))
    current = await get_version(ctx.pool, ctx.tenant)
    new = config.model_dump(mode="json")
    if first(form, "action") == "save":
        author = "console: admin" if ctx.session.is_admin else f"console: tenant key ({ctx.tenant})"
        _, created = await save_config(ctx.pool, config, author)
        return redirect(f"/config?done={'saved' if created else 'unchanged'}")
    base = current["config"] if current else {}
    label = f"v{current['version']}" if current else "nothing"
    diff = config_diff(base, new, label, "edited")
    return await _page(ctx, text=text, diff=diff, checked=True)


@router.post("/suppressions", response_class=HTMLResponse)
async def suppressions(ctx: ConsoleDep) -> Response:
    """Add a suppression, or lift one (`action=remove`)."""
    form = await checked_form(ctx.request, ctx.session)
    fields = {name: first(form, name) for name in ("channel", "address", "reason") if first(form, name)}
    try:
        body = SuppressionIn.model_validate(fields)  # names a bad channel or address as the API does
        if first(form, "action") == "remove":
            await customer_service.remove_suppression(ctx.pool, ctx.tenant, body.channel, body.address)
            return redirect("/config?done=lifted#suppressions")
        await customer_service.add_suppression(ctx.pool, ctx.tenant, body.channel, body.address, body.reason)
    except INVALID as exc:
        return await _page(ctx, 422, suppression_errors=problems(exc))
    return redirect("/config?done=suppressed#suppressions")
