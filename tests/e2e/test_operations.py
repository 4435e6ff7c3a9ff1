"""Operations against the real stack: a `pennant worker` process's /metrics and Temporal SDK
metrics after a real run, its JSON log line of a batch (tenant, run, trace id), the API's
/metrics, the dashboard and alert rules querying only metrics the stack exposes, and
`pennant runs watch` following a run to its end."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import yaml
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from temporalio.client import Client

from activities.channels.base import OutboundMessage, TransientChannelError
from activities.channels.metered import MeteredAdapter
from activities.channels.sms_http import HttpSmsAdapter
from core.configs.checks import load_config_file
from core.content.templating import RenderedSms
from core.infra.settings import Settings
from core.infra.temporal import task_queue_for
from core.security.secrets import SecretResolver
from core.tenants.config_schema import Policies
from devstack.provider_simulator import ProviderSimulator, SimulatorControl
from devstack.worker_env import WorkerProcesses
from tests.helpers.faults import TemporalDevServer, serve_api, worker_env
from tests.helpers.runs import create_campaign, ledger_count, start_run, wait_for_run
from tests.helpers.stack import ISOLATED_PREFIX, ROOT, SPANS, TENANT_CONFIGS, TEST_KEYRING, free_port
from tests.helpers.tenants import MakeTenant, Tenant, api_tenant, store_provider_secrets, store_tenant
from tests.helpers.waiting import until
from workers.main import child_ports
from workers.metrics import TEMPORAL_METRICS_PATH

DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "pennant.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
RECIPIENTS = 120

Samples = dict[str, list[tuple[dict[str, str], float]]]


def parse(text: str) -> tuple[Samples, set[str]]:
    """Samples by name, and every series name the exposition declares (histogram and counter
    suffixes included, whether or not a labelled series has been observed yet)."""
    samples: Samples = {}
    declared: set[str] = set()
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created")}
    for family in text_string_to_metric_families(text):
        declared.add(family.name)
        declared.update(family.name + s for s in suffixes.get(family.type, ()))
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
            declared.add(sample.name)
    return samples, declared


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    return sum(v for found, v in samples.get(name, []) if labels.items() <= found.items())


OPS_TOKEN = "ops-metrics-token-" + "x" * 24
OPS_AUTH = {"Authorization": f"Bearer {OPS_TOKEN}"}


async def status_of(url: str) -> int:
    """The status of a GET without credentials."""
    async with httpx.AsyncClient(timeout=10) as http:
        return (await http.get(url)).status_code


async def scrape(url: str, **kwargs: Any) -> str:
    """The text of one scrape."""
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(url, **kwargs)
    response.raise_for_status()
    return response.text


@pytest.fixture(scope="module")
def ports() -> tuple[int, int]:
    """Free ports for the worker process's metrics and its Temporal SDK metrics."""
    return free_port(), free_port()


