"""Opens and clicks on the real stack: delivered emails carry tracked links and an open pixel,
hits through the real HTTP endpoints are recorded against the right run, variant and customer,
forged tokens and unknown links are refused, machine hits are flagged, tracking can be off,
and an answered hit survives a SIGKILL of the API process."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import asyncpg
import httpx
from temporalio.client import Client

from core.content.templating import RenderedEmail
from core.engagement import tracking
from core.infra.settings import Settings
from core.tenants.config_schema import Engagement, Experiments, Policies
from devstack.provider_simulator import SimulatorControl
from tests.helpers.engagement import run_emails
from tests.helpers.faults import ROOT, worker_env
from tests.helpers.runs import create_campaign, run_campaign, start_run, wait_for_run
from tests.helpers.stack import free_port
from tests.helpers.tenants import MakeTenant, Tenant
from tests.helpers.waiting import until

BROWSER = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)"
    " Version/17.0 Safari/605.1.15"
)
PHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148"
GMAIL_PROXY = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
DEALS = "https://freshmart.example.com/deals"
TWO_VARIANTS: dict[str, Any] = {
    "variants": [
        {"key": "A", "template": "weekly_deals"},
        {"key": "B", "template": "weekly_deals", "subject": "B: {{ first_name }}, deals"},
    ],
    "holdout_percent": 0,
}
# No quiet hours, caps or default holdout: every consenting customer gets the message now.
NO_POLICIES: dict[str, Any] = {"policies": Policies(), "experiments": Experiments()}
_CLICK = re.compile(r'href="(http://pennant\.test/t/c/[A-Za-z0-9_-]+)"')
_PIXEL = re.compile(r'<img src="(http://pennant\.test/t/o/[A-Za-z0-9_-]+)" width="1" height="1" alt="">')


def _html(message: Any) -> str:
    return str(message.get_body(("html",)).get_content())


def _path(url: str) -> str:
    return urlparse(url).path


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


async def _events(pool: asyncpg.Pool, tenant: str, run_id: str) -> list[asyncpg.Record]:
    """The run's opens and clicks (the sinks report deliveries too) with the variant the
    ledger gave each one's message."""
    return await pool.fetch(
        """SELECT e.*, d.variant FROM message_events e
           LEFT JOIN deliveries d USING (tenant_id, run_id, customer_id, channel)
           WHERE e.tenant_id = $1 AND e.run_id = $2::uuid AND e.kind IN ('open', 'click') ORDER BY e.id""",
        tenant,
        run_id,
    )


# -- tokens and rewriting, on their own -------------------------------------------------------


def test_tokens_are_compact_and_any_change_is_refused() -> None:
    run = str(uuid.uuid4())
    click = tracking.Token("freshmart-0123abcd", run, 9_876_543, "email", "click", tracking.link_id(DEALS))
    signed = tracking.sign(click, "secret")
    assert len(signed) <= 80 and re.fullmatch(r"[A-Za-z0-9_-]+", signed)
    assert tracking.verify(signed, "secret", "click") == click
    assert tracking.verify(signed, "other-secret", "click") is None
    assert tracking.verify(signed, "secret", "open") is None  # a click token is no open token
    for i in range(len(signed)):  # every single-character change anywhere is refused
        altered = signed[:i] + ("A" if signed[i] != "A" else "B") + signed[i + 1 :]
        assert tracking.verify(altered, "secret", "click") is None, i
    for garbage in ("", "x", "!!!!", signed[:-1], signed + "A", "A" * 500):
        assert tracking.verify(garbage, "secret", "click") is None
    opened = tracking.Token("t", run, 0, "sms", "open")
    assert tracking.verify(tracking.sign(opened, "secret"), "secret", "open") == opened


