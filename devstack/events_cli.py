"""`pennant events …`: a tenant's source keys, its stream followed live, and a JSON Lines file
of Segment calls posted to the tracking API.

    pennant events sources create "web shop" --tenant freshmart
    pennant events sources list --tenant freshmart
    pennant events sources revoke <id> --tenant freshmart
    pennant events tail --tenant freshmart
    pennant events send calls.jsonl --tenant freshmart
    pennant events demo            # what `pennant dev` runs: a light stream for the demo tenants

The API, key and tenant are found as for `pennant runs` (PENNANT_API_URL, PENNANT_API_KEY, or
the local stack's .data/dev-credentials.json).
"""

from __future__ import annotations

import argparse
import json
import random
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from core.infra.settings import get_settings
from devstack.runs_cli import Api, CliError, _credentials, _subcommand

# A batch posted by `send`: under Segment's 500 KB, with room for the envelope.
SEND_BATCH_BYTES = 450 * 1024
SEND_BATCH_EVENTS = 500


def cmd_sources_create(api: Api, args: argparse.Namespace, console: Console) -> int:
    made = api.call("POST", "/sources", json={"label": args.label})
    console.print(f"source {made['id']} ({escape(made['label'])})\nwrite key (shown once): {made['key']}")
    return 0


def cmd_sources_list(api: Api, args: argparse.Namespace, console: Console) -> int:
    for source in api.call("GET", "/sources"):
        state = f"revoked {source['revoked_at']}" if source["revoked_at"] else f"last used {source['last_used_at']}"
        console.print(f"{source['id']}  {source['prefix']}…  {escape(source['label'])}  {state}")
    return 0


def cmd_sources_revoke(api: Api, args: argparse.Namespace, console: Console) -> int:
    api.call("DELETE", f"/sources/{args.source}")
    console.print(f"revoked {args.source}")
    return 0


def _line(event: dict[str, Any]) -> str:
    who = event["user_id"] or f"anon:{event['anonymous_id']}"
    name = event["event"] or ""
    return f"{event['timestamp']}  {event['type']:<8} {escape(name):<28} {escape(who)}"


def cmd_tail(api: Api, args: argparse.Namespace, console: Console) -> int:
    """Follow the stream: the last `--last` events, then each new one as it arrives."""
    page = api.call("GET", "/stream", params={"limit": 500})
    after = page["last_id"]
    for event in page["events"][-args.last :]:
        console.print(_line(event))
    while True:
        time.sleep(args.interval)
        page = api.call("GET", "/stream", params={"after_id": after, "limit": 500})
        for event in page["events"]:
            console.print(_line(event))
        after = page["last_id"]


def _batches(path: Path) -> Any:
    """(batch of calls, bytes of the file read so far) from a JSON Lines file."""
    batch: list[Any] = []
    size = read = 0
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, start=1):
            read += len(raw)
            if not raw.strip():
                continue
            try:
                call = json.loads(raw)
            except ValueError as exc:
                raise CliError(f"{path}:{number}: not valid JSON ({exc})") from exc
            if size + len(raw) > SEND_BATCH_BYTES or len(batch) >= SEND_BATCH_EVENTS:
                yield batch, read
                batch, size = [], 0
            batch.append(call)
            size += len(raw)
    if batch:
        yield batch, read


def cmd_send(api: Api, args: argparse.Namespace, console: Console) -> int:
    """Post a JSON Lines file of Segment calls to /v1/batch, a batch at a time, with a progress bar."""
    path = Path(args.file)
    try:
        total = path.stat().st_size
    except OSError as exc:
        raise CliError(str(exc)) from exc
    accepted = duplicates = 0
    rejected: list[str] = []
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(f"sending {path.name}", total=total)
        offset = 0
        for batch, read in _batches(path):
            response = api.http.post("/v1/batch", json={"batch": batch})
            if response.status_code != 200:
                raise CliError(f"POST /v1/batch: HTTP {response.status_code}: {response.text[:300]}")
            answer = response.json()
            accepted += answer["accepted"]
            duplicates += answer["duplicates"]
            rejected += [f"call {offset + p['index'] + 1}: {p['field']}: {p['reason']}" for p in answer["rejected"]]
            offset += len(batch)
            bar.update(task, completed=read)
    console.print(f"{api.tenant}: {accepted} accepted, {duplicates} duplicates, {len(rejected)} rejected")
    for line in rejected[:50]:
        console.print(escape(line))
    return 1 if rejected else 0