@pytest.fixture(scope="module")
async def observed_run(
    pool: asyncpg.Pool, settings: Settings, workdir: Path, ports: tuple[int, int]
) -> AsyncIterator[dict[str, Any]]:
    """A run of a tenant served only by a `pennant worker` process with metrics on and JSON logs;
    the tenant, the run, the worker's log file and scrapes of its two metrics endpoints.

    The run goes through an API and a Temporal server of its own: every worker polling a Temporal
    server's shared workflow queue may run any run's workflow, and this one must run in the
    observed process."""
    slug = await store_tenant(pool, f"{ISOLATED_PREFIX}ops-", "freshmart", RECIPIENTS, policies=Policies())
    temporal = TemporalDevServer(workdir / f"temporal-ops-{uuid.uuid4().hex[:8]}.db", workdir / "temporal-ops.log")
    await temporal.start()
    env = {
        **worker_env(settings, temporal.address),
        "WORKER_METRICS_PORT": str(ports[0]),
        "TEMPORAL_METRICS_PORT": str(ports[1]),
        "LOG_FORMAT": "json",
        # With a token, both the worker's metrics and the SDK's (relayed) need it.
        "METRICS_TOKEN": OPS_TOKEN,
        # One process, so one scrape sees every activity of the run.
        "WORKER_PROCESSES": "1",
    }
    procs = WorkerProcesses(env, workdir)
    proc = procs.start(slug)
    app_settings = settings.model_copy(update={"temporal_address": temporal.address})
    try:
        async with serve_api(app_settings) as api, api_tenant(pool, api, slug) as tenant:

            async def serving() -> bool:
                procs.assert_alive(proc)
                try:
                    text = await scrape(f"http://127.0.0.1:{ports[0]}/metrics", headers=OPS_AUTH)
                except httpx.HTTPError:
                    return False
                # Metrics published (the shared workflow queue's backlog gauge) and the tenant taken;
                # its own queue is polled, and its gauge published, once it has work.
                return 'tenant="(shared)"' in text and f"serving task queue {task_queue_for(slug)}" in procs.log_text(
                    proc
                )

            await until(serving, within=60, what=f"the worker process to serve {slug} and publish its metrics")
            run_id = await start_run(tenant, await create_campaign(tenant))
            run = await wait_for_run(tenant, run_id)
            assert run["status"] == "completed", run

            async def counted() -> bool:
                # The worker counts the transition once the run's row says so: scrape after it.
                text = await scrape(f"http://127.0.0.1:{ports[0]}/metrics", headers=OPS_AUTH)
                lines = text.splitlines()
                completed = any(
                    line.startswith("pennant_run_transitions_total{")
                    and f'tenant="{slug}"' in line
                    and 'status="completed"' in line
                    for line in lines
                )
                # The tenant's backlog gauge is published within a second of its queue being polled.
                backlog = any(
                    line.startswith("pennant_task_queue_backlog{") and f'tenant="{slug}"' in line for line in lines
                )
                return completed and backlog

            await until(counted, within=30, what="the worker to count the run's completion and publish its backlog")
            yield {
                "tenant": tenant,
                "run": run,
                "log": procs.logs[proc.pid],
                "worker": await scrape(f"http://127.0.0.1:{ports[0]}/metrics", headers=OPS_AUTH),
                "temporal": await scrape(f"http://127.0.0.1:{ports[0]}{TEMPORAL_METRICS_PATH}", headers=OPS_AUTH),
                "unauthorised": [
                    await status_of(f"http://127.0.0.1:{ports[0]}{path}")
                    for path in ("/metrics", TEMPORAL_METRICS_PATH)
                ],
            }
    finally:
        procs.close()
        temporal.stop()


async def test_worker_metrics_count_the_runs_messages_by_tenant_channel_and_status(
    observed_run: dict[str, Any], pool: asyncpg.Pool
) -> None:
    tenant: Tenant = observed_run["tenant"]
    run_id = observed_run["run"]["id"]
    samples, _ = parse(observed_run["worker"])
    for status in ("sent", "failed", "skipped"):
        in_ledger = await ledger_count(pool, tenant.slug, run_id, f"status = '{status}' AND channel = 'email'")
        counted = value(samples, "pennant_messages_total", tenant=tenant.slug, channel="email", status=status)
        assert counted == in_ledger, (status, counted, in_ledger)
    assert value(samples, "pennant_messages_total", tenant=tenant.slug, status="sent") > 0
    sent = value(samples, "pennant_messages_total", tenant=tenant.slug, status="sent")
    assert value(samples, "pennant_provider_messages_total", tenant=tenant.slug, channel="email", outcome="ok") == sent
    assert value(samples, "pennant_provider_request_duration_seconds_count", tenant=tenant.slug, outcome="ok") >= 1
    assert value(samples, "pennant_render_duration_seconds_count", tenant=tenant.slug, channel="email") == sent
    assert value(samples, "pennant_batch_duration_seconds_count", tenant=tenant.slug, outcome="ok") >= 1
    # Transitions, not status writes: the run was marked running twice (then its planned count).
    assert value(samples, "pennant_run_transitions_total", tenant=tenant.slug, status="running") == 1
    assert value(samples, "pennant_run_transitions_total", tenant=tenant.slug, status="completed") == 1
    # FreshMart's email channel has a rate limit: every chunk went through its bucket.
    assert value(samples, "pennant_rate_limit_wait_seconds_count", tenant=tenant.slug, channel="email") >= 1
    backlogs = {(labels.get("tenant"), labels.get("task_type")) for labels, _ in samples["pennant_task_queue_backlog"]}
    assert {(tenant.slug, "activity"), ("(shared)", "workflow")} <= backlogs, backlogs
    # Labels stay bounded: no run id and no customer address in any series.
    assert run_id not in observed_run["worker"]
    assert "@" not in "".join(json.dumps(labels) for series in samples.values() for labels, _ in series)