def test_html_links_are_rewritten_with_the_markup_left_alone() -> None:
    html = """<html><body>
<!-- <a href="https://commented.example/"> -->
<a href="https://shop.example/a?x=1&amp;y=2" title='say href="https://no.example"'>one</a>
<A HREF='http://shop.example/b'>two</A> <a class=c href=https://shop.example/c>three</a>
<a title="&quot;>" href = "https://shop.example/d" >four</a>
<a href="mailto:help@shop.example">mail</a> <a href="#top">top</a> <a href="tel:+15550100">call</a>
<a href="http://pennant.test/u/unsub-token">unsubscribe</a> <a data-href="https://no.example/">none</a>
<script>document.write('<a href="https://script.example/">')</script>
<map><area shape="rect" href="https://shop.example/e"></map><p>café &amp; crème</p>
<div title="<a href='https://in-attribute.example/'>">x</div><abbr href="https://abbr.example/">y</abbr>
<style>a[href="https://style.example/"] {}</style><textarea><a href="https://textarea.example/"></textarea>
</body></html>"""
    tracker = tracking.RunTracking("s", "http://pennant.test", "shop", str(uuid.uuid4()), Engagement())
    out = tracker.apply(RenderedEmail("subject", html, "text"), "email", 7, "http://pennant.test/u/unsub-token")
    wanted = {
        "https://shop.example/a?x=1&y=2",  # entities decoded: the URL a browser would follow
        "http://shop.example/b",
        "https://shop.example/c",
        "https://shop.example/d",
        "https://shop.example/e",
    }
    assert set(tracker.links.values()) == wanted
    assert {tracking.link_id(u) for u in wanted} == set(tracker.links)
    assert out.html.count("http://pennant.test/t/c/") == 5
    for kept in (
        '<!-- <a href="https://commented.example/"> -->',
        "title='say href=\"https://no.example\"'",
        'href="mailto:help@shop.example"',
        'href="#top"',
        'href="tel:+15550100"',
        'href="http://pennant.test/u/unsub-token"',
        'data-href="https://no.example/"',
        "document.write('<a href=\"https://script.example/\">')",
        "<p>café &amp; crème</p>",
        "<div title=\"<a href='https://in-attribute.example/'>\">",
        '<abbr href="https://abbr.example/">',
        'a[href="https://style.example/"]',
        '<textarea><a href="https://textarea.example/"></textarea>',
        '<A HREF="http://pennant.test/t/c/',
        '<a title="&quot;>" href = "http://pennant.test/t/c/',
    ):
        assert kept in out.html, kept
    assert _PIXEL.search(out.html) and out.html.endswith('alt=""></body></html>')


def test_damaged_markup_is_scanned_in_linear_time() -> None:
    """Rewriting runs on every message at send time: no markup may make it quadratic."""
    n = 50_000  # the longest of these is 500,000 characters, the HTML part's output limit
    for damaged in ("<a " * n, "<a href='" * n, '<p title="' + "<a href=x>" * n, "<a title='" + '<a t="x" ' * n):
        began = time.perf_counter()
        tracking.rewrite_html_links(damaged, lambda url: "https://tracked.example/")
        assert time.perf_counter() - began < 2.0, damaged[:20]


def test_text_links_keep_their_punctuation() -> None:
    tracker = tracking.RunTracking("s", "http://pennant.test", "shop", str(uuid.uuid4()), Engagement())

    def wrap(url: str) -> str:
        return f"<{url}>"

    text = "See https://shop.example/a. Or (http://shop.example/b), mailto:x@y.z and HTTPS://shop.example/c?q=1!"
    assert tracking.rewrite_text_links(text, wrap) == (
        "See <https://shop.example/a>. Or (<http://shop.example/b>), mailto:x@y.z and <HTTPS://shop.example/c?q=1>!"
    )
    assert tracker.links == {}


# -- the real stack ---------------------------------------------------------------------------


