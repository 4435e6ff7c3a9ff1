"""What every console page shares: the signed-in context, form parsing, CSRF checks, page
rendering and the one way API errors become messages on a page."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, quote, urlsplit

import asyncpg
from fastapi import Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from temporalio.client import Client

from api import deps
from api.console import session as sessions
from api.errors import refusal_status
from core.common.durations import describe_duration
from core.common.refusals import Refused
from core.common.validation import InvalidInput, error_lines
from core.infra.settings import Settings

PREFIX = "/console"
# Scripts and styles only from the console itself; previews (srcdoc iframes, which inherit this)
# may show inline-styled email and run no script (sandboxed). Images only from the console and
# data: URLs, so opening a preview tells no remote server (a tracker in a tenant's template) that
# it was looked at, unless the marketer asks to see remote images (REMOTE_IMAGES_POLICY).
_POLICY = (
    "default-src 'self'; img-src {images}; style-src 'self' 'unsafe-inline'; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"
)
CONTENT_SECURITY_POLICY = _POLICY.format(images="'self' data:")
# A campaign page opened with ?images=1 ("Show remote images" beside its preview).
REMOTE_IMAGES_POLICY = _POLICY.format(images="'self' data: https:")
templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
templates.env.filters["duration"] = describe_duration


class SignInNeeded(Exception):
    """The request has no valid session: the console answers with the sign-in page."""


class CsrfRefused(Exception):
    """A form or console call without the session's CSRF token."""


class Redirect(Exception):
    """Send the browser elsewhere in the console (see-other)."""

    def __init__(self, path: str):
        super().__init__(path)
        self.path = path


@dataclass
class Console:
    """One console request: its session, the API's pool, Temporal client and settings, and
    the tenant the session works on (checked as the API checks a key's path tenant)."""

    request: Request
    session: sessions.Session
    pool: asyncpg.Pool
    temporal: Client
    settings: Settings
    tenant: str

    def render(self, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        """A page with the layout's context: tenant, session and CSRF token."""
        return page(self.request, name, status_code=status_code, session=self.session, tenant=self.tenant, **context)

    def temporal_ui_url(self, workflow_id: str) -> str:
        """The run's workflow in the Temporal UI (the dev server's UI beside its frontend)."""
        host = urlsplit(f"//{self.settings.temporal_address}").hostname or "localhost"
        namespace = quote(self.settings.temporal_namespace, safe="")
        workflow = quote(workflow_id, safe="")
        return f"http://{host}:{self.settings.temporal_ui_port}/namespaces/{namespace}/workflows/{workflow}"


def page(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """Render a page template (`prefix` and `now` are always there)."""
    context.setdefault("session", None)
    context.setdefault("tenant", None)
    response = templates.TemplateResponse(
        request, name, {"prefix": PREFIX, "now": dt.datetime.now(dt.UTC), **context}, status_code=status_code
    )
    remote_images = bool(context.get("remote_images"))
    response.headers["Content-Security-Policy"] = REMOTE_IMAGES_POLICY if remote_images else CONTENT_SECURITY_POLICY
    return response


async def current_session(request: Request) -> sessions.Session:
    """The request's valid session (its key not revoked and the session not signed out since
    sign-in), else SignInNeeded."""
    settings: Settings = request.app.state.settings
    found = sessions.decode(request.cookies.get(sessions.COOKIE), sessions.signing_key(settings))
    if found is None or not await sessions.still_valid(deps.get_pool(request), found):
        raise SignInNeeded
    return found


async def console_context(request: Request) -> Console:
    """The signed-in console context; an admin who has not picked a tenant goes to the picker."""
    session = await current_session(request)
    pool = deps.get_pool(request)
    if session.tenant is None:
        raise Redirect("/tenants")
    try:
        tenant = await deps.get_tenant(pool, session.principal, session.tenant)
    except HTTPException:
        raise SignInNeeded from None  # the tenant was removed since the session began
    return Console(request, session, pool, deps.get_temporal(request), deps.get_settings_dep(request), tenant)


ConsoleDep = Annotated[Console, Depends(console_context)]
SessionDep = Annotated[sessions.Session, Depends(current_session)]


async def form_data(request: Request) -> dict[str, list[str]]:
    """An urlencoded form body as lists of values per name (blank values kept)."""
    body = (await request.body()).decode("utf-8", errors="replace")
    return parse_qs(body, keep_blank_values=True)


def first(form: dict[str, list[str]], name: str, default: str = "") -> str:
    """The first value of a form field, stripped; `default` when absent."""
    values = form.get(name)
    return values[0].strip() if values else default


async def checked_form(request: Request, session: sessions.Session) -> dict[str, list[str]]:
    """The form body, after its CSRF token is checked against the session's."""
    form = await form_data(request)
    if not sessions.csrf_ok(session, first(form, "csrf") or None):
        raise CsrfRefused
    return form


def check_header_csrf(request: Request, session: sessions.Session) -> None:
    """A console call (fetch from a page) carries the session's token in X-CSRF-Token."""
    if not sessions.csrf_ok(session, request.headers.get("x-csrf-token")):
        raise CsrfRefused


def problems(exc: Exception) -> list[str]:
    """An exception the API would answer 4xx as the same `path: reason` lines it would send."""
    if isinstance(exc, ValidationError):
        return error_lines(exc.errors(), unknown="unknown field")
    if isinstance(exc, InvalidInput):
        return list(exc.errors)
    if isinstance(exc, HTTPException):
        return [str(exc.detail)]
    if isinstance(exc, Refused):
        return [exc.message]
    raise exc


def status_of(exc: Exception) -> int:
    """The status the API would answer `exc` (one of INVALID) with."""
    if isinstance(exc, HTTPException):
        return exc.status_code
    if isinstance(exc, Refused):
        return refusal_status(exc)
    return 422


INVALID = (ValidationError, InvalidInput, Refused, HTTPException)


def redirect(path: str) -> RedirectResponse:
    """See-other to a console path (after a form post)."""
    return RedirectResponse(f"{PREFIX}{path}", status_code=303)


def set_session_cookie(response: Response, request: Request, session: sessions.Session) -> None:
    """Store `session` in the signed cookie: HttpOnly, SameSite=Lax, Secure over TLS (also
    behind a trusted TLS-terminating proxy, or always with CONSOLE_SECURE_COOKIES)."""
    settings: Settings = request.app.state.settings
    response.set_cookie(
        sessions.COOKIE,
        sessions.encode(session, sessions.signing_key(settings)),
        max_age=sessions.LIFETIME_SECONDS,
        path=PREFIX,
        httponly=True,
        samesite="lax",
        secure=sessions.secure_cookies(request, settings),
    )