async def test_temporal_sdk_worker_metrics_are_served_beside_them(observed_run: dict[str, Any]) -> None:
    # The SDK's exporter takes no token: with METRICS_TOKEN set it listens on loopback only and
    # the worker's guarded endpoint relays it; neither answers without the token.
    assert observed_run["unauthorised"] == [401, 401]
    samples, declared = parse(observed_run["temporal"])
    assert any(name.startswith("temporal_") for name in declared), sorted(declared)[:20]
    queue = f"tenant-{observed_run['tenant'].slug}"
    assert any(labels.get("task_queue") == queue for series in samples.values() for labels, _ in series)


async def test_a_batch_logs_one_json_line_with_its_tenant_run_and_trace_id(observed_run: dict[str, Any]) -> None:
    tenant: Tenant = observed_run["tenant"]
    run = observed_run["run"]
    lines = [json.loads(line) for line in observed_run["log"].read_text().splitlines() if line.startswith("{")]
    batches = [e for e in lines if e.get("activity") == "deliver_batch" and e.get("run") == run["id"]]
    assert batches, lines[-20:]
    entry = batches[0]
    assert entry["tenant"] == tenant.slug
    assert entry["campaign"] == run["campaign_id"]
    assert entry["outcome"] == "ok" and entry["sent"] + entry["failed"] + entry["skipped"] > 0
    assert re.fullmatch(r"[0-9a-f]{32}", entry["trace_id"]), entry
    assert entry["workflow_id"] == run["workflow_id"]
    # The line leads to the trace that started the run: the API request's span has the same id.
    api_traces = {
        format(span.context.trace_id, "032x")
        for span in SPANS.get_finished_spans()
        if span.context is not None and (span.attributes or {}).get("pennant.run") == run["id"]
    }
    assert entry["trace_id"] in api_traces


async def test_api_metrics_time_requests_by_route_and_count_active_runs(
    observed_run: dict[str, Any], api_url: str
) -> None:
    text = await scrape(f"{api_url}/metrics")
    samples, declared = parse(text)
    routes = {labels["route"] for labels, _ in samples.get("pennant_http_request_duration_seconds_count", [])}
    assert "/v1/tenants/{tenant}/runs/{run_id}" in routes, routes
    assert "pennant_runs" in declared
    assert observed_run["run"]["id"] not in text


def promql_metrics(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords, labels and literals left out)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings (label values, label_replace args)
    expr = re.sub(r"\$\{?\w+\}?", "", expr)  # Grafana variables
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    keywords = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset"}
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        rest = expr[match.end() :].lstrip()
        word = match.group()
        if rest.startswith("(") or word in keywords or re.fullmatch(r"\d+[smhdwy]?|e\d+|Inf|NaN", word):
            continue
        names.add(word)
    return names


def dashboard_queries() -> list[str]:
    """Every PromQL expression of the dashboard's panels and template variables."""
    board = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for panel in board["panels"] for t in panel.get("targets", []) if t.get("expr")]
    for variable in board.get("templating", {}).get("list", []):
        query = variable.get("query")
        query = query.get("query") if isinstance(query, dict) else query
        match = re.fullmatch(r"\s*label_values\((.*),\s*\w+\)\s*", query or "")
        if match:
            queries.append(match.group(1))
    return queries


def alert_queries() -> list[str]:
    """Every PromQL expression of the alert (and recording) rules."""
    rules = yaml.safe_load(ALERTS.read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def test_dashboard_and_rules_parse_and_cover_what_operators_watch() -> None:
    board = json.loads(DASHBOARD.read_text())
    titles = " ".join(p["title"].lower() for p in board["panels"])
    for topic in ("throughput", "provider error", "provider latency", "active runs", "rate-limit", "backlog",
                  "schedule-to-start"):  # fmt: skip
        assert topic in titles, f"the dashboard has no panel about {topic}: {titles}"
    alerts = {rule["alert"] for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]}
    assert {"PennantRunWithoutProgress", "PennantProviderErrorRate", "PennantTaskQueueBacklogGrowing"} <= alerts
    assert promql_metrics('sum by (le) (rate(a_bucket{x="y"}[5m])) / on (t) b unless c > 0.05') == {
        "a_bucket",
        "b",
        "c",
    }


