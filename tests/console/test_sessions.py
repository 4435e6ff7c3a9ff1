"""Console sessions are recorded server-side: signing out or revoking the key ends them
everywhere (a copied cookie is dead), cookies are Secure behind a TLS-terminating proxy, and
the cookie is signed with a key of its own. Plain HTTP against the real API, no browser."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from typing import Any

import asyncpg
import httpx

from api.console import session as sessions
from core.infra.db import tenant_tx
from core.infra.settings import Settings
from tests.helpers.tenants import MakeTenant


def _set_cookie(response: httpx.Response, name: str) -> tuple[str, str]:
    """The value and the whole Set-Cookie line of cookie `name` in `response`."""
    for line in response.headers.get_list("set-cookie"):
        if line.startswith(f"{name}="):
            return line.split(";", 1)[0].split("=", 1)[1].strip('"'), line
    raise AssertionError(f"no {name} cookie set: {response.headers.get_list('set-cookie')}")


async def _sign_in(api_url: str, key: str, headers: dict[str, str] | None = None) -> tuple[str, httpx.Response]:
    """Sign in as a browser would (form, login-CSRF cookie, post); the session cookie's value.
    Cookies are carried by hand: a Secure cookie would not be sent back over http."""
    headers = headers or {}
    async with httpx.AsyncClient(base_url=api_url) as browser:
        form = await browser.get("/console/login", headers=headers)
        assert form.status_code == 200
        token, _ = _set_cookie(form, sessions.LOGIN_COOKIE)
        done = await browser.post(
            "/console/login",
            data={"key": key, "csrf": token},
            headers={**headers, "Cookie": f"{sessions.LOGIN_COOKIE}={token}"},
        )
    assert done.status_code == 303, done.text
    value, _ = _set_cookie(done, sessions.COOKIE)
    return value, done


def _claims(cookie: str) -> dict[str, Any]:
    body = cookie.split(".")[0]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return claims


async def _get(api_url: str, path: str, cookie: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=api_url) as browser:
        return await browser.get(path, headers={"Cookie": f"{sessions.COOKIE}={cookie}"})


async def _sign_out(api_url: str, cookie: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=api_url) as browser:
        return await browser.post(
            "/console/logout", data={"csrf": _claims(cookie)["csrf"]}, headers={"Cookie": f"{sessions.COOKIE}={cookie}"}
        )


def _signed_out(response: httpx.Response) -> bool:
    return response.status_code == 303 and response.headers["location"].endswith("/console/login")


async def test_signing_out_kills_every_copy_of_the_cookie(make_tenant: MakeTenant, api_url: str) -> None:
    tenant = await make_tenant(customers=0)
    cookie, _ = await _sign_in(api_url, tenant.key)
    other_device, _ = await _sign_in(api_url, tenant.key)
    assert (await _get(api_url, "/console/campaigns", cookie)).status_code == 200
    copied = cookie  # what an attacker lifted from the browser before sign-out

    out = await _sign_out(api_url, cookie)
    assert _signed_out(out)
    assert _signed_out(await _get(api_url, "/console/campaigns", copied)), "a copied cookie must die with sign-out"
    # Only that session ended: the same key's other session goes on.
    assert (await _get(api_url, "/console/campaigns", other_device)).status_code == 200


async def test_revoking_the_key_ends_its_console_sessions(
    make_tenant: MakeTenant, api_url: str, admin_key: str
) -> None:
    tenant = await make_tenant(customers=0)
    async with httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {admin_key}"}) as admin:
        issued = (await admin.post(tenant.url("/keys"), params={"label": "console user"})).json()
    cookie, _ = await _sign_in(api_url, issued["key"])
    assert (await _get(api_url, "/console/campaigns", cookie)).status_code == 200
    assert (await tenant.http.delete(tenant.url(f"/keys/{issued['id']}"))).status_code == 204
    assert _signed_out(await _get(api_url, "/console/campaigns", cookie))


async def test_admin_sessions_are_recorded_and_end_on_sign_out(
    api_url: str, admin_key: str, pool: asyncpg.Pool
) -> None:
    cookie, _ = await _sign_in(api_url, admin_key)
    assert (await _get(api_url, "/console/tenants", cookie)).status_code == 200
    sid = uuid.UUID(_claims(cookie)["id"])
    assert await pool.fetchval("SELECT revoked_at IS NULL FROM console_admin_sessions WHERE id = $1", sid)
    assert _signed_out(await _sign_out(api_url, cookie))
    assert _signed_out(await _get(api_url, "/console/tenants", cookie))
    assert await pool.fetchval("SELECT revoked_at IS NOT NULL FROM console_admin_sessions WHERE id = $1", sid)


async def test_a_tenants_session_rows_are_its_own(make_tenant: MakeTenant, api_url: str, pool: asyncpg.Pool) -> None:
    a = await make_tenant(customers=0)
    b = await make_tenant(customers=0)
    cookie, _ = await _sign_in(api_url, a.key)
    sid = uuid.UUID(_claims(cookie)["id"])
    async with tenant_tx(pool, a.slug) as conn:
        assert await conn.fetchval("SELECT count(*) FROM console_sessions WHERE id = $1", sid) == 1
    async with tenant_tx(pool, b.slug) as conn:
        assert await conn.fetchval("SELECT count(*) FROM console_sessions WHERE id = $1", sid) == 0


async def test_cookies_are_secure_behind_a_tls_terminating_proxy(make_tenant: MakeTenant, api_url: str) -> None:
    tenant = await make_tenant(customers=0)
    # The test client is on loopback, which uvicorn trusts as a proxy by default
    # (FORWARDED_ALLOW_IPS): the request reached the proxy over https.
    _, behind_proxy = await _sign_in(api_url, tenant.key, {"X-Forwarded-Proto": "https"})
    _, line = _set_cookie(behind_proxy, sessions.COOKIE)
    attributes = {part.strip().lower() for part in line.split(";")[1:]}
    assert {"secure", "httponly", "samesite=lax"} <= attributes, line
    assert behind_proxy.headers["strict-transport-security"].startswith("max-age=")

    _, plain = await _sign_in(api_url, tenant.key)
    _, line = _set_cookie(plain, sessions.COOKIE)
    assert "secure" not in {part.strip().lower() for part in line.split(";")[1:]}, "plain http: no Secure"
    assert "strict-transport-security" not in plain.headers


def test_the_secure_cookies_setting_wins_over_the_scheme(settings: Settings) -> None:
    def request(scheme: str) -> Any:
        from starlette.requests import Request

        return Request({"type": "http", "scheme": scheme, "path": "/", "headers": [], "server": ("x", 80)})

    forced = settings.model_copy(update={"console_secure_cookies": True})
    never = settings.model_copy(update={"console_secure_cookies": False})
    assert sessions.secure_cookies(request("http"), forced)
    assert not sessions.secure_cookies(request("https"), never)
    assert sessions.secure_cookies(request("https"), settings)
    assert not sessions.secure_cookies(request("http"), settings)


async def test_a_cookie_signed_with_the_link_secret_is_refused(
    make_tenant: MakeTenant, api_url: str, settings: Settings
) -> None:
    """Sessions have a key of their own: the old derivation from LINK_SIGNING_SECRET (which mail
    links are signed with) no longer forges a session, even one that exists."""
    tenant = await make_tenant(customers=0)
    cookie, _ = await _sign_in(api_url, tenant.key)
    body = cookie.split(".")[0]
    assert settings.link_signing_secret
    old_key = hashlib.sha256(b"pennant-console-session\0" + settings.link_signing_secret.encode()).digest()
    mac = base64.urlsafe_b64encode(hmac.new(old_key, body.encode(), hashlib.sha256).digest()).rstrip(b"=").decode()
    assert _signed_out(await _get(api_url, "/console/campaigns", f"{body}.{mac}"))
    assert (await _get(api_url, "/console/campaigns", cookie)).status_code == 200
    # Two secrets, two keys: the console's key is derived from CONSOLE_SESSION_SECRET alone.
    a = settings.model_copy(update={"console_session_secret": "x" * 40})
    assert sessions.signing_key(a) != old_key
    assert sessions.signing_key(a) == sessions.signing_key(a.model_copy(update={"link_signing_secret": "other"}))
