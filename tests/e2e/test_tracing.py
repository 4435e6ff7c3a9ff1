"""One trace runs from the HTTP request that starts a run, through the workflow, to each
activity, tagged with tenant, campaign and run."""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.util.types import AnyValue

from tests.helpers.runs import wait_for_run
from tests.helpers.stack import SPANS
from tests.helpers.tenants import MakeTenant


def _attributes(span: ReadableSpan) -> Mapping[str, AnyValue]:
    assert span.attributes is not None, span.name
    return span.attributes


async def test_one_trace_from_http_request_to_every_activity(make_tenant: MakeTenant) -> None:
    tenant = await make_tenant("freshmart", customers=20)
    created = await tenant.http.post(
        tenant.url("/campaigns"),
        json={"name": "Traced", "channels": ["email"], "variants": [{"key": "A", "template": "weekly_deals"}]},
    )
    campaign_id = created.json()["id"]
    SPANS.clear()
    started = await tenant.http.post(tenant.url(f"/campaigns/{campaign_id}/runs"))
    run_id = started.json()["run_id"]
    assert (await wait_for_run(tenant, run_id))["status"] == "completed"

    spans = SPANS.get_finished_spans()
    http = [
        s
        for s in spans
        if s.name == "POST /v1/tenants/{tenant}/campaigns/{campaign_id}/runs" and s.kind.name == "SERVER"
    ]
    assert len(http) == 1, [s.name for s in spans]
    root = http[0]
    assert _attributes(root)["pennant.tenant"] == tenant.slug
    assert _attributes(root)["pennant.campaign"] == campaign_id
    in_trace = [s for s in spans if s.context.trace_id == root.context.trace_id]
    names = {s.name for s in in_trace}
    assert "StartWorkflow:CampaignRunWorkflow" in names
    assert "RunWorkflow:CampaignRunWorkflow" in names
    # A run due now takes its first steps (config pin, plan, ...) as one activity, begin_run.
    for activity in ("begin_run", "deliver_batch", "mark_run"):
        assert f"RunActivity:{activity}" in names, names
    for span in in_trace:
        if span.name in ("RunActivity:begin_run", "RunActivity:deliver_batch"):
            assert _attributes(span)["pennant.tenant"] == tenant.slug
            assert _attributes(span)["pennant.campaign"] == campaign_id
            assert _attributes(span)["pennant.run"] == run_id
