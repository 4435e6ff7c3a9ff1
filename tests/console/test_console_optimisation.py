"""The console's optimisation features in a real Chromium against the real stack: a winner
test made in the campaign editor (a bad confidence named at its field), run, picked early from
the run page with its decision shown; the send-time preview chart and fallback count; ranked
subject suggestions, one copied into the variant editor and never applied by itself."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg
from playwright.async_api import BrowserContext, Page
from playwright.async_api import Error as PlaywrightError

from tests.helpers.browser import artifact, navigate, signed_in_page
from tests.helpers.tenants import MakeTenant
from tests.helpers.waiting import until


async def _shows(page: Page, selector: str) -> bool:
    """Reload the page and say whether `selector` is on it (False while it reloads itself)."""
    try:
        await page.reload(wait_until="domcontentloaded")
        return await page.locator(selector).count() > 0
    except PlaywrightError:
        return False


def _reloads_until(page: Page, selector: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await _shows(page, selector)

    return check


async def test_winner_test_send_times_and_suggestions_in_the_console(
    context: BrowserContext, api_url: str, make_tenant: MakeTenant, pool: asyncpg.Pool
) -> None:
    tenant = await make_tenant("freshmart", customers=120)
    await pool.execute(
        """UPDATE customers SET consent_email = true, email = coalesce(email, 'c' || id || '@example.com')
           WHERE tenant_id = $1""",
        tenant.slug,
    )
    page = await signed_in_page(context, api_url, tenant.key)

    # A winner test from the editor; a confidence out of range is named at its field, as the API names it.
    await navigate(page, page.get_by_role("link", name="New campaign"))
    await page.get_by_label("Name", exact=True).fill("Subject winner test")
    await page.get_by_label("Segment", exact=True).select_option("everyone")
    await page.get_by_label("Key", exact=True).first.fill("A")
    await page.locator("#variant_subject_0").fill("Fresh deals this week")
    await page.get_by_role("button", name="Add variant").click()
    await page.locator("#variant_key_1").fill("B")
    await page.locator("#variant_subject_1").fill("{{ first_name }}, B deals inside")
    await page.get_by_label("Experiment mode").select_option("winner")
    await page.get_by_label("Metric").select_option("open")
    await page.get_by_label("Test slice (% of audience)").fill("50")
    await page.get_by_label("Decide after (e.g. 30m, 4h, 2d)").fill("1h")
    await page.get_by_label("Confidence (0.5 to 0.99)").fill("2")
    await page.get_by_label("Min. recipients per variant").fill("1")
    await navigate(page, page.get_by_role("button", name="Create campaign"))
    errors = await page.inner_text("#form-errors")
    assert "experiment.confidence: Input should be less than 1" in errors, errors
    field_error = page.locator('[id="experiment.confidence-error"]')
    assert "experiment.confidence" in await field_error.inner_text()
    assert await page.get_by_label("Confidence (0.5 to 0.99)").get_attribute("aria-invalid") == "true"
    await page.screenshot(path=artifact("11-experiment-error"), full_page=True)
    await page.get_by_label("Confidence (0.5 to 0.99)").fill("0.9")
    await navigate(page, page.get_by_role("button", name="Create campaign"))
    assert "Campaign saved." in await page.inner_text("main")
    campaign_id = page.url.split("/campaigns/")[1].split("?")[0]
    stored = (await tenant.http.get(tenant.url(f"/campaigns/{campaign_id}"))).json()
    assert stored["experiment"] == {
        **stored["experiment"], "mode": "winner", "metric": "open", "test_percent": 50, "decide_after": "1h",
        "confidence": 0.9, "min_per_variant": 1,
    }, stored["experiment"]  # fmt: skip
    # The editor shows what was saved.
    assert await page.get_by_label("Decide after (e.g. 30m, 4h, 2d)").input_value() == "1h"

    # The send-time preview: a bar per chosen local hour and the fallback count (no history yet: all).
    await navigate(page, page.get_by_role("button", name="Preview optimal send times"))
    panel = page.locator("[data-send-times]")
    assert await panel.locator("svg.chart rect").count() == 24
    fallback = int(await panel.locator("[data-fallback-count]").inner_text())
    optimised = int(await panel.locator("[data-optimised]").inner_text())
    recipients = int(await panel.locator("[data-recipients]").inner_text())
    assert fallback > 0 and fallback + optimised == recipients, (fallback, optimised, recipients)
    await panel.screenshot(path=artifact("12-send-time-preview"))

    # Run it: the test slice is sent, then the run page offers Pick winner and Extend.
    await navigate(page, page.get_by_role("button", name="Start a run"), wait_until="commit")
    run_id = page.url.rsplit("/", 1)[1]
    await until(_reloads_until(page, "[data-decide-at]"), within=60, what="the test to wait for its decision")
    assert await page.get_by_role("button", name="Pick B as winner").count() == 1
    await page.get_by_label("Extend the test by (e.g. 30m, 2h, 1d)").fill("soon")
    await navigate(page, page.get_by_role("button", name="Extend"))
    assert "by: " in await page.inner_text("[data-experiment] [role=alert]")
    await page.get_by_label("Extend the test by (e.g. 30m, 2h, 1d)").fill("2h")
    await navigate(page, page.get_by_role("button", name="Extend"))
    assert "Test extended." in await page.inner_text("[data-experiment]")
    await page.screenshot(path=artifact("13-run-waiting-for-decision"), full_page=True)

    await navigate(page, page.get_by_role("button", name="Pick B as winner"), wait_until="commit")
    await until(_reloads_until(page, "[data-run-live=done] ~ [data-experiment] [data-decision]"), within=60,
                what="the run to finish with its decision shown")  # fmt: skip
    decision = await page.inner_text("[data-decision]")
    assert "Winner: B" in decision and "picked" in decision, decision
    for variant in ("A", "B"):
        assert variant in await page.inner_text("[data-decision] tbody")
    run = (await tenant.http.get(tenant.url(f"/runs/{run_id}"))).json()
    assert run["status"] == "completed" and run["experiment"]["decision"]["winner"] == "B", run
    tested = int(await page.inner_text("[data-test-sent]"))
    assert 0 < tested < run["counts"]["sent"], (tested, run["counts"])  # the slice, then the rest got B
    await page.screenshot(path=artifact("14-run-decided"), full_page=True)
    await page.set_viewport_size({"width": 390, "height": 844})
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390 + 1, f"the run page scrolls sideways at 390 px ({width} px)"
    await page.screenshot(path=artifact("15-run-decided-390px"), full_page=True)
    await page.set_viewport_size({"width": 1280, "height": 900})

    # Suggestions learnt from this run: B's personalised subject was opened far more than A's.
    await pool.execute(
        """INSERT INTO message_events (tenant_id, run_id, customer_id, channel, kind, machine, user_agent)
           SELECT tenant_id, run_id, customer_id, channel, 'open', false, 'Mozilla/5.0 (test)'
           FROM deliveries
           WHERE tenant_id = $1 AND run_id = $2::uuid AND status = 'sent'
             AND ((variant = 'B' AND customer_id % 10 < 6) OR (variant = 'A' AND customer_id % 10 < 1))""",
        tenant.slug,
        run_id,
    )
    # Those opens are history: the send-time preview now chooses hours for the openers.
    await page.goto(f"{api_url}/console/campaigns/{campaign_id}?send_times=1")
    assert int(await panel.locator("[data-optimised]").inner_text()) > 0
    heights = [float(h or 0) for h in await panel.locator("svg.chart rect").evaluate_all(
        "bars => bars.map((b) => b.getAttribute('height'))")]  # fmt: skip
    assert any(h > 0 for h in heights), heights
    await panel.screenshot(path=artifact("12-send-time-preview-with-history"))
    await navigate(page, page.get_by_role("button", name="Suggest", exact=True))
    suggestions = page.locator("[data-suggestion]")
    assert await suggestions.count() > 0, await page.inner_text("[data-suggestions]")
    first_text = await suggestions.first.locator("[data-suggestion-text]").inner_text()
    assert await suggestions.first.locator(".muted").inner_text()  # its reason
    await page.screenshot(path=artifact("16-suggestions"), full_page=True)
    await suggestions.first.get_by_label("Into variant").select_option("A")
    await suggestions.first.get_by_role("button", name="Copy suggestion 1 into the variant editor").click()
    assert await page.locator("#variant_subject_0").input_value() == first_text
    # Copied, not applied: the stored campaign is unchanged until the marketer saves.
    unchanged = (await tenant.http.get(tenant.url(f"/campaigns/{campaign_id}"))).json()
    assert unchanged["variants"] == stored["variants"]
    await page.set_viewport_size({"width": 390, "height": 844})
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390 + 1, f"the campaign page scrolls sideways at 390 px ({width} px)"
    await page.screenshot(path=artifact("16-campaign-390px"), full_page=True)


async def test_send_time_delivery_and_fallback_from_the_editor(
    context: BrowserContext, api_url: str, make_tenant: MakeTenant
) -> None:
    tenant = await make_tenant("freshmart", customers=5)
    page = await signed_in_page(context, api_url, tenant.key)
    await navigate(page, page.get_by_role("link", name="New campaign"))
    await page.get_by_label("Name", exact=True).fill("Best hour, then SMS")
    await page.get_by_label("Key", exact=True).first.fill("A")
    await page.get_by_label("At each recipient's best hour (send-time optimisation)").check()
    await page.get_by_label("Send everyone within (hours)").fill("500")
    await page.get_by_label("Delivery", exact=True).select_option("first_available")
    await page.get_by_label("Fallback channel").select_option("sms")
    await navigate(page, page.get_by_role("button", name="Create campaign"))
    errors = await page.inner_text("#form-errors")
    assert "send_time.within_hours: Input should be less than or equal to 168" in errors, errors
    assert "fallback.after: Field required" in errors, errors
    assert "fallback.after" in await page.locator('[id="fallback.after-error"]').inner_text()
    assert "send_time.within_hours" in await page.locator('[id="send_time.within_hours-error"]').inner_text()
    await page.get_by_label("Send everyone within (hours)").fill("12")
    await page.get_by_label("Fallback after (e.g. 4h)").fill("4h")
    await page.get_by_label("Unless they").select_option("opened")
    await navigate(page, page.get_by_role("button", name="Create campaign"))
    assert "Campaign saved." in await page.inner_text("main")
    campaign_id = page.url.split("/campaigns/")[1].split("?")[0]
    stored = (await tenant.http.get(tenant.url(f"/campaigns/{campaign_id}"))).json()
    assert stored["delivery"] == "first_available"
    assert stored["fallback"] == {"channel": "sms", "unless": "opened", "after": "4h"}, stored["fallback"]
    assert stored["send_time"]["within_hours"] == 12, stored["send_time"]
    # The editor reads the saved campaign back; the preview shows without asking (send_time is set).
    assert await page.get_by_label("At each recipient's best hour (send-time optimisation)").is_checked()
    assert await page.get_by_label("Fallback channel").input_value() == "sms"
    assert await page.locator("[data-send-times] svg.chart").count() == 1
    await page.screenshot(path=artifact("17-send-time-and-fallback"), full_page=True)


async def test_sign_in_form_needs_its_login_csrf_token(
    context: BrowserContext, api_url: str, make_tenant: MakeTenant
) -> None:
    tenant = await make_tenant("freshmart", customers=0)
    # A form posted from elsewhere (no pre-session cookie, no token) does not sign in, even with a good key.
    forged = await context.request.post(f"{api_url}/console/login", form={"key": tenant.key}, max_redirects=0)
    assert forged.status == 403 and "sign in again" in await forged.text()
    assert not any(c["name"] == "pennant_console" for c in await context.cookies())
    # The cookie alone is not enough: the form must carry the same token.
    page = await context.new_page()
    await page.goto(f"{api_url}/console/login")
    token = await page.locator("input[name=csrf]").get_attribute("value")
    assert token and any(c["name"] == "pennant_console_login" and c["httpOnly"] for c in await context.cookies())
    wrong = await context.request.post(
        f"{api_url}/console/login", form={"key": tenant.key, "csrf": token[::-1]}, max_redirects=0
    )
    assert wrong.status == 403
    await page.get_by_label("API key").fill(tenant.key)
    await navigate(page, page.get_by_role("button", name="Sign in"))
    assert page.url.endswith("/console/campaigns")
