"""`pennant runs list|show|watch|pause|resume|cancel` and `pennant campaigns list|start`: the API
from a terminal.

The API and key come from PENNANT_API_URL and PENNANT_API_KEY, else from the local stack
(`.data/dev-credentials.json` and API_HOST/API_PORT). The tenant is `--tenant`, else the one the
key belongs to.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from core.infra.settings import get_settings
from core.runs.models import TERMINAL_STATUSES

# How long `watch` measures the send rate over: long enough to smooth batch-sized steps.
RATE_WINDOW_SECONDS = 10.0


class CliError(Exception):
    """A problem to report in one line (exit status 1)."""


@dataclass
class Api:
    """The API base URL, a key, the tenant it acts for and an HTTP client using the key."""

    url: str
    key: str
    tenant: str
    http: httpx.Client

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """`method` on the tenant's `path`; the JSON body, or CliError naming the API's answer."""
        try:
            response = self.http.request(method, f"/v1/tenants/{self.tenant}{path}", **kwargs)
        except httpx.HTTPError as exc:
            raise CliError(f"cannot reach the API at {self.url}: {exc}") from exc
        if response.is_error:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise CliError(f"{method} {path}: HTTP {response.status_code}: {detail}")
        return response.json() if response.content else None  # 204: no body


def _credentials() -> dict[str, Any]:
    path = get_settings().data_dir / "dev-credentials.json"
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data


def _guess_tenants(key: str) -> list[str]:
    # Local keys read `tk_<slug with _ for ->_<32-character secret>`.
    head = key[: -(32 + 1)] if len(key) > 36 else ""
    if not head.startswith("tk_"):
        return []
    slug = head[3:]
    return list(dict.fromkeys([slug.replace("_", "-"), slug]))


def connect(tenant: str | None) -> Api:
    """Resolve the API, key and tenant (see the module docstring); CliError when one is missing."""
    settings = get_settings()
    creds = _credentials()
    url = os.environ.get("PENNANT_API_URL") or f"http://{settings.api_host}:{settings.api_port}"
    key = os.environ.get("PENNANT_API_KEY")
    tenant_keys: dict[str, str] = creds.get("tenants", {})
    if not key:
        key = tenant_keys.get(tenant or "") or creds.get("admin_key")
        if not key:
            raise CliError("no API key: set PENNANT_API_KEY (or start the local stack with `pennant dev`)")
    http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
    if tenant:
        return Api(url, key, tenant, http)
    candidates = [slug for slug, k in tenant_keys.items() if k == key] or _guess_tenants(key)
    for slug in candidates:
        try:
            if http.get(f"/v1/tenants/{slug}/runs", params={"limit": 1}).is_success:
                return Api(url, key, slug, http)
        except httpx.HTTPError as exc:
            raise CliError(f"cannot reach the API at {url}: {exc}") from exc
    raise CliError("which tenant? pass --tenant SLUG")


def _counts_line(run: dict[str, Any]) -> str:
    counts = run.get("counts") or {}
    line = f"sent {counts.get('sent', 0)}, failed {counts.get('failed', 0)}, skipped {counts.get('skipped', 0)}"
    reasons = counts.get("skipped_by_reason") or {}
    if reasons:
        line += " (" + ", ".join(f"{reason or 'none'} {n}" for reason, n in sorted(reasons.items())) + ")"
    return line


def _total(api: Api, run: dict[str, Any], channels: dict[str, int]) -> int | None:
    """Messages the run will record: its planned recipients times its campaign's channels."""
    planned = (run.get("counts") or {}).get("planned") or run.get("planned")
    if not planned:
        return None
    campaign = run["campaign_id"]
    if campaign not in channels:
        channels[campaign] = len(api.call("GET", f"/campaigns/{campaign}").get("channels") or [1])
    return int(planned) * channels[campaign]


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def watch(api: Api, run_id: str, interval: float, console: Console) -> int:
    """Follow a run with a progress bar until it ends; 0 when it completed, 1 otherwise."""
    channels: dict[str, int] = {}
    samples: deque[tuple[float, int]] = deque()
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}  {task.fields[eta]}"),
        TextColumn("{task.fields[counts]}"),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("", total=None, rate="", eta="", counts="")
        while True:
            run = api.call("GET", f"/runs/{run_id}")
            counts = run.get("counts") or {}
            done = int(counts.get("sent", 0)) + int(counts.get("failed", 0)) + int(counts.get("skipped", 0))
            total = _total(api, run, channels)
            now = time.monotonic()
            samples.append((now, done))
            while len(samples) > 2 and now - samples[0][0] > RATE_WINDOW_SECONDS:
                samples.popleft()
            elapsed = now - samples[0][0]
            rate = (done - samples[0][1]) / elapsed if elapsed > 0 else 0.0
            eta = f"ETA {_clock((total - done) / rate)}" if total and rate > 0 and done < total else ""
            progress.update(
                task,
                description=f"{run['status']:<10}",
                completed=done,
                total=total,
                rate=f"{rate:,.0f} msg/s",
                eta=eta,
                counts=_counts_line(run),
            )
            if run["status"] in TERMINAL_STATUSES:
                break
            time.sleep(interval)
    console.print(f"run {run_id} {run['status']}: {_counts_line(run)}; planned {counts.get('planned', 0)}")
    if run.get("error"):
        console.print(f"error: {run['error']}")
    return 0 if run["status"] == "completed" else 1


