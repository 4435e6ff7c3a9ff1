"""What the ASGI middlewares (the input guard, idempotency keys) share: reading a request body
whole, handing a body already read on to the app, and sending a whole response."""

from __future__ import annotations

from collections.abc import Sequence

from starlette.types import Message, Receive, Send

JSON = b"application/json"


class BodyTooLarge(Exception):
    """The request body grew past the limit `read_body` was given (the rest is left unread)."""


async def read_body(receive: Receive, limit: int | None = None) -> bytes | None:
    """The whole request body, or None when the client went away before sending it all; raises
    BodyTooLarge as soon as more than `limit` bytes have arrived."""
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if limit is not None and size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


def replaying(body: bytes, receive: Receive) -> Receive:
    """A `receive` for the app that yields `body` (already read) first, then what `receive` yields
    (only a disconnect can follow a whole body)."""
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def send_response(
    send: Send, status: int, body: bytes, content_type: bytes = JSON, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    """Send a whole response: status, content type and length, `headers`, then `body`."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})
