"""Signing in and out of the console, and an admin's choice of tenant."""

from __future__ import annotations

import hashlib

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from api import deps
from api.console import session as sessions
from api.console.common import PREFIX, SessionDep, checked_form, first, form_data, page, redirect, set_session_cookie
from api.schemas import TenantSummary
from core.tenants import config_store
from core.tenants.keys import lookup_key

router = APIRouter(prefix=PREFIX, include_in_schema=False)


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


@router.get("", response_class=HTMLResponse)
async def home(request: Request) -> Response:
    """The campaigns page when signed in, else the sign-in page."""
    return RedirectResponse(f"{PREFIX}/campaigns", status_code=303)


def _login_form(request: Request, status_code: int = 200, error: str | None = None) -> HTMLResponse:
    """The sign-in form with its login-CSRF token, also set as the pre-session cookie."""
    key = sessions.signing_key(request.app.state.settings)
    token = request.cookies.get(sessions.LOGIN_COOKIE)
    if not sessions.login_token_valid(token, key):
        token = sessions.new_login_token(key)
    assert token is not None
    response = page(request, "login.html", status_code, error=error, login_token=token)
    response.set_cookie(
        sessions.LOGIN_COOKIE, token, max_age=sessions.LOGIN_LIFETIME_SECONDS, path=PREFIX,
        httponly=True, samesite="strict", secure=sessions.secure_cookies(request, request.app.state.settings),
    )  # fmt: skip
    return response


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request) -> HTMLResponse:
    """The sign-in form."""
    return _login_form(request)


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    """Check the key as the API does; a tenant key opens its tenant, an admin key the picker.
    Wrong keys count against the same per-address limit as wrong API keys."""
    form = await form_data(request)
    signing = sessions.signing_key(request.app.state.settings)
    if not sessions.login_token_ok(request.cookies.get(sessions.LOGIN_COOKIE), first(form, "csrf") or None, signing):
        return _login_form(request, 403, "This sign-in form has expired or is not the console's; sign in again.")
    key = first(form, "key")
    if not key:
        return _login_form(request, 422, "key: paste your API key")
    # A valid key always signs in (failures by others at this address never lock it out); a
    # wrong one counts against the same shared per-address limit as wrong API keys.
    limiter = request.app.state.auth_limiter
    pool = deps.get_pool(request)
    principal = await lookup_key(pool, key)
    if principal is None:
        address = _client(request)
        wait = limiter.blocked_for(address)
        if wait is None:
            await limiter.failed(pool, address, hashlib.sha256(f"Bearer {key}".encode()).digest())
            return _login_form(request, 401, "key: not a valid API key (unknown or revoked)")
        return _login_form(request, 429, f"Too many wrong keys from this address; try again in {wait} s.")
    session = sessions.new_session(principal)
    await sessions.record(pool, session)
    response = redirect("/campaigns" if session.tenant else "/tenants")
    set_session_cookie(response, request, session)
    response.delete_cookie(sessions.LOGIN_COOKIE, path=PREFIX)
    return response


@router.post("/logout")
async def logout(request: Request, session: SessionDep) -> Response:
    """End the session everywhere (its row is revoked, so a copy of the cookie is refused too),
    and clear the cookie."""
    await checked_form(request, session)
    await sessions.end(deps.get_pool(request), session)
    response = redirect("/login")
    response.delete_cookie(sessions.COOKIE, path=PREFIX)
    return response


async def _tenants(request: Request, session: sessions.Session) -> list[TenantSummary]:
    """The tenants the session may open, as GET /v1/tenants lists them."""
    rows = await config_store.list_tenants(deps.get_pool(request), session.principal.tenant)
    return [TenantSummary.of(r) for r in rows]


@router.get("/tenants", response_class=HTMLResponse)
async def tenants_page(request: Request, session: SessionDep) -> Response:
    """The tenants this session may work on (an admin's picker; a tenant key sees its own)."""
    found = await _tenants(request, session)
    return page(request, "tenants.html", session=session, tenant=session.tenant, tenants=found)


@router.post("/tenants")
async def pick_tenant(request: Request, session: SessionDep) -> Response:
    """Work on another tenant (admin keys only; a tenant key keeps its own)."""
    form = await checked_form(request, session)
    slug = first(form, "tenant")
    visible = {t.slug for t in await _tenants(request, session)}
    if slug not in visible:
        return page(
            request, "tenants.html", 422, session=session, tenant=session.tenant,
            tenants=await _tenants(request, session),
            error=f"tenant: no tenant '{slug}' you may open",
        )  # fmt: skip
    response = redirect("/campaigns")
    set_session_cookie(response, request, session.with_tenant(slug))
    return response
