"""Headers every response carries: nosniff, a referrer policy, HSTS when served over TLS, and a
Content-Security-Policy on every HTML page that sets none of its own (console pages set theirs).

Pure ASGI and outermost, so the tracking lane, redirects, error pages and static files get them
too; it only appends headers a response did not set itself.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.infra.settings import Settings

# A year, subdomains included: once a browser has seen the console over TLS it never tries http.
HSTS = b"max-age=31536000; includeSubDomains"
REFERRER_POLICY = b"strict-origin-when-cross-origin"
# For HTML that is not the console's (unsubscribe pages, error pages): inline styles only,
# forms back to us, nothing loaded from elsewhere, never framed.
DEFAULT_HTML_POLICY = (
    b"default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; "
    b"frame-ancestors 'none'; base-uri 'none'"
)
# The console's pages set their own policy; anything else under /console (redirects, JSON,
# static files, error pages) gets the console's default.
CONSOLE_PREFIX = "/console"


def served_over_tls(scope: Scope, settings: Settings) -> bool:
    """Whether this request reached us over TLS: CONSOLE_SECURE_COOKIES when set, else the scheme
    uvicorn saw (which follows a trusted proxy's X-Forwarded-Proto)."""
    if settings.console_secure_cookies is not None:
        return settings.console_secure_cookies
    return scope.get("scheme") == "https"


class SecurityHeaders:
    """Adds the headers above to every http response."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; add the headers as the response starts."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tls = served_over_tls(scope, self.settings)
        console = scope["path"].startswith(CONSOLE_PREFIX)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                extra = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", REFERRER_POLICY)]
                if tls:
                    extra.append((b"strict-transport-security", HSTS))
                if b"content-security-policy" not in names:
                    html = any(n.lower() == b"content-type" and v.startswith(b"text/html") for n, v in headers)
                    if console:
                        extra.append((b"content-security-policy", _console_policy()))
                    elif html:
                        extra.append((b"content-security-policy", DEFAULT_HTML_POLICY))
                headers.extend((name, value) for name, value in extra if name not in names)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


def _console_policy() -> bytes:
    # Imported here: the console package pulls in its templates, which the API may not have loaded yet.
    from api.console.common import CONTENT_SECURITY_POLICY

    return CONTENT_SECURITY_POLICY.encode()
