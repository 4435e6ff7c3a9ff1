"""The OpenAPI document describes the error bodies the API really sends.

api/errors.py answers every error as `{"detail": str, "errors": [str]}`, while FastAPI
documents its own 422 shape (`detail` as a list of objects). This rewrites the document so
every JSON operation's 422 and other 4xx responses name the one `Error` schema, which is what
clients (and the schemathesis fuzz test) check responses against.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "required": ["detail", "errors"],
    "properties": {
        "detail": {"type": "string", "description": "every problem, joined with '; '"},
        "errors": {
            "type": "array",
            "items": {"type": "string"},
            "description": "one `place: reason` per problem, e.g. `body.variants[0].template: unknown template 'x'`",
        },
    },
}
_REF = {"$ref": "#/components/schemas/Error"}


def _error_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _REF}}}


def _answers_json(operation: dict[str, Any]) -> bool:
    """False for pages (the unsubscribe endpoints answer HTML, errors included)."""
    for status, response in operation.get("responses", {}).items():
        if status.startswith("2") and "content" in response:
            return "application/json" in response["content"]
    return True


def document_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """Point every JSON operation's error responses at the `Error` schema, in place."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["Error"] = ERROR_SCHEMA
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            if not isinstance(operation, dict) or "responses" not in operation or not _answers_json(operation):
                continue
            responses = operation["responses"]
            if "422" in responses:
                responses["422"] = _error_response("Invalid input: each problem named by its place")
            responses.setdefault("4XX", _error_response("Refused: `detail` says why"))
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    return schema


def install(app: FastAPI) -> None:
    """Serve the OpenAPI document with the real error shape."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        app.openapi_schema = document_errors(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
