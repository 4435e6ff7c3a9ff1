"""Safe production defaults: outside PENNANT_ENV=dev the API and workers refuse to start with a
missing, short, reused or shipped secret, naming the setting; link-signing keys are a keyring
(mail already sent still verifies after a rotation); every response carries the security
headers and console previews load no remote images unless asked."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from api.app import create_app
from core.common import signed_links as links
from core.engagement import tracking
from core.infra.settings import Settings, UnsafeSettings
from devstack.inprocess import free_port, serving
from tests.console.test_sessions import _get, _sign_in
from tests.helpers.faults import ROOT
from tests.helpers.runs import create_campaign
from tests.helpers.tenants import MakeTenant

GOOD = {
    "admin_key": "adm_" + "A" * 40,
    "link_signing_secret": "L" * 43,
    "provider_events_secret": "P" * 43,
    "console_session_secret": "C" * 43,
    "secrets_keyring": "k1:" + "K" * 43,
}


def _production(**values: Any) -> Settings:
    # Explicit values, so nothing in this process's environment decides the outcome.
    return Settings(**{"pennant_env": "production", **GOOD, **values})


def _refusal(settings: Settings) -> str:
    with pytest.raises(UnsafeSettings) as raised:
        create_app(settings)
    return str(raised.value)


def test_missing_secrets_are_refused_naming_each_setting() -> None:
    message = _refusal(
        _production(admin_key=None, link_signing_secret=None, provider_events_secret=None, console_session_secret=None)
    )
    for name in ("ADMIN_KEY", "LINK_SIGNING_SECRET", "PROVIDER_EVENTS_SECRET", "CONSOLE_SESSION_SECRET"):
        assert f"{name}: not set" in message, message
    assert "SECRETS_KEYRING: not set" in _refusal(_production(secrets_keyring=None))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        # What docker-compose.yml used to fall back to, and what the devstack and tests use.
        ("admin_key", "change-me"),
        ("link_signing_secret", "change-me-too"),
        ("provider_events_secret", "change-me-three"),
        ("link_signing_secret", "test-signing-secret"),
        ("provider_events_secret", "test-provider-events-secret"),
        ("link_signing_secret", "local-stack-secret"),
        ("admin_key", "change-me-" + "x" * 40),  # long, but still the placeholder
    ],
)
def test_values_the_repository_ships_are_refused(field: str, value: str) -> None:
    message = _refusal(_production(**{field: value}))
    assert f"{field.upper()}: a value this repository ships" in message, message


def test_short_secrets_are_refused() -> None:
    message = _refusal(_production(admin_key="adm_" + "k" * 20, console_session_secret="s" * 31))
    assert "ADMIN_KEY: shorter than 32 bytes" in message
    assert "CONSOLE_SESSION_SECRET: shorter than 32 bytes" in message
    # Every key of the link keyring counts, old ones too.
    message = _refusal(_production(link_signing_secret="N" * 43 + ",short-old-key"))
    assert "LINK_SIGNING_SECRET: shorter than 32 bytes" in message


def test_one_secret_for_two_purposes_is_refused() -> None:
    message = _refusal(_production(console_session_secret=GOOD["link_signing_secret"]))
    assert "CONSOLE_SESSION_SECRET: the same value as LINK_SIGNING_SECRET" in message


def test_metrics_beyond_loopback_need_a_token() -> None:
    message = _refusal(_production(api_host="0.0.0.0"))
    assert "METRICS_TOKEN: not set, and metrics are reachable beyond loopback (0.0.0.0)" in message
    message = _refusal(_production(worker_metrics_port=9464, metrics_host="0.0.0.0", metrics_token="s3cret"))
    assert "METRICS_TOKEN: a value this repository ships" in message
    create_app(_production(api_host="0.0.0.0", metrics_token="M" * 43))
    create_app(_production(api_host="127.0.0.1", worker_metrics_port=9464))  # loopback only: no token needed


def test_good_settings_start_and_dev_allows_generated_ones() -> None:
    create_app(_production())
    create_app(Settings(pennant_env="dev", admin_key=None, link_signing_secret="short", provider_events_secret=None))


def test_workers_refuse_to_start_with_unsafe_settings() -> None:
    from workers.main import run

    with pytest.raises(UnsafeSettings, match="PROVIDER_EVENTS_SECRET: not set"):
        run(_production(provider_events_secret=None), processes=1)


@pytest.mark.parametrize("command", ["api", "worker"])
def test_the_real_processes_refuse_compose_old_defaults(command: str) -> None:
    """`pennant api` / `pennant worker` as compose used to start them (its fallback values) exit
    at once, naming the settings, before touching any server."""
    env = {k: v for k, v in os.environ.items() if k != "PENNANT_ENV"}
    env.update(
        ADMIN_KEY="change-me",
        LINK_SIGNING_SECRET="change-me-too",
        PROVIDER_EVENTS_SECRET="change-me-three",
        DATABASE_URL="postgresql://nobody@127.0.0.1:1/none",
        OTEL_EXPORTER="none",
    )
    done = subprocess.run(
        [sys.executable, "-m", "devstack.cli", command, *(["--processes", "1"] if command == "worker" else [])],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0
    output = done.stdout + done.stderr
    for name in ("ADMIN_KEY", "LINK_SIGNING_SECRET", "PROVIDER_EVENTS_SECRET", "CONSOLE_SESSION_SECRET"):
        assert name in output, output[-2000:]


# -- the link keyring ---------------------------------------------------------------------------


def test_link_tokens_survive_a_rotation_and_die_with_their_key() -> None:
    old, new = "O" * 43, "N" * 43
    before = links.sign({"t": "acme", "c": 7, "ch": "email"}, old)
    after = links.sign({"t": "acme", "c": 7, "ch": "email"}, f"{new},{old}")
    assert links.verify(before, f"{new},{old}") is not None, "mail sent before the rotation"
    assert links.verify(after, f"{new},{old}")["kid"] == links.key_id(new)  # type: ignore[index]
    assert links.verify(after, old) is None, "signed with the newest key"
    assert links.verify(before, new) is None, "a key dropped from the ring verifies nothing"
    token = tracking.Token("acme", "00000000-0000-0000-0000-000000000001", 7, "email", "open")
    sent = tracking.sign(token, old)
    assert tracking.verify(sent, f"{new},{old}", "open") == token
    assert tracking.verify(sent, new, "open") is None
    assert tracking.verify(tracking.sign(token, f"{new},{old}"), new, "open") == token


@pytest.fixture
async def rotated_api(settings: Settings, temporal_client: Client) -> AsyncIterator[str]:
    """A second API whose link keyring has a new key in front of the suite's."""
    assert settings.link_signing_secret
    rotated = settings.model_copy(
        update={
            "link_signing_secret": f"rotated-{'n' * 40},{settings.link_signing_secret}",
            "temporal_address": temporal_client.service_client.config.target_host,
        }
    )
    async with serving(create_app(rotated), free_port()) as url:
        yield url


