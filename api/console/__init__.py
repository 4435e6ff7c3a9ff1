"""The marketer console at /console: server-rendered pages over the API's own route functions,
with a signed session cookie, CSRF tokens on every form and a little script for live parts."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from api.console import auth_pages, campaign_pages, config_pages, optimisation_pages, run_pages
from api.console import session as sessions
from api.console.common import PREFIX, CsrfRefused, Redirect, SignInNeeded, page, redirect


def _wants_json(request: Request) -> bool:
    posted_json = request.method == "POST" and "json" in request.headers.get("content-type", "")
    return posted_json or request.url.path.endswith("/progress")


def install(app: FastAPI) -> None:
    """Serve the console under /console (pages, static files and their error pages)."""
    app.mount(f"{PREFIX}/static", StaticFiles(directory=Path(__file__).parent / "static"), name="console-static")
    # Optimisation routes before run_pages, whose /runs/{id}/{action} would take their paths.
    for module in (auth_pages, campaign_pages, optimisation_pages, run_pages, config_pages):
        app.include_router(module.router)

    async def sign_in(request: Request, _: Exception) -> Response:
        if _wants_json(request):
            return JSONResponse({"detail": "signed out: sign in again"}, status_code=401)
        return redirect("/login")

    async def csrf(request: Request, _: Exception) -> Response:
        message = "This form has expired or did not come from the console; reload the page and try again."
        if _wants_json(request):
            return JSONResponse({"detail": message}, status_code=403)
        return page(request, "error.html", 403, title="Form refused", message=message)

    async def elsewhere(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, Redirect)
        return redirect(exc.path)

    app.add_exception_handler(SignInNeeded, sign_in)
    app.add_exception_handler(CsrfRefused, csrf)
    app.add_exception_handler(Redirect, elsewhere)

    # The API answers HTTP errors as JSON; console pages answer them as a page.
    api_handler = app.exception_handlers[HTTPException]

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if not request.url.path.startswith(PREFIX) or _wants_json(request):
            answer = api_handler(request, exc)
            return answer if isinstance(answer, Response) else await answer
        # The layout's navigation only: the cookie is not trusted for anything else here.
        found = sessions.decode(request.cookies.get(sessions.COOKIE), sessions.signing_key(request.app.state.settings))
        return page(
            request, "error.html", exc.status_code, title=f"Error {exc.status_code}", message=str(exc.detail),
            session=found, tenant=found.tenant if found else None,
        )  # fmt: skip

    app.exception_handlers[HTTPException] = http_error
