"""Error responses: every 4xx names the problem; validation errors name each field."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from core.config_store import ConfigError
from core.segments import SegmentError
from core.templating import TemplateError

log = logging.getLogger("pennant.api")


def _loc(loc: tuple | list) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for err in exc.errors():
            msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
            if err.get("type") == "extra_forbidden":
                msg = "unknown field"
            errors.append(f"{_loc(err.get('loc', ()))}: {msg}")
        return JSONResponse(status_code=422, content={"detail": "; ".join(errors), "errors": errors})

    @app.exception_handler(ConfigError)
    @app.exception_handler(SegmentError)
    @app.exception_handler(TemplateError)
    async def _invalid(_: Request, exc: Exception) -> JSONResponse:
        errors = getattr(exc, "errors", [str(exc)])
        return JSONResponse(status_code=422, content={"detail": "; ".join(errors), "errors": errors})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(status_code=500, content={"detail": "internal error; see the API log"})