async def test_open_and_click_are_recorded_for_the_run_variant_and_customer(
    make_tenant: MakeTenant, pool: asyncpg.Pool, api_url: str, workdir: Path
) -> None:
    tenant = await make_tenant(customers=40, engagement=Engagement(machine_seconds=0), **NO_POLICIES)
    campaign_id = await create_campaign(tenant, name="Tracked", **TWO_VARIANTS)
    run_id = await start_run(tenant, campaign_id)
    assert (await wait_for_run(tenant, run_id))["status"] == "completed"

    messages = run_emails(workdir, run_id)
    variants = {
        r["customer_id"]: r["variant"]
        for r in await pool.fetch(
            """SELECT customer_id, variant FROM deliveries
               WHERE tenant_id = $1 AND run_id = $2::uuid AND status = 'sent'""",
            tenant.slug,
            run_id,
        )
    }
    assert set(messages) == set(variants) and {"A", "B"} <= set(variants.values())
    for message in messages.values():
        html = _html(message)
        assert f'href="{DEALS}"' not in html and len(_CLICK.findall(html)) >= 1
        assert 'href="http://pennant.test/u/' in html, "the unsubscribe link stays as it is"
        assert html.count("/t/o/") == 1 and _PIXEL.search(html)
        assert html.index("/t/o/") < html.rindex("</body>")
    links = await pool.fetch(
        "SELECT link_id, url FROM run_links WHERE tenant_id = $1 AND run_id = $2::uuid", tenant.slug, run_id
    )
    assert {r["url"] for r in links} == {DEALS, "https://freshmart.example.com"}

    opener = next(c for c, v in variants.items() if v == "A")
    # The fr-CA copy of the template has no deals link, and demo customers' locales are random:
    # the clicker is a B recipient whose email holds it.
    clicker = next(c for c, v in variants.items() if v == "B" and "See the deals" in _html(messages[c]))
    pixel = _PIXEL.search(_html(messages[opener]))
    assert pixel is not None
    deals_link = _CLICK.findall(_html(messages[clicker]))[0]  # the content's link comes before the footer's
    async with httpx.AsyncClient(base_url=api_url, headers={"User-Agent": BROWSER}) as public:
        opened = await public.get(_path(pixel.group(1)))
        assert opened.status_code == 200 and opened.headers["content-type"] == "image/gif"
        assert opened.content.startswith(b"GIF89a") and "no-store" in opened.headers["cache-control"]
        clicked = await public.get(_path(deals_link))
        assert clicked.status_code == 302 and clicked.headers["location"] == DEALS

    # Answered means written: the rows are there the moment the responses are.
    events = await _events(pool, tenant.slug, run_id)
    got = [(e["kind"], e["customer_id"], e["variant"], e["channel"], e["machine"]) for e in events]
    assert got == [("open", opener, "A", "email", False), ("click", clicker, "B", "email", False)]
    assert events[0]["link_id"] is None and events[0]["user_agent"] == BROWSER
    assert {r["link_id"]: r["url"] for r in links}[events[1]["link_id"]] == clicked.headers["location"]
    assert all("127.0.0.1" not in str(v) for e in events for v in dict(e).values()), "no client address is stored"

    # Preview shows the template's own links (nothing there records or redirects).
    preview = await tenant.http.post(tenant.url(f"/campaigns/{campaign_id}:preview"), json={})
    assert preview.status_code == 200, preview.text
    assert f'href="{DEALS}"' in preview.json()["html"] and "/t/o/" not in preview.json()["html"]


