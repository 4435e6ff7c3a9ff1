"""Refuse input PostgreSQL cannot store before any route sees it, and bound request bodies.

One ASGI middleware covers every route: the body is read once (at most `max_request_bytes`,
else 413), parsed when it is JSON (or YAML for the config routes), and walked together with
the path and query parameters. NUL characters (text and jsonb cannot hold them), unpaired
surrogates (not encodable as UTF-8), integers beyond bigint, non-finite numbers and absurd
nesting are answered 422 naming each place, in the shape api/errors.py uses:
`{"detail": "...", "errors": ["body.segment.value: contains a NUL character", ...]}`.
Narrower bounds (int columns, lengths) are the request models' business.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl

import yaml
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from api.asgi_io import BodyTooLarge, read_body, replaying, send_response

BIGINT_MAX = 2**63 - 1
BIGINT_MIN = -(2**63)
# Bounds for request fields stored in `integer` columns (config versions).
INT_MAX = 2**31 - 1
# A JSON body within the size limit holds far fewer values; a YAML body may not expand past it.
MAX_VALUES = 200_000
# Enough to fix a request by; a body full of NULs is not answered with a million lines.
MAX_REPORTED = 20
# Deeper than any real segment or config; also keeps the walk and pydantic far from recursion limits.
MAX_DEPTH = 64


def _escape(text: str) -> str:
    """A path component printable in an error: control characters and surrogates escaped."""
    if text.isprintable():
        return text
    return text.encode("unicode_escape", errors="backslashreplace").decode("ascii")


def _join(path: str, part: str | int) -> str:
    return f"{path}[{part}]" if isinstance(part, int) else f"{path}.{_escape(part)}"


def text_problem(value: str) -> str | None:
    """Why PostgreSQL cannot store `value` as text, or None when it can."""
    if "\x00" in value:
        return "contains a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "contains an unpaired surrogate (not valid Unicode)"
    return None


def value_problems(value: Any, path: str) -> Iterator[str]:
    """Every `path: reason` in a parsed JSON/YAML value that PostgreSQL would refuse."""
    stack: list[tuple[Any, str, int]] = [(value, path, 0)]
    # YAML aliases make one object appear in many places: walk it once, so an alias bomb
    # costs its size, not its expansion.
    walked: set[int] = set()
    while stack:
        item, where, depth = stack.pop()
        if isinstance(item, dict | list):
            if id(item) in walked:
                continue
            walked.add(id(item))
        if depth > MAX_DEPTH:
            yield f"{where}: nested too deeply (more than {MAX_DEPTH} levels)"
            continue
        if isinstance(item, str):
            problem = text_problem(item)
            if problem:
                yield f"{where}: {problem}"
        elif isinstance(item, bool):
            continue
        elif isinstance(item, int):
            if not BIGINT_MIN <= item <= BIGINT_MAX:
                yield f"{where}: integer out of range ({BIGINT_MIN} to {BIGINT_MAX})"
        elif isinstance(item, float):
            if not math.isfinite(item):
                yield f"{where}: must be a finite number"
        elif isinstance(item, dict):
            for key, child in reversed(item.items()):
                key_text = str(key)
                problem = text_problem(key_text)
                if problem:
                    yield f"{where}: key '{_escape(key_text)}' {problem}"
                    continue
                stack.append((child, _join(where, key_text), depth + 1))
        elif isinstance(item, list):
            for index in reversed(range(len(item))):
                stack.append((item[index], _join(where, index), depth + 1))


def _is_json(content_type: str | None) -> bool:
    # Mirrors FastAPI: no content type, application/json and application/*+json are read as JSON.
    if not content_type:
        return True
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def body_problems(body: bytes, content_type: str | None) -> list[str]:
    """Problems in a request body; a body that does not parse is left to the route to report."""
    if not body:
        return []
    try:
        if content_type and "yaml" in content_type.lower():
            parsed = yaml.safe_load(body.decode("utf-8"))
        elif _is_json(content_type):
            parsed = json.loads(body)
        else:
            return []
    except RecursionError:
        return [f"body: nested too deeply (more than {MAX_DEPTH} levels)"]
    except (ValueError, yaml.YAMLError):
        return []
    if expanded_size(parsed, MAX_VALUES) > MAX_VALUES:
        return [f"body: expands to more than {MAX_VALUES} values (YAML aliases)"]
    return list(itertools.islice(value_problems(parsed, "body"), MAX_REPORTED))


def expanded_size(value: Any, cap: int) -> int:
    """How many values `value` holds once YAML aliases are expanded (stops counting past
    `cap`). Shared objects are counted per use but sized once, so this is cheap even for an
    alias bomb whose expansion is astronomically large."""
    sizes: dict[int, int] = {}

    def size(item: Any, depth: int) -> int:
        if not isinstance(item, dict | list) or depth > MAX_DEPTH:
            return 1
        known = sizes.get(id(item))
        if known is None:
            children = item.values() if isinstance(item, dict) else item
            known = 1
            for child in children:
                known += size(child, depth + 1)
                if known > cap:
                    break
            sizes[id(item)] = known
        return known

    return size(value, 0)


class PathTemplates:
    """The app's path templates as regexes, built on first use from its OpenAPI paths (the one
    list of routes that does not depend on how routers are nested). The template with the most
    literal text wins, so `/campaigns/{id}:preview` is not taken for `/campaigns/{id}`."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self._compiled: list[tuple[str, frozenset[str], re.Pattern[str]]] | None = None

    def _templates(self) -> list[tuple[str, frozenset[str], re.Pattern[str]]]:
        if self._compiled is None:
            compiled = []
            for template, operations in self.app.openapi().get("paths", {}).items():
                regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
                methods = frozenset(m.upper() for m in operations)
                compiled.append((template, methods, re.compile(f"^{regex}$")))
            compiled.sort(key=lambda t: -len(re.sub(r"\{\w+\}", "", t[0])))
            self._compiled = compiled
        return self._compiled

    def match(self, path: str, method: str | None = None) -> tuple[str, dict[str, str]] | None:
        """The template `path` matches (for `method`, when given) and its path parameters."""
        for template, methods, pattern in self._templates():
            if method is not None and method not in methods:
                continue
            if found := pattern.match(path):
                return template, found.groupdict()
        return None

    def params(self, path: str) -> dict[str, str]:
        """The path parameters of the template `path` matches ({} when none does)."""
        found = self.match(path)
        return found[1] if found else {}


