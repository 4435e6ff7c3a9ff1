"""The marketer console in a real Chromium against the real stack: sign in, create an A/B
campaign, preview both variants, start a run and watch it complete, read its results, edit
the config with an error and then a fix, and never see another tenant's data."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Awaitable, Callable

import asyncpg
from playwright.async_api import BrowserContext, Page
from playwright.async_api import Error as PlaywrightError

from tests.helpers.browser import artifact, navigate, signed_in_page
from tests.helpers.tenants import MakeTenant, Tenant
from tests.helpers.waiting import until


async def text_of(page: Page, selector: str) -> str:
    """The text of the first element matching `selector` ('' when there is none)."""
    found = page.locator(selector)
    return (await found.first.inner_text()) if await found.count() else ""


async def test_marketer_tour_in_the_browser(
    context: BrowserContext, api_url: str, make_tenant: MakeTenant, pool: asyncpg.Pool
) -> None:
    tenant = await make_tenant("freshmart", customers=400)
    page = await signed_in_page(context, api_url, tenant.key)
    assert page.url.endswith("/console/campaigns")
    assert "No campaigns yet" in await page.inner_text("main")
    await page.screenshot(path=artifact("01-campaigns-empty"), full_page=True)

    # Create an A/B campaign; the first try has a typo in B's subject, named at its field.
    await navigate(page, page.get_by_role("link", name="New campaign"))
    await page.get_by_label("Name", exact=True).fill("Gold weekly deals")
    await page.get_by_label("Segment", exact=True).select_option("gold_members")
    await until(lambda: page.is_visible("text=/\\d+ customers/"), what="the live audience estimate")
    await page.get_by_label("Key", exact=True).first.fill("A")
    await page.get_by_role("button", name="Add variant").click()
    await page.locator("#variant_key_1").fill("B")
    await page.locator("#variant_subject_1").fill("Deals for you, {{ frist_name }}")
    await page.get_by_label("Holdout").fill("20")
    await page.screenshot(path=artifact("02-campaign-editor"), full_page=True)
    await navigate(page, page.get_by_role("button", name="Create campaign"))
    errors = await page.inner_text("#form-errors")
    assert "variants[1].subject" in errors and "frist_name" in errors, errors
    assert "variants[1].subject" in await page.inner_text("[data-variant]:nth-child(2)")
    await page.locator("#variant_subject_1").fill("Deals for you, {{ first_name }}")
    await navigate(page, page.get_by_role("button", name="Create campaign"))
    assert "Campaign saved." in await page.inner_text("main")
    campaign_id = page.url.split("/campaigns/")[1].split("?")[0]

    # Preview both variants for an English-speaking member: each renders through the API's preview.
    customer = await pool.fetchval(
        """SELECT id FROM customers WHERE tenant_id = $1 AND locale <> 'fr-CA'
           AND loyalty_tier IN ('gold', 'platinum') ORDER BY id LIMIT 1""",
        tenant.slug,
    )
    preview = page.locator("[data-preview]")
    preview_region = page.get_by_role("region", name="Preview")
    await preview_region.get_by_label("Customer id").fill(str(customer))

    def shows(expected: str) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return await preview.get_attribute("data-rendered") == expected

        return check

    await until(shows(f"A:email:{customer}"), what="variant A's preview")
    assert "fresh deals" in await page.inner_text("[data-preview-subject]")
    await preview_region.get_by_label("Variant").select_option("B")
    await until(shows(f"B:email:{customer}"), what="variant B's preview")
    assert "Deals for you" in await page.inner_text("[data-preview-subject]")
    email_body = page.frame_locator("[data-preview-frame]").locator("body")
    await email_body.get_by_text("See the deals").wait_for()
    assert "FreshMart" in await email_body.inner_text()
    await page.screenshot(path=artifact("03-campaign-preview"), full_page=True)
    await preview_region.screenshot(path=artifact("03-preview-variant-b"))

    # Start a run and watch it complete live; the page then shows results and deliveries.
    # A live run page reloads itself once the run ends, which may be before its first load.
    await navigate(page, page.get_by_role("button", name="Start a run"), wait_until="commit")
    assert "/console/runs/" in page.url
    run_id = page.url.rsplit("/", 1)[1]

    async def shows_completed() -> bool:
        try:
            return await page.locator("[data-run-live=done]").count() > 0
        except PlaywrightError:  # the page is reloading
            return False

    await until(shows_completed, within=120, what="the run to complete in the page")
    assert await text_of(page, "[data-field=status]") == "completed"
    assert "Workflow in the Temporal UI" in await page.inner_text("main")
    href = await page.get_by_role("link", name=re.compile("Temporal UI")).get_attribute("href") or ""
    assert f"run%3A{tenant.slug}%3A{campaign_id}%3A{run_id}" in href
    run = (await tenant.http.get(tenant.url(f"/runs/{run_id}"))).json()
    assert int(await text_of(page, "[data-count=sent]")) == run["counts"]["sent"] > 0
    results = await page.inner_text("[data-results]")
    for group in ("A", "B", "holdout"):
        assert re.search(rf"^{group}\s+\d+", results, re.M), results
    assert await page.locator("svg.chart").count() >= 2
    assert await page.locator("[data-deliveries] tbody tr").count() > 0
    await page.screenshot(path=artifact("04-run-completed"), full_page=True)
    await page.screenshot(path=artifact("04-run-top"), clip={"x": 0, "y": 0, "width": 1280, "height": 820})
    await page.get_by_label("Status").select_option("sent")
    await navigate(page, page.get_by_role("button", name="Filter"))
    statuses = await page.locator("[data-deliveries] tbody td:nth-child(4)").all_inner_texts()
    assert statuses and set(statuses) == {"sent"}, statuses

    # The list shows the campaign's last run.
    await navigate(page, page.get_by_role("link", name="Campaigns", exact=True))
    assert "completed" in await page.inner_text("table")

    # The config: an unknown variable is shown at its line; a fix shows a diff, then saves v2.
    await navigate(page, page.get_by_role("link", name="Configuration"))
    yaml_box = page.get_by_label("Tenant configuration (YAML)")
    original = await yaml_box.input_value()
    broken = original.replace("{{ first_name }}, this week", "{{ frist_name }}, this week", 1)
    assert broken != original
    await yaml_box.fill(broken)
    await navigate(page, page.get_by_role("button", name="Check and show changes"))
    error_box = await page.inner_text("#config-errors")
    assert "unknown variable 'frist_name'" in error_box, error_box
    line = int(re.search(r"Line (\d+)", error_box).group(1))  # type: ignore[union-attr]
    assert "frist_name" in broken.splitlines()[line - 1]
    assert "0 problems" not in error_box
    await page.screenshot(path=artifact("05-config-error"), full_page=True)
    fixed = original.replace("display_name: FreshMart", "display_name: FreshMart Console", 1)
    await page.get_by_label("Tenant configuration (YAML)").fill(fixed)
    await navigate(page, page.get_by_role("button", name="Check and show changes"))
    assert "display_name" in await page.inner_text("[data-diff]")
    await page.screenshot(path=artifact("06-config-diff"), full_page=True)
    await navigate(page, page.get_by_role("button", name="Save as v2"))
    assert "saved as a new version" in await page.inner_text("main")
    assert "v2 current" in await page.inner_text("[data-versions]")
    current = (await tenant.http.get(tenant.url("/config"))).json()
    assert current["version"] == 2 and current["config"]["display_name"] == "FreshMart Console Grocery"

    # Narrow screens: the run page at 390 px.
    await page.set_viewport_size({"width": 390, "height": 844})
    await page.goto(f"{api_url}/console/runs/{run_id}")
    await page.screenshot(path=artifact("07-run-390px"), full_page=True)
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390 + 1, f"the run page scrolls sideways at 390 px ({width} px)"

    # Sign out: the console asks to sign in again.
    await navigate(page, page.get_by_role("button", name="Sign out"))
    await page.goto(f"{api_url}/console/campaigns")
    assert page.url.endswith("/console/login")


async def _campaign(tenant: Tenant, name: str) -> str:
    variants = [{"key": "A", "template": "weekly_deals"}]
    body = {"name": name, "segment": "gold_members", "channels": ["email"], "variants": variants}
    created = await tenant.http.post(tenant.url("/campaigns"), json=body)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


async def test_another_tenants_data_never_shows(
    context: BrowserContext, api_url: str, make_tenant: MakeTenant, admin_key: str
) -> None:
    mine, theirs = await make_tenant("freshmart", customers=20), await make_tenant("freshmart", customers=20)
    await _campaign(mine, "Mine only")
    their_campaign = await _campaign(theirs, "Theirs only")
    started = await theirs.http.post(theirs.url(f"/campaigns/{their_campaign}/runs"))
    their_run = started.json()["run_id"]

    page = await signed_in_page(context, api_url, mine.key)
    (cookie,) = [c for c in await context.cookies() if c["name"] == "pennant_console"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and mine.key not in cookie["value"]
    listing = await page.inner_text("main")
    assert "Mine only" in listing and "Theirs only" not in listing
    csrf = await page.get_attribute("body", "data-csrf")
    for path in (f"/campaigns/{their_campaign}", f"/runs/{their_run}"):
        response = await page.goto(f"{api_url}/console{path}")
        assert response is not None and response.status == 404
        assert "Theirs only" not in await page.content()
    progress = await page.request.get(f"{api_url}/console/runs/{their_run}/progress")
    assert progress.status == 404
    # A tenant key cannot switch to another tenant.
    switched = await page.request.post(
        f"{api_url}/console/tenants", form={"csrf": csrf or "", "tenant": theirs.slug}, max_redirects=0
    )
    assert switched.status == 422
    await page.goto(f"{api_url}/console/campaigns")
    assert "Theirs only" not in await page.inner_text("main")
    await page.screenshot(path=artifact("08-isolation"), full_page=True)

    # Forms without the session's CSRF token are refused; nothing starts.
    forged = await page.request.post(
        f"{api_url}/console/campaigns/{their_campaign}/start", form={"csrf": "forged"}, max_redirects=0
    )
    assert forged.status == 403

    # An admin key picks a tenant, then sees that tenant's campaigns only.
    admin = await context.browser.new_context()  # type: ignore[union-attr]
    admin_page = await signed_in_page(admin, api_url, admin_key)
    assert admin_page.url.endswith("/console/tenants")
    await navigate(admin_page, admin_page.get_by_role("button", name=re.compile(theirs.slug)))
    listing = await admin_page.inner_text("main")
    assert "Theirs only" in listing and "Mine only" not in listing
    await admin.close()


async def test_wrong_key_is_refused_naming_the_field(context: BrowserContext, api_url: str) -> None:
    page = await context.new_page()
    login = await page.goto(f"{api_url}/console/login")
    assert login is not None and "default-src 'self'" in (await login.all_headers())["content-security-policy"]
    # Keyboard only: the key field has focus on arrival, Enter submits.
    assert await page.evaluate("document.activeElement.id") == "key"
    await page.keyboard.type("tk_not_a_real_key")
    async with page.expect_navigation():
        await page.keyboard.press("Enter")
    assert page.url.endswith("/console/login")
    assert "key: not a valid API key" in await page.inner_text("[role=alert]")
    cookies = await context.cookies()
    assert not any(c["name"] == "pennant_console" for c in cookies)


async def test_schedule_and_suppressions_from_the_console(
    context: BrowserContext, api_url: str, make_tenant: MakeTenant
) -> None:
    tenant = await make_tenant("freshmart", customers=10)
    campaign_id = await _campaign(tenant, "Monday deals")
    page = await signed_in_page(context, api_url, tenant.key)
    await page.goto(f"{api_url}/console/campaigns/{campaign_id}")

    # A schedule with a bad time zone is refused naming the field; a good one is made in Temporal.
    await page.get_by_label("Cron (minute hour day month weekday)").fill("0 10 * * MON")
    await page.get_by_label("Time zone", exact=True).fill("Mars/Olympus")
    await navigate(page, page.get_by_role("button", name="Make recurring"))
    assert "time_zone" in await page.inner_text("[role=alert]")
    await page.get_by_label("Cron (minute hour day month weekday)").fill("0 10 * * MON")
    await page.get_by_label("Time zone", exact=True).fill("America/Chicago")
    await navigate(page, page.get_by_role("button", name="Make recurring"))
    assert "Schedule saved." in await page.inner_text("main")
    schedule = (await tenant.http.get(tenant.url(f"/campaigns/{campaign_id}/schedule"))).json()
    # (Temporal keeps a cron expression as calendar specs, so the API reports next runs, not the cron.)
    assert schedule["time_zone"] == "America/Chicago" and schedule["next_runs"], schedule
    assert "Next: " in await page.inner_text("main")
    await navigate(page, page.get_by_role("button", name="Remove schedule"))
    assert (await tenant.http.get(tenant.url(f"/campaigns/{campaign_id}/schedule"))).status_code == 404

    # Suppressions: added (normalised as the API stores it), listed, lifted; a bad address is named.
    await page.goto(f"{api_url}/console/config")
    assert "Nobody is suppressed" in await page.inner_text("#suppressions")
    await page.get_by_label("Address").fill("Someone@Example.COM")
    await navigate(page, page.get_by_role("button", name="Suppress"))
    assert "someone@example.com" in await page.inner_text("#suppressions")
    listed = (await tenant.http.get(tenant.url("/suppressions"))).json()
    assert [s["address"] for s in listed] == ["someone@example.com"]
    await navigate(page, page.get_by_role("button", name="Lift the suppression of someone@example.com"))
    assert (await tenant.http.get(tenant.url("/suppressions"))).json() == []

    # An unknown page answers 404 as a page, with the console's navigation.
    response = await page.goto(f"{api_url}/console/runs/00000000-0000-0000-0000-000000000000")
    assert response is not None and response.status == 404
    assert "run '00000000-0000-0000-0000-000000000000' not found" in await page.inner_text("main")
    assert await page.get_by_role("link", name="Configuration").count() == 1


async def test_run_controls_and_live_status(context: BrowserContext, api_url: str, make_tenant: MakeTenant) -> None:
    tenant = await make_tenant("freshmart", customers=10)
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    body = {
        "name": "Tomorrow's deals", "segment": "everyone", "channels": ["email"], "send_at": later,
        "variants": [{"key": "A", "template": "weekly_deals"}],
    }  # fmt: skip
    created = await tenant.http.post(tenant.url("/campaigns"), json=body)
    assert created.status_code == 201, created.text
    page = await signed_in_page(context, api_url, tenant.key)
    await navigate(page, page.get_by_role("link", name="Tomorrow's deals"))
    assert "A run waits until" in await page.inner_text("main")
    await navigate(page, page.get_by_role("button", name="Start a run"))
    run_id = page.url.rsplit("/", 1)[1]

    def status_is(expected: str) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return await text_of(page, "[data-field=status]") == expected

        return check

    # The page polls the run: its status is the workflow's, live.
    await until(status_is("scheduled"), what="the run page to show the run waiting")
    assert await page.locator("[data-run-live=live]").count() == 1
    # The campaigns list follows the active run too.
    await navigate(page, page.get_by_role("link", name="Campaigns", exact=True))
    await until(status_is("scheduled"), what="the campaigns list to show the run's live status")
    assert await page.locator("tbody [data-run-progress]").count() == 1
    await page.goto(f"{api_url}/console/runs/{run_id}")
    for action, status in (("Pause", "paused"), ("Resume", "scheduled"), ("Cancel", "cancelled")):
        await navigate(page, page.get_by_role("button", name=action, exact=True))
        await until(status_is(status), what=f"the run to be {status} after {action}")
    run = (await tenant.http.get(tenant.url(f"/runs/{run_id}"))).json()
    assert run["status"] == "cancelled"
    assert await page.get_by_role("button", name="Pause").count() == 0  # a finished run has no controls
    # The campaigns list shows it as the campaign's last run.
    await navigate(page, page.get_by_role("link", name="Campaigns", exact=True))
    assert "cancelled" in await page.inner_text("table")


async def test_revoking_the_key_ends_its_console_sessions(
    context: BrowserContext, api_url: str, make_tenant: MakeTenant
) -> None:
    tenant = await make_tenant("freshmart", customers=5)
    page = await signed_in_page(context, api_url, tenant.key)
    assert page.url.endswith("/console/campaigns")
    (key,) = (await tenant.http.get(tenant.url("/keys"))).json()
    revoked = await tenant.http.delete(tenant.url(f"/keys/{key['id']}"))
    assert revoked.status_code == 204
    await page.goto(f"{api_url}/console/campaigns")
    assert page.url.endswith("/console/login")