async def test_forged_altered_and_unknown_links_are_refused_without_a_redirect(
    make_tenant: MakeTenant, pool: asyncpg.Pool, api_url: str, workdir: Path, settings: Settings
) -> None:
    tenant = await make_tenant(customers=10, **NO_POLICIES)
    run_id = str((await run_campaign(tenant, name="Refusals"))["id"])
    html = _html(next(iter(run_emails(workdir, run_id).values())))
    good = _path(_CLICK.findall(html)[0]).rsplit("/", 1)[1]
    token = tracking.verify(good, settings.link_signing_secret or "", "click")
    assert token is not None
    forged = tracking.sign(token, "not-the-secret")
    altered = good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB")
    # Another customer's record under this token's MAC.
    neighbour = tracking.sign(dataclasses.replace(token, customer_id=token.customer_id + 1), "any")
    other_customer = _b64(_unb64(neighbour)[: -tracking.MAC_BYTES] + _unb64(good)[-tracking.MAC_BYTES :])
    evil = tracking.link_id("https://evil.example/")
    unknown = tracking.sign(
        tracking.Token(token.tenant, token.run_id, 1, "email", "click", evil), settings.link_signing_secret or ""
    )
    open_as_click = _path(_PIXEL.findall(html)[0]).rsplit("/", 1)[1]
    async with httpx.AsyncClient(base_url=api_url, headers={"User-Agent": BROWSER}) as public:
        # Each kind of token only works on its own endpoint: an open is no click, and back.
        for path, bad in [
            *((p, t) for t in (forged, altered, other_customer, "garbage", "A" * 300) for p in ("/t/c/", "/t/o/")),
            ("/t/c/", open_as_click),
            ("/t/o/", good),
        ]:
            response = await public.get(f"{path}{bad}")
            assert response.status_code == 404 and "location" not in response.headers, (path, bad)
            assert "not valid" in response.json()["detail"]
        response = await public.get(f"/t/c/{unknown}", params={"url": "https://evil.example/"})
        assert response.status_code == 404 and "location" not in response.headers
        assert "no such link" in response.json()["detail"]
    assert await _events(pool, tenant.slug, run_id) == []


async def test_machine_hits_are_flagged_never_dropped(
    make_tenant: MakeTenant, pool: asyncpg.Pool, api_url: str, workdir: Path
) -> None:
    human_window = await make_tenant(customers=10, engagement=Engagement(machine_seconds=0), **NO_POLICIES)
    long_window = await make_tenant(customers=10, engagement=Engagement(machine_seconds=3600), **NO_POLICIES)
    agents = {
        "Mozilla/5.0": "apple_mail_privacy",
        GMAIL_PROXY: "scanner:gmail_image_proxy",
        "Mozilla/5.0 (compatible; Barracuda Sentinel (EE))": "scanner:barracuda",
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)": "bot:Googlebot",
        "curl/8.5.0": "bot:curl",
        "": "no_user_agent",
        BROWSER: None,
        PHONE: None,
    }
    for tenant, window in ((human_window, 0), (long_window, 3600)):
        run_id = str((await run_campaign(tenant, name=f"Machines {window}"))["id"])
        pixel = _PIXEL.search(_html(next(iter(run_emails(workdir, run_id).values()))))
        assert pixel is not None
        async with httpx.AsyncClient(base_url=api_url) as public:
            for agent in agents:
                response = await public.get(_path(pixel.group(1)), headers={"User-Agent": agent})
                assert response.status_code == 200
        stored = {
            e["user_agent"] or "": (e["machine"], e["machine_reason"]) for e in await _events(pool, tenant.slug, run_id)
        }
        for agent, reason in agents.items():
            # Within the window every hit is a machine's; the user agent's reason comes first.
            expected = reason or ("too_soon" if window else None)
            assert stored[agent] == (expected is not None, expected), agent


async def test_tracking_off_for_the_tenant_or_the_campaign_leaves_links_untouched(
    make_tenant: MakeTenant, pool: asyncpg.Pool, workdir: Path
) -> None:
    off = Engagement(track_opens=False, track_clicks=False)
    tenant_off = await make_tenant(customers=10, engagement=off, **NO_POLICIES)
    tenant_on = await make_tenant(customers=10, **NO_POLICIES)
    for tenant, changes in ((tenant_off, {}), (tenant_on, {"tracking": False})):
        run_id = str((await run_campaign(tenant, name="Untracked", **changes))["id"])
        messages = run_emails(workdir, run_id)
        assert messages
        for message in messages.values():
            html = _html(message)
            # Every locale's footer links the brand's site; the English content links the deals.
            assert 'href="https://freshmart.example.com"' in html and "/t/c/" not in html and "/t/o/" not in html
            assert "/t/c/" not in message.get_body(("plain",)).get_content()
        assert not await pool.fetchval("SELECT count(*) FROM run_links WHERE tenant_id = $1", tenant.slug)


