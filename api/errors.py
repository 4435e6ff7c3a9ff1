"""Error responses: every error body is `{"detail": str, "errors": [str]}`; validation errors
name each field (`body.variants[0].template: Field required`)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from core.common.refusals import Conflict, NotFound, Refused, TooMany, Unavailable, UpstreamFailed
from core.common.validation import InvalidInput, error_lines

log = logging.getLogger("pennant.api")


def error_response(status_code: int, errors: list[str], headers: Mapping[str, str] | None = None) -> JSONResponse:
    """The one error body: every problem in `errors`, all of them joined in `detail`."""
    return JSONResponse(
        status_code=status_code, content={"detail": "; ".join(errors), "errors": errors}, headers=headers
    )


# A service's refusal (core/common/refusals.py) as the API answers it.
REFUSAL_STATUS: dict[type[Refused], int] = {
    NotFound: 404,
    Conflict: 409,
    TooMany: 429,
    UpstreamFailed: 502,
    Unavailable: 503,
}


def refusal_status(exc: Refused) -> int:
    """The HTTP status of a service's refusal: its class's, or the nearest base's (409 for
    a bare Refused)."""
    for cls in type(exc).__mro__:
        if cls in REFUSAL_STATUS:
            return REFUSAL_STATUS[cls]
    return 409


def install(app: FastAPI) -> None:
    """Answer every error raised by a route or by request validation in the one shape."""

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, error_lines(exc.errors(), unknown="unknown field"))

    @app.exception_handler(InvalidInput)  # config, segment, template and campaign errors alike
    async def _invalid(_: Request, exc: InvalidInput) -> JSONResponse:
        return error_response(422, exc.errors)

    @app.exception_handler(Refused)
    async def _refused(_: Request, exc: Refused) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
        return error_response(refusal_status(exc), [exc.message], headers)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        return error_response(exc.status_code, [str(exc.detail)], exc.headers)

    @app.exception_handler(asyncpg.DataError)
    async def _unstorable(request: Request, exc: asyncpg.DataError) -> JSONResponse:
        # A backstop: api/input_guard.py and the request models' bounds name the field first;
        # a value that still reaches PostgreSQL and is refused there is bad input, not a 500.
        log.warning("PostgreSQL refused a value on %s %s: %s", request.method, request.url.path, exc)
        return error_response(422, [f"request: a value PostgreSQL cannot store ({exc})"])

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, ["internal error; see the API log"])