async def test_unsubscribe_links_in_sent_mail_verify_after_a_rotation(
    make_tenant: MakeTenant, settings: Settings, rotated_api: str
) -> None:
    tenant = await make_tenant(customers=2)
    assert settings.link_signing_secret
    payload = {"t": tenant.slug, "c": 1, "ch": "email"}
    sent_before = links.sign(payload, settings.link_signing_secret)
    # A token from before keyrings existed: no key id in it.
    legacy = _legacy_token(payload, settings.link_signing_secret)
    dropped = links.sign(payload, "an-old-key-already-dropped-" + "x" * 20)
    async with httpx.AsyncClient(base_url=rotated_api) as public:
        for token in (sent_before, legacy):
            page = await public.get(f"/u/{token}")
            assert page.status_code == 200 and "Unsubscribe" in page.text
        assert (await public.get(f"/u/{dropped}")).status_code == 400


def _legacy_token(payload: dict[str, Any], secret: str) -> str:
    import base64
    import hashlib
    import hmac
    import json

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    body = b64(json.dumps({**payload, "exp": int(time.time()) + 3600}, separators=(",", ":")).encode())
    return f"{body}.{b64(hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest())}"


# -- headers ------------------------------------------------------------------------------------


async def test_every_response_carries_the_security_headers(api_url: str) -> None:
    async with httpx.AsyncClient(base_url=api_url) as public:
        answers = {
            path: await public.get(path)
            for path in (
                "/healthz",
                "/console/login",
                "/console/static/console.css",
                "/u/garbage",
                "/t/o/garbage",
                "/console",
            )
        }
        over_tls = await public.get("/healthz", headers={"X-Forwarded-Proto": "https"})
    for path, response in answers.items():
        assert response.headers["x-content-type-options"] == "nosniff", path
        assert response.headers["referrer-policy"] in ("strict-origin-when-cross-origin", "no-referrer"), path
        assert "strict-transport-security" not in response.headers, f"{path}: no HSTS over plain http"
    for path in ("/console/login", "/console/static/console.css", "/console"):
        policy = answers[path].headers["content-security-policy"]
        assert "frame-ancestors 'none'" in policy and "img-src 'self' data:;" in policy, (path, policy)
    assert "default-src 'none'" in answers["/u/garbage"].headers["content-security-policy"]
    assert over_tls.headers["strict-transport-security"].startswith("max-age=31536000")


async def test_previews_load_no_remote_images_unless_the_marketer_asks(make_tenant: MakeTenant, api_url: str) -> None:
    tenant = await make_tenant(customers=1)
    campaign_id = await create_campaign(tenant)
    cookie, _ = await _sign_in(api_url, tenant.key)
    page = await _get(api_url, f"/console/campaigns/{campaign_id}", cookie)
    assert page.status_code == 200
    policy = page.headers["content-security-policy"]
    assert "img-src 'self' data:;" in policy and "https:" not in policy and "*" not in policy
    assert "Show remote images" in page.text
    shown = await _get(api_url, f"/console/campaigns/{campaign_id}?images=1", cookie)
    assert "img-src 'self' data: https:;" in shown.headers["content-security-policy"]
    assert "Hide remote images" in shown.text


def test_worker_metrics_answer_only_the_metrics_token(settings: Settings) -> None:
    from workers.metrics import serve_metrics

    token = "M" * 43
    port = serve_metrics(settings.model_copy(update={"worker_metrics_port": free_port(), "metrics_token": token}))
    assert port
    url = f"http://127.0.0.1:{port}/metrics"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
    answer = httpx.get(url, headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200 and "pennant_" in answer.text