async def test_sms_links_are_tracked_where_the_tenant_says_so(
    make_tenant: MakeTenant, pool: asyncpg.Pool, api_url: str, sim: SimulatorControl
) -> None:
    tenant = await make_tenant(
        customers=40, engagement=Engagement(track_sms_links=True, machine_seconds=0), **NO_POLICIES
    )
    run_id = str((await run_campaign(tenant, channels=["sms"], name="SMS tracked"))["id"])
    delivered = await sim.messages("sms", contains=f":{run_id}:")
    assert delivered
    for message in delivered:
        assert DEALS not in message["body"] and message["body"].endswith("Reply STOP to opt out. FreshMart")
    link = re.search(r"http://pennant\.test/t/c/[A-Za-z0-9_-]+", delivered[0]["body"])
    assert link is not None
    async with httpx.AsyncClient(base_url=api_url, headers={"User-Agent": BROWSER}) as public:
        response = await public.get(_path(link.group(0)))
    assert response.status_code == 302 and response.headers["location"] == DEALS
    events = await _events(pool, tenant.slug, run_id)
    assert [(e["kind"], e["channel"], e["machine"]) for e in events] == [("click", "sms", False)]


# -- durability -------------------------------------------------------------------------------


def _start_api(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """`pennant api` in a process of its own, as `make run` starts it, logging to `log_path`."""
    with open(log_path, "wb") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "devstack.cli", "api"], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
        )


async def test_every_answered_hit_survives_a_sigkill_of_the_api(
    make_tenant: MakeTenant, pool: asyncpg.Pool, settings: Settings, temporal_client: Client, workdir: Path
) -> None:
    tenant: Tenant = await make_tenant(customers=1)
    run_id = str(uuid.uuid4())  # hits need no run of their own: their tokens name one
    secret = settings.link_signing_secret or ""
    port = free_port()
    env = {
        **worker_env(settings, temporal_client.service_client.config.target_host),
        "API_HOST": "127.0.0.1",
        "API_PORT": str(port),
    }
    log_path = workdir / f"api-kill-{port}.log"
    proc = _start_api(env, log_path)
    answered: set[int] = set()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers={"User-Agent": BROWSER}) as http:

            async def up() -> bool:
                assert proc.poll() is None, log_path.read_text(errors="replace")[-3000:]
                with contextlib.suppress(httpx.TransportError):
                    return (await http.get("/t/o/garbage")).status_code == 404
                return False

            await until(up, within=60, what="the API subprocess to serve")
            next_id = iter(range(1, 10**9))

            async def hammer() -> None:
                while True:
                    cid = next(next_id)
                    token = tracking.sign(tracking.Token(tenant.slug, run_id, cid, "email", "open"), secret)
                    try:
                        response = await http.get(f"/t/o/{token}")
                    except httpx.TransportError:
                        return  # the process is gone
                    if response.status_code == 200:
                        answered.add(cid)

            tasks = [asyncio.create_task(hammer()) for _ in range(32)]
            await until(lambda: len(answered) >= 500, within=60, what="500 answered hits")
            proc.send_signal(signal.SIGKILL)  # while the other hits are in flight
            proc.wait(timeout=10)
            await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    stored = {
        r["customer_id"]
        for r in await pool.fetch(
            "SELECT customer_id FROM message_events WHERE tenant_id = $1 AND run_id = $2::uuid", tenant.slug, run_id
        )
    }
    assert len(answered) >= 500
    assert answered <= stored, f"{len(answered - stored)} answered hits are missing"
