"""Public unsubscribe endpoint behind the signed links in every email.

GET shows a small confirmation page (link scanners must not unsubscribe anyone);
POST is the one-click unsubscribe of RFC 8058 that mail clients send from the
List-Unsubscribe-Post header, and the confirmation page's button.
"""

from __future__ import annotations

from html import escape
from typing import Annotated, NamedTuple

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse

from api.deps import PoolDep, SettingsDep
from core.common import signed_links as links
from core.customers.suppressions import unsubscribe
from core.infra.db import tenant_tx
from core.tenants.config_schema import ChannelName
from core.tenants.config_store import get_config

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


class Link(NamedTuple):
    """What a valid unsubscribe link names: tenant, customer and channel, and the tenant's brand."""

    tenant: str
    customer_id: int
    channel: ChannelName
    brand: str


async def verified_link(token: str, pool: PoolDep, settings: SettingsDep) -> Link | None:
    """The link `token` stands for, or None when it is damaged, expired or its tenant is gone."""
    payload = links.verify(token, settings.link_signing_secret or "") if settings.link_signing_secret else None
    if payload is None or not {"t", "c", "ch"} <= payload.keys():
        return None
    found = await get_config(pool, str(payload["t"]))
    if found is None:
        return None
    return Link(str(payload["t"]), int(payload["c"]), payload["ch"], found[1].brand.name)


LinkDep = Annotated[Link | None, Depends(verified_link)]


@router.get("/u/{token}", response_class=HTMLResponse, include_in_schema=False)
async def confirm_page(token: str, link: LinkDep) -> HTMLResponse:
    """A confirmation page with an Unsubscribe button: link scanners that GET it unsubscribe nobody."""
    if link is None:
        return _invalid()
    question = f"<p>Stop receiving {escape(link.channel)} messages from {escape(link.brand)}?</p>"
    button = f'<form method="post" action="/u/{escape(token)}"><button type="submit">Unsubscribe</button></form>'
    return _page(200, f"Unsubscribe from {link.brand}", question + button)


@router.post("/u/{token}", response_class=HTMLResponse, include_in_schema=False)
async def one_click_unsubscribe(link: LinkDep, pool: PoolDep) -> HTMLResponse:
    """Unsubscribe the link's customer from its channel (RFC 8058 one-click, or the page's button)."""
    if link is None:
        return _invalid()
    async with tenant_tx(pool, link.tenant) as conn:
        done = await unsubscribe(conn, link.tenant, link.customer_id, link.channel)
    if done is None:
        return _invalid()
    farewell = f"<p>You will no longer receive {escape(link.channel)} messages from {escape(link.brand)}.</p>"
    return _page(200, "You are unsubscribed", farewell)