def _show(run: dict[str, Any], console: Console) -> None:
    table = Table(show_header=False, box=None)
    for name in ("id", "campaign_id", "status", "config_version", "planned", "send_at", "created_at"):
        table.add_row(name, str(run.get(name)))
    for name in ("started_at", "finished_at", "error", "batches_done", "batches_total"):
        if run.get(name) is not None:
            table.add_row(name, str(run[name]))
    table.add_row("counts", _counts_line(run))
    for channel, by_status in sorted(((run.get("counts") or {}).get("by_channel") or {}).items()):
        table.add_row(f"  {channel}", ", ".join(f"{s} {n}" for s, n in by_status.items()))
    console.print(table)


def cmd_runs_list(api: Api, args: argparse.Namespace, console: Console) -> int:
    """`pennant runs list`: the tenant's runs, newest first."""
    params = {k: v for k, v in (("status", args.status), ("campaign_id", args.campaign)) if v}
    page = api.call("GET", "/runs", params={**params, "limit": args.limit})
    table = Table("run", "campaign", "status", "planned", "created", "finished")
    for run in page["items"]:
        table.add_row(
            run["id"], run["campaign_id"], run["status"], str(run.get("planned") or ""),
            run["created_at"][:19], (run.get("finished_at") or "")[:19],
        )  # fmt: skip
    console.print(table)
    return 0


def cmd_runs_show(api: Api, args: argparse.Namespace, console: Console) -> int:
    """`pennant runs show RUN`: a run's status, times and counts."""
    _show(api.call("GET", f"/runs/{args.run}"), console)
    return 0


def cmd_runs_watch(api: Api, args: argparse.Namespace, console: Console) -> int:
    """`pennant runs watch RUN`: a live progress bar until the run ends."""
    return watch(api, args.run, args.interval, console)


def _control(action: str) -> Callable[[Api, argparse.Namespace, Console], int]:
    def command(api: Api, args: argparse.Namespace, console: Console) -> int:
        run = api.call("POST", f"/runs/{args.run}:{action}")
        console.print(f"run {args.run} {run['status']}: {_counts_line(run)}")
        return 0

    command.__doc__ = f"`pennant runs {action} RUN`."
    return command


def cmd_campaigns_list(api: Api, args: argparse.Namespace, console: Console) -> int:
    """`pennant campaigns list`: the tenant's campaigns, newest first."""
    table = Table("campaign", "name", "status", "channels", "segment", "created")
    for c in api.call("GET", "/campaigns"):
        segment = c["segment"] if isinstance(c["segment"], str) else json.dumps(c["segment"])
        table.add_row(c["id"], c["name"], c["status"], ",".join(c["channels"]), segment, c["created_at"][:19])
    console.print(table)
    return 0


def cmd_campaigns_start(api: Api, args: argparse.Namespace, console: Console) -> int:
    """`pennant campaigns start CAMPAIGN [--watch]`: start a run (and follow it)."""
    started = api.call("POST", f"/campaigns/{args.campaign}/runs")
    console.print(f"started run {started['run_id']} (workflow {started['workflow_id']})")
    return watch(api, started["run_id"], args.interval, console) if args.watch else 0


def _run_api_command(args: argparse.Namespace) -> int:
    console = Console(highlight=False)
    try:
        api = connect(args.tenant)
        try:
            status: int = args.api_command(api, args, console)
            return status
        finally:
            api.http.close()
    except CliError as exc:
        print(f"pennant: {exc}", file=sys.stderr)
        return 1


def _subcommand(
    parent: Any, name: str, command: Callable[[Api, argparse.Namespace, Console], int], help: str
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = parent.add_parser(name, help=help)
    parser.add_argument("--tenant", help="tenant slug (default: the API key's tenant)")
    parser.set_defaults(func=_run_api_command, api_command=command)
    return parser


def register(sub: Any) -> None:
    """Add `runs` and `campaigns` to the `pennant` command's subparsers."""
    runs = sub.add_parser("runs", help="list, show, watch and control runs")
    runs = runs.add_subparsers(dest="action", required=True)
    listing = _subcommand(runs, "list", cmd_runs_list, "the tenant's runs, newest first")
    listing.add_argument("--status", help="only runs with this status")
    listing.add_argument("--campaign", help="only runs of this campaign")
    listing.add_argument("--limit", type=int, default=20)
    _subcommand(runs, "show", cmd_runs_show, "a run's status and counts").add_argument("run")
    watching = _subcommand(runs, "watch", cmd_runs_watch, "a live progress bar until the run ends")
    watching.add_argument("run")
    watching.add_argument("--interval", type=float, default=1.0, help="seconds between polls")
    for action in ("pause", "resume", "cancel"):
        _subcommand(runs, action, _control(action), f"{action} a run").add_argument("run")
    campaigns = sub.add_parser("campaigns", help="list and start campaigns")
    campaigns = campaigns.add_subparsers(dest="action", required=True)
    _subcommand(campaigns, "list", cmd_campaigns_list, "the tenant's campaigns")
    start = _subcommand(campaigns, "start", cmd_campaigns_start, "start a run of a campaign")
    start.add_argument("campaign")
    start.add_argument("--watch", action="store_true", help="follow the run until it ends")
    start.add_argument("--interval", type=float, default=1.0, help="seconds between polls with --watch")