# What a demo shopper does in one visit: browse, sometimes add to the cart, sometimes buy.
_AISLES = {
    "freshmart": (("DRY-1001", "dairy", 3.49), ("BAK-2002", "bakery", 4.99), ("PRO-3003", "produce", 2.29)),
    "wellcare": (
        ("RX-5001", "prescription", 12.00),
        ("OTC-6002", "pain relief", 8.49),
        ("VIT-7003", "vitamins", 15.99),
    ),
    "quickstop": (("SNK-8001", "snacks", 1.99), ("BEV-9002", "beverages", 2.49), ("FUE-0003", "fuel", 45.00)),
}


def demo_visit(tenant: str, rng: random.Random, customers: int) -> list[dict[str, Any]]:
    """One visit's Segment calls: product views, maybe a cart and checkout, maybe an order or a refill."""
    aisle = _AISLES.get(tenant, _AISLES["freshmart"])
    anonymous = str(uuid.uuid4())
    user = f"cust-{rng.randint(1, max(1, customers)):06d}"
    calls: list[dict[str, Any]] = []
    for _ in range(rng.randint(1, 4)):
        sku, category, price = rng.choice(aisle)
        calls.append({"type": "track", "event": "Product Viewed", "anonymousId": anonymous,
                      "properties": {"sku": sku, "category": category, "price": price}})  # fmt: skip
    if rng.random() < 0.4:
        calls.append({"type": "identify", "userId": user, "anonymousId": anonymous})
        sku, category, price = rng.choice(aisle)
        product = {"sku": sku, "category": category, "price": price, "quantity": 1}
        calls.append({"type": "track", "event": "Product Added", "userId": user, "properties": product})
        if rng.random() < 0.5:
            calls.append({"type": "track", "event": "Checkout Started", "userId": user, "properties": {"value": price}})
            if rng.random() < 0.7:
                order = {"order_id": f"demo-{uuid.uuid4().hex[:12]}", "revenue": price, "currency": "USD",
                         "products": [product]}  # fmt: skip
                calls.append({"type": "track", "event": "Order Completed", "userId": user, "properties": order})
        if tenant == "wellcare" and rng.random() < 0.3:
            calls.append({"type": "track", "event": "Prescription Refilled", "userId": user,
                          "properties": {"rx": f"RX-{rng.randint(1000, 9999)}"}})  # fmt: skip
    for call in calls:
        call["messageId"] = str(uuid.uuid4())
    return calls


def cmd_demo(args: argparse.Namespace) -> int:
    """Post a light stream of visits for every demo tenant of the local stack, until stopped."""
    settings = get_settings()
    host = "127.0.0.1" if settings.api_host in ("0.0.0.0", "::", "") else settings.api_host
    url = f"http://{host}:{settings.api_port}"
    rng = random.Random()
    while True:
        tenants: dict[str, str] = _credentials().get("tenants", {})
        with httpx.Client(base_url=url, timeout=10) as http:
            for tenant, key in tenants.items():
                batch = [call for _ in range(rng.randint(1, 3))
                         for call in demo_visit(tenant, rng, settings.demo_customers_per_tenant)]  # fmt: skip
                try:
                    http.post("/v1/batch", json={"batch": batch}, headers={"Authorization": f"Bearer {key}"})
                except httpx.HTTPError:
                    pass  # the API is starting or restarting: the next round tries again
        time.sleep(args.interval)


def register(sub: Any) -> None:
    """Add `events` to the `pennant` command's subparsers."""
    events = sub.add_parser("events", help="source keys, the event stream, sending Segment calls")
    events = events.add_subparsers(dest="action", required=True)
    sources = events.add_parser("sources", help="the tenant's source keys (Segment write keys)")
    sources = sources.add_subparsers(dest="sources_action", required=True)
    _subcommand(sources, "create", cmd_sources_create, "make a source key").add_argument("label")
    _subcommand(sources, "list", cmd_sources_list, "the tenant's source keys")
    _subcommand(sources, "revoke", cmd_sources_revoke, "revoke a source key").add_argument("source")
    tail = _subcommand(events, "tail", cmd_tail, "follow the tenant's event stream")
    tail.add_argument("--last", type=int, default=20, help="events shown before following (default 20)")
    tail.add_argument("--interval", type=float, default=1.0, help="seconds between polls")
    send = _subcommand(events, "send", cmd_send, "post a JSON Lines file of Segment calls to /v1/batch")
    send.add_argument("file", help="one Segment call (track, identify, …) per line")
    demo = events.add_parser("demo", help="a light stream of shopper visits for the local stack's demo tenants")
    demo.add_argument("--interval", type=float, default=2.0, help="seconds between rounds (default 2)")
    demo.set_defaults(func=cmd_demo)
