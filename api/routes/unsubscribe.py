"""Public unsubscribe endpoint behind the signed links in every email.

GET shows a small confirmation page (link scanners must not unsubscribe anyone);
POST is the one-click unsubscribe of RFC 8058 that mail clients send from the
List-Unsubscribe-Post header, and the confirmation page's button.
"""

from __future__ import annotations

from html import escape

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from api.deps import PoolDep, SettingsDep
from core import links
from core.config_store import get_config
from core.db import tenant_tx
from core.suppressions import unsubscribe

router = APIRouter(tags=["unsubscribe"])

_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:Helvetica,Arial,sans-serif;max-width:32em;margin:4em auto;padding:0 1em}}
button{{font-size:1em;padding:.6em 1.2em}}</style></head><body><h1>{title}</h1>{body}</body></html>"""


def _page(status: int, title: str, body: str) -> HTMLResponse:
    return HTMLResponse(_PAGE.format(title=escape(title), body=body), status_code=status)


def _invalid() -> HTMLResponse:
    return _page(
        400,
        "This link is not valid",
        "<p>The unsubscribe link is damaged or has expired. Use the link in a recent message.</p>",
    )


async def _verified(token: str, pool: PoolDep, settings: SettingsDep) -> tuple[dict, str] | None:
    payload = links.verify(token, settings.link_signing_secret or "") if settings.link_signing_secret else None
    if payload is None or not {"t", "c", "ch"} <= payload.keys():
        return None
    found = await get_config(pool, str(payload["t"]))
    if found is None:
        return None
    return payload, found[1].brand.name


@router.get("/u/{token}", response_class=HTMLResponse, include_in_schema=False)
async def confirm_page(token: str, pool: PoolDep, settings: SettingsDep) -> HTMLResponse:
    verified = await _verified(token, pool, settings)
    if verified is None:
        return _invalid()
    payload, brand = verified
    return _page(
        200,
        f"Unsubscribe from {brand}",
        f"<p>Stop receiving {escape(str(payload['ch']))} messages from {escape(brand)}?</p>"
        f'<form method="post" action="/u/{escape(token)}"><button type="submit">Unsubscribe</button></form>',
    )


@router.post("/u/{token}", response_class=HTMLResponse, include_in_schema=False)
async def one_click_unsubscribe(token: str, pool: PoolDep, settings: SettingsDep) -> HTMLResponse:
    verified = await _verified(token, pool, settings)
    if verified is None:
        return _invalid()
    payload, brand = verified
    async with tenant_tx(pool, str(payload["t"])) as conn:
        done = await unsubscribe(conn, str(payload["t"]), int(payload["c"]), payload["ch"])
    if done is None:
        return _invalid()
    return _page(
        200,
        "You are unsubscribed",
        f"<p>You will no longer receive {escape(str(payload['ch']))} messages from {escape(brand)}.</p>",
    )