async def test_every_metric_the_dashboard_and_alerts_query_is_exposed(
    observed_run: dict[str, Any], api_url: str
) -> None:
    exposed: set[str] = set()
    for text in (observed_run["worker"], observed_run["temporal"], await scrape(f"{api_url}/metrics")):
        exposed |= parse(text)[1]
    queried = {name for expr in dashboard_queries() + alert_queries() for name in promql_metrics(expr)}
    assert queried, "no metric found in the dashboard and rules"
    missing = sorted(queried - exposed)
    assert not missing, f"the dashboard or alert rules query metrics no live process exposes: {missing}"


def test_compose_runs_prometheus_and_grafana_with_the_provisioning_files() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    mounted = {v.split(":")[0] for name in ("prometheus", "grafana") for v in services[name]["volumes"]}
    assert {"./deploy/prometheus", "./deploy/grafana/provisioning", "./deploy/grafana/dashboards"} <= mounted
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert "/etc/prometheus/alerts.yml" in config["rule_files"]
    # Every worker process compose starts per replica is scraped: process i serves on the
    # configured ports + 2i (workers.main.child_ports), up to the four processes listed.
    environment = services["worker"]["environment"]
    processes = re.fullmatch(r"\$\{WORKER_PROCESSES:-(\d+)\}", str(environment["WORKER_PROCESSES"]))
    assert processes and 1 <= int(processes.group(1)) <= 4, environment["WORKER_PROCESSES"]
    settings = Settings(
        worker_metrics_port=int(environment["WORKER_METRICS_PORT"]),
        temporal_metrics_port=int(environment["TEMPORAL_METRICS_PORT"]),
    )
    jobs = {job["job_name"]: {sd["port"] for sd in job.get("dns_sd_configs", [])} for job in config["scrape_configs"]}
    assert jobs["pennant-worker"] == {child_ports(settings, i)["worker_metrics_port"] for i in range(4)}, jobs
    # The SDK's metrics are relayed behind the token by each process's own metrics endpoint.
    assert jobs["temporal-sdk"] == jobs["pennant-worker"], jobs
    sdk_job = next(job for job in config["scrape_configs"] if job["job_name"] == "temporal-sdk")
    assert sdk_job["metrics_path"] == TEMPORAL_METRICS_PATH and "authorization" in sdk_job


