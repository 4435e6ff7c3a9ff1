"""A chat-completions endpoint for the provider simulator (`POST /v1/chat/completions`, the
OpenAI-style API), so the suggestions provider engine runs against a real HTTP server in tests
and the local stack.

It needs a bearer key and a body with `model` and `messages`, and answers a `chat.completion`
whose message content is JSON `{"suggestions": [{"text", "reason"}]}` built from the first of
the `current` texts in the last user message (JSON, as Pennant sends it; else the message
itself): a personalised one, an urgent one, a short one, and two that are not valid templates
(an unknown variable and a syntax error), which Pennant must drop. Each request is in the
simulator's request log (`/_sim/requests`) as channel `chat` with its model.
"""

from __future__ import annotations

import json
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response


def _error(status: int, message: str, kind: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind}}, status_code=status)


def _current(messages: list[Any]) -> str:
    """The first current text of the last user message."""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = str(message.get("content") or "")
            try:
                current = json.loads(content).get("current") or []
            except (ValueError, AttributeError):
                return content.strip() or "Our latest offers"
            return str(current[0]) if current else "Our latest offers"
    return "Our latest offers"


def suggestions_for(text: str) -> list[dict[str, str]]:
    """What the simulated model suggests for `text`: three valid templates, then two invalid ones."""
    lowered = text[0].lower() + text[1:] if text[:1].isupper() else text
    words = text.split()
    return [
        {"text": "{{ first_name }}, " + lowered, "reason": "personalised subjects get more opens"},
        {"text": text.rstrip(" .!") + " - today only", "reason": "urgency lifts opens"},
        {"text": " ".join(words[:3]) if len(words) > 3 else text + "?", "reason": "short and direct"},
        {"text": "{{ frist_name }}, " + lowered, "reason": "a typo in the variable (must be dropped)"},
        {"text": "{% if %}" + text, "reason": "a syntax error (must be dropped)"},
    ]


async def chat_completions(request: Request) -> Response:
    """`POST /v1/chat/completions`: a deterministic chat completion of suggestions."""
    state = request.app.state.sim
    entry = state.begin("chat", request.url.path, [])
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        state.stats["unauthorized"] += 1
        entry["status"] = 401
        return _error(401, "a bearer API key is required", "invalid_request_error")
    try:
        body = json.loads(await request.body())
        model, messages = body["model"], body["messages"]
        assert isinstance(model, str) and model and isinstance(messages, list)
    except (ValueError, KeyError, TypeError, AssertionError):
        entry["status"] = 400
        return _error(400, "body must be {model, messages: [...]}", "invalid_request_error")
    entry.update(status=200, model=model)
    content = json.dumps({"suggestions": suggestions_for(_current(messages))})
    return JSONResponse(
        {
            "id": f"chatcmpl-sim-{entry['seq']}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        }
    )