def params_problems(templates: PathTemplates, scope: Scope) -> list[str]:
    """Problems in the path and query parameters of a request."""
    problems = []
    for name, value in templates.params(scope["path"]).items():
        if problem := text_problem(value):
            problems.append(f"path.{name}: {problem}")
    query = scope.get("query_string", b"").decode("latin-1")
    for name, value in parse_qsl(query, keep_blank_values=True):
        for where, text in ((f"query.{_escape(name)}", value), ("query", name)):
            if problem := text_problem(text):
                problems.append(f"{where}: {problem}")
                break
    return problems


class InputGuard:
    """ASGI middleware: 413 for bodies over `max_request_bytes`, 422 for unstorable input."""

    def __init__(self, app: ASGIApp, fastapi_app: FastAPI, max_request_bytes: int) -> None:
        self.app = app
        self.templates = PathTemplates(fastapi_app)
        self.max_request_bytes = max_request_bytes

    async def _too_large(self, send: Send) -> None:
        detail = f"request body larger than {self.max_request_bytes} bytes (setting MAX_REQUEST_BYTES)"
        # The unread rest of the body is not drained: close the connection instead.
        content = json.dumps({"detail": detail, "errors": [f"body: {detail}"]}).encode()
        await send_response(send, 413, content, headers=[(b"connection", b"close")])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_request_bytes:
            await self._too_large(send)
            return
        try:
            body = await read_body(receive, self.max_request_bytes)
        except BodyTooLarge:
            await self._too_large(send)
            return
        if body is None:  # the client went away
            return
        problems = params_problems(self.templates, scope) + body_problems(body, headers.get("content-type"))
        if problems:
            await send_response(send, 422, json.dumps({"detail": "; ".join(problems), "errors": problems}).encode())
            return
        await self.app(scope, replaying(body, receive), send)