async def pennant(*args: str, env: dict[str, str], within: float = 60) -> tuple[int, str, str]:
    """Run the `pennant` command as a subprocess without blocking the loop the in-process stack runs on."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "devstack.cli", *args,
        env=env, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), within)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
def cli_env(api_url: str) -> Iterator[Any]:
    """cli_env(tenant) → the environment of a `pennant` command acting as that tenant."""

    def make(tenant: Tenant) -> dict[str, str]:
        return {**os.environ, "PENNANT_API_URL": api_url, "PENNANT_API_KEY": tenant.key, "COLUMNS": "200"}

    yield make


async def test_runs_watch_follows_a_real_run_to_completion(
    make_tenant: MakeTenant, pool: asyncpg.Pool, cli_env: Any
) -> None:
    tenant = await make_tenant(customers=300, policies=Policies())
    campaign_id = await create_campaign(tenant)
    run_id = await start_run(tenant, campaign_id)
    status, out, err = await pennant("runs", "watch", run_id, "--tenant", tenant.slug, "--interval", "0.2",
                                     env=cli_env(tenant))  # fmt: skip
    assert status == 0, (out, err)
    statuses = ("sent", "failed", "skipped")
    counts = {s: await ledger_count(pool, tenant.slug, run_id, f"status = '{s}'") for s in statuses}
    assert sum(counts.values()) == 300
    assert f"run {run_id} completed: sent {counts['sent']}, failed {counts['failed']}, skipped {counts['skipped']}" in (
        out.replace("\n", " ")
    ), out


async def test_runs_and_campaigns_commands(make_tenant: MakeTenant, cli_env: Any, api_url: str, admin_key: str) -> None:
    tenant = await make_tenant(customers=20, policies=Policies())
    env = cli_env(tenant)
    status, out, err = await pennant("campaigns", "start", await create_campaign(tenant), "--watch",
                                     "--tenant", tenant.slug, env=env)  # fmt: skip
    assert status == 0, (out, err)
    run_id = re.search(r"started run (\S+)", out).group(1)  # type: ignore[union-attr]
    for args, expected in (
        (("runs", "list"), run_id[:8]),
        (("runs", "show", run_id), "completed"),
        (("campaigns", "list"), "Weekly deals"),
    ):
        status, out, err = await pennant(*args, "--tenant", tenant.slug, env=env)
        assert status == 0 and expected in out, (args, out, err)
    status, out, err = await pennant("runs", "cancel", run_id, "--tenant", tenant.slug, env=env)
    assert status == 1 and "409" in err and "completed" in err, (out, err)
    status, out, err = await pennant("runs", "list", "--tenant", "no-such-tenant", env=env)
    assert status == 1 and "HTTP 404" in err, (out, err)
    # Without --tenant, the tenant is the one an issued key names.
    async with httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {admin_key}"}) as admin:
        issued = await admin.post(f"/v1/tenants/{tenant.slug}/keys", params={"label": "cli"})
    assert issued.status_code == 201, issued.text
    status, out, err = await pennant("runs", "list", env={**env, "PENNANT_API_KEY": issued.json()["key"]})
    assert status == 0 and run_id[:8] in out, (out, err)


async def test_metrics_token_guards_the_api_metrics(settings: Settings, temporal_client: Client) -> None:
    guarded = settings.model_copy(
        update={"metrics_token": "s3cret", "temporal_address": temporal_client.service_client.config.target_host}
    )
    async with serve_api(guarded) as url, httpx.AsyncClient(base_url=url, timeout=10) as http:
        assert (await http.get("/metrics")).status_code == 401
        assert (await http.get("/metrics", headers={"Authorization": "Bearer wrong"})).status_code == 401
        answer = await http.get("/metrics", headers={"Authorization": "Bearer s3cret"})
        assert answer.status_code == 200 and "pennant_runs" in answer.text


async def test_provider_calls_are_counted_by_outcome(
    provider_sim: ProviderSimulator, sim: SimulatorControl, pool: asyncpg.Pool
) -> None:
    config = load_config_file(TENANT_CONFIGS / "freshmart.yaml")
    config = config.model_copy(update={"slug": f"ops-{uuid.uuid4().hex[:8]}"})
    outcomes = ("ok", "permanent", "transient", "rate_limited")

    def counted() -> dict[str, float]:
        labels = {"tenant": config.slug, "channel": "sms"}
        return {o: REGISTRY.get_sample_value("pennant_provider_messages_total", {**labels, "outcome": o}) or 0.0
                for o in outcomes}  # fmt: skip

    def sms(key: str, to: str) -> OutboundMessage:
        return OutboundMessage(key, 1, to, RenderedSms("hello"), {})

    async with httpx.AsyncClient(timeout=2) as http:
        await store_provider_secrets(pool, config.slug)
        secrets = SecretResolver(pool, TEST_KEYRING)
        adapter = MeteredAdapter(HttpSmsAdapter(http, provider_sim.url, secrets, concurrency=1))
        await sim.set_faults(permanent_fail=["+12125550100"])
        await adapter.send_batch(config, [sms("o:1", "+12125550100"), sms("o:2", "+12125550101")])
        assert counted() == {"ok": 1, "permanent": 1, "transient": 0, "rate_limited": 0}
        for faults, outcome in (({"fail_n": 1}, "transient"), ({"rate_limit": {"count": 1}}, "rate_limited")):
            await sim.set_faults(**faults)
            with pytest.raises(TransientChannelError):
                await adapter.send_batch(config, [sms(f"o:{outcome}", "+12125550102")])
            assert counted()[outcome] == 1
    duration = "pennant_provider_request_duration_seconds_count"
    for outcome in outcomes:
        calls = REGISTRY.get_sample_value(duration, {"tenant": config.slug, "channel": "sms", "outcome": outcome})
        assert (calls or 0) == (0 if outcome == "ok" else 1), outcome  # the first call had a refusal
