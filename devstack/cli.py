"""The `pennant` command: `dev` (the whole local stack), and each part on its own."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from core.infra.settings import get_settings
from devstack import events_cli, runs_cli, secrets_cli


def _exit(status: int) -> None:
    # Temporal's runtime can abort at interpreter exit (sdk-python#300): flush, then leave now.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def cmd_dev(args: argparse.Namespace) -> int:
    """`pennant dev`: start the whole local stack and seed demo tenants."""
    from devstack.launcher import run_dev

    return run_dev(get_settings())


def cmd_api(args: argparse.Namespace) -> int:
    """`pennant api`: serve the HTTP API under uvicorn."""
    import uvicorn

    from api.app import create_app
    from core.infra.logs import setup_logging

    settings = get_settings()
    setup_logging(settings.log_format, settings.log_level)
    # No log_config: uvicorn's own loggers go through the handler above (JSON or text lines).
    app = create_app(settings)
    uvicorn.run(
        app, host=settings.api_host, port=settings.api_port, log_level="info", log_config=None,
        forwarded_allow_ips=settings.forwarded_allow_ips,
    )  # fmt: skip
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """`pennant worker`: serve the task queues of all, named or one shard of the tenants."""
    from workers.main import run

    tenants = [t for t in (args.tenants or "").split(",") if t] or None
    return run(get_settings(), tenants, args.shard, args.processes)


def cmd_dns(args: argparse.Namespace) -> int:
    """`pennant dns`: serve the demo sending domains' records on loopback until SIGTERM or Ctrl-C."""
    import asyncio
    import signal

    from core.infra.db import create_pool
    from devstack.dns_server import demo_domains, start_dns

    settings = get_settings()

    async def serve() -> None:
        pool = await create_pool(settings.database_url or "", min_size=1, max_size=2)
        domains = demo_domains(settings.tenant_configs_dir)
        transport, _ = await start_dns(
            pool, domains, settings.mail_spf_include, settings.mail_bounce_host, port=settings.dns_port
        )
        print(f"DNS on 127.0.0.1:{settings.dns_port} (UDP) for {', '.join(domains)}", flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        try:
            await stop.wait()
        finally:
            transport.close()
            await pool.close()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass
    return 0


def cmd_smtp_sink(args: argparse.Namespace) -> int:
    """`pennant smtp-sink`: run the local SMTP sink until SIGTERM or Ctrl-C."""
    import signal
    import threading

    from devstack.event_emitter import EventEmitter
    from devstack.smtp_sink import start_sink

    settings = get_settings()
    events = EventEmitter(settings.provider_events_url, settings.provider_events_secret)
    controller = start_sink(settings.outbox_dir, settings.smtp_host, settings.smtp_port, events)
    if settings.dns_nameserver:  # `pennant dev`'s loopback DNS: each message's DKIM is verified
        host, _, port = settings.dns_nameserver.rpartition(":")
        controller.handler.configure_dns(host, int(port))
    print(f"SMTP sink on {settings.smtp_host}:{settings.smtp_port}, storing in {settings.outbox_dir}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    controller.stop()
    return 0


def cmd_provider_sim(args: argparse.Namespace) -> int:
    """`pennant provider-sim`: serve the SMS, push and webhook provider simulator."""
    from urllib.parse import urlsplit

    from devstack.event_emitter import EventEmitter
    from devstack.provider_simulator import serve

    settings = get_settings()
    url = urlsplit(settings.provider_base_url)
    host, port = args.host or url.hostname or "127.0.0.1", args.port or url.port or 8030
    print(f"provider simulator on http://{host}:{port} (control: /_sim/faults, /_sim/messages)", flush=True)
    serve(host, port, EventEmitter(settings.provider_events_url, settings.provider_events_secret))
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    """`pennant migrate`: apply the SQL migrations as the owner (DATABASE_OWNER_URL, else DATABASE_URL)."""
    from core.infra.db import create_pool, migrate

    async def go() -> None:
        url = get_settings().owner_database_url
        if not url:
            raise SystemExit("DATABASE_URL is not set")
        pool = await create_pool(url)
        try:
            applied = await migrate(pool)
            print("applied: " + (", ".join(applied) or "nothing (up to date)"))
        finally:
            await pool.close()

    asyncio.run(go())
    return 0


def cmd_tenants_validate(args: argparse.Namespace) -> int:
    """`pennant tenants validate`: report every error of each tenant config file."""
    from devstack.tenants import config_files, validate_files

    files = [Path(f) for f in args.files] or config_files(get_settings().tenant_configs_dir)
    report = validate_files(files)
    bad = 0
    for path, errors in report.items():
        if errors:
            bad += 1
            print(f"{path}: INVALID")
            for err in errors:
                print(f"  {err}")
        else:
            print(f"{path}: ok")
    return 1 if bad else 0


def cmd_tenants_sync(args: argparse.Namespace) -> int:
    """`pennant tenants sync`: store each changed tenant config file as a new version."""
    from core.infra.db import create_pool
    from core.security.secrets import Keyring
    from core.tenants.config_store import ConfigError
    from devstack.tenants import sync_directory

    async def go() -> int:
        settings = get_settings()
        if not settings.database_url:
            raise SystemExit("DATABASE_URL is not set")
        pool = await create_pool(settings.database_url)
        try:
            # --demo-secrets: the demo tenants get the simulator's dummy credentials they name
            # (docker-compose's setup does this; a real tenant's admins store real ones).
            keyring = Keyring.parse(settings.secrets_keyring) if args.demo_secrets else None
            synced = await sync_directory(pool, settings.tenant_configs_dir, demo_keyring=keyring)
            for slug, version, created in synced:
                print(f"{slug}: version {version} ({'new' if created else 'unchanged'})")
            return 0
        except ConfigError as exc:
            for err in exc.errors:
                print(err, file=sys.stderr)
            return 1
        finally:
            await pool.close()

    return asyncio.run(go())


def cmd_tenants_schema(args: argparse.Namespace) -> int:
    """`pennant tenants schema`: write (or with --check, verify) tenant_configs/schema.json."""
    from core.tenants.config_schema import json_schema_text

    path = get_settings().tenant_configs_dir / "schema.json"
    text = json_schema_text()
    if args.check:
        if not path.exists() or path.read_text() != text:
            print(f"{path} is stale; run `pennant tenants schema` to regenerate it", file=sys.stderr)
            return 1
        print(f"{path} is up to date")
        return 0
    path.write_text(text)
    print(f"wrote {path}")
    return 0


def cmd_tenants_diff(args: argparse.Namespace) -> int:
    """Show what `tenants sync` would change for one tenant: its file against its stored config."""
    from core.configs.checks import load_config_file
    from core.infra.db import create_pool
    from core.tenants.config_store import ConfigError, config_diff, get_version

    async def go() -> int:
        settings = get_settings()
        if not settings.database_url:
            raise SystemExit("DATABASE_URL is not set")
        path = settings.tenant_configs_dir / f"{args.slug}.yaml"
        try:
            new = load_config_file(path).model_dump(mode="json")
        except (ConfigError, FileNotFoundError) as exc:
            print(f"{path}: {exc}", file=sys.stderr)
            return 1
        pool = await create_pool(settings.database_url)
        try:
            stored = await get_version(pool, args.slug)
        finally:
            await pool.close()
        old = stored["config"] if stored else {}
        label = f"{args.slug} v{stored['version']} (stored)" if stored else f"{args.slug} (not stored)"
        diff = config_diff(old, new, label, str(path))
        print(diff["unified"] or "no changes")
        return 0

    return asyncio.run(go())


def cmd_customers_import(args: argparse.Namespace) -> int:
    """`pennant customers import FILE --tenant SLUG`: upsert a CSV or JSON Lines file of customers."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    from core.customers.records import file_format, import_file
    from core.infra.db import create_pool, migrate

    path = Path(args.file)
    try:
        file_format(path)
        size = path.stat().st_size
    except (ValueError, OSError) as exc:
        print(exc, file=sys.stderr)
        return 2
    settings = get_settings()
    server = None
    url = settings.owner_database_url
    if not url:
        # The embedded PostgreSQL of `pennant dev` (started here if the stack is not running).
        from devstack.postgres import embedded_database_url

        server, urls = embedded_database_url(settings.data_dir / "pg")
        url = urls.owner  # migrates, and imports as the platform (the file names its tenant)

    async def go() -> int:
        pool = await create_pool(url)
        try:
            await migrate(pool)
            if not await pool.fetchval("SELECT EXISTS (SELECT 1 FROM tenants WHERE slug = $1)", args.tenant):
                print(f"tenant '{args.tenant}' does not exist", file=sys.stderr)
                return 2
            columns = (
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TextColumn("{task.fields[rows]:,} rows"),
                TimeRemainingColumn(),
            )
            with Progress(*columns, console=_stderr_console(), transient=False) as bar:
                task = bar.add_task(f"importing {path.name}", total=size, rows=0)
                report = await import_file(
                    pool,
                    args.tenant,
                    path,
                    batch_size=args.batch_size,
                    progress=lambda done, rows: bar.update(task, completed=done, rows=rows),
                )
        finally:
            await pool.close()
        counts = report.counts
        print(
            f"{args.tenant}: {report.rows} rows read, {counts.inserted} customers inserted, "
            f"{counts.updated} updated, {report.rejected} rows rejected"
        )
        for error in report.errors[: args.max_errors]:
            print(error, file=sys.stderr)
        if len(report.errors) > args.max_errors:
            print(f"… and {len(report.errors) - args.max_errors} more errors", file=sys.stderr)
        return 1 if report.rejected else 0

    try:
        return asyncio.run(go())
    finally:
        if server is not None:
            server.cleanup()  # main() leaves with os._exit: atexit would not release our handle


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 1 or more, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `pennant` command and its subcommands."""
    parser = argparse.ArgumentParser(prog="pennant", description="Pennant campaign platform")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("dev", help="start the whole local stack").set_defaults(func=cmd_dev)
    sub.add_parser("api", help="serve the HTTP API").set_defaults(func=cmd_api)
    worker = sub.add_parser("worker", help="serve tenant task queues")
    worker.add_argument("--tenants", help="comma-separated tenant slugs (default: all)")
    worker.add_argument("--shard", help="serve the hash shard i/n of the tenants, e.g. 0/4")
    worker.add_argument(
        "--processes",
        type=_positive_int,
        help="worker processes polling the same queues (default: WORKER_PROCESSES, else one per CPU core)",
    )
    worker.set_defaults(func=cmd_worker)
    sub.add_parser("smtp-sink", help="local SMTP server storing mail in the outbox").set_defaults(func=cmd_smtp_sink)
    sub.add_parser("dns", help="local DNS server for the demo sending domains").set_defaults(func=cmd_dns)
    sim = sub.add_parser("provider-sim", help="local SMS/push/webhook provider simulator")
    sim.add_argument("--host", help="default: the host of PROVIDER_BASE_URL")
    sim.add_argument("--port", type=int, help="default: the port of PROVIDER_BASE_URL")
    sim.set_defaults(func=cmd_provider_sim)
    sub.add_parser("migrate", help="apply SQL migrations").set_defaults(func=cmd_migrate)
    tenants = sub.add_parser("tenants", help="tenant configuration").add_subparsers(dest="action", required=True)
    validate = tenants.add_parser("validate", help="validate tenant config files")
    validate.add_argument("files", nargs="*")
    validate.set_defaults(func=cmd_tenants_validate)
    sync = tenants.add_parser("sync", help="store changed tenant configs as new versions")
    sync.add_argument("--demo-secrets", action="store_true", help="store the demo credentials the configs name first")
    sync.set_defaults(func=cmd_tenants_sync)
    diff = tenants.add_parser("diff", help="compare a tenant's config file with its stored version")
    diff.add_argument("slug")
    diff.set_defaults(func=cmd_tenants_diff)
    schema = tenants.add_parser("schema", help="write tenant_configs/schema.json from the model")
    schema.add_argument("--check", action="store_true", help="only check that it is up to date")
    schema.set_defaults(func=cmd_tenants_schema)
    secrets_cli.register(tenants)  # tenants secrets set|generate|list|delete|new-key
    runs_cli.register(sub)  # runs list|show|watch|pause|resume|cancel, campaigns list|start
    events_cli.register(sub)  # events sources create|list|revoke, events tail, events send
    customers = sub.add_parser("customers", help="customer data").add_subparsers(dest="action", required=True)
    load = customers.add_parser(
        "import",
        help="upsert customers from a CSV (header row) or JSON Lines file by external_id",
        description="Rows are written in batches as they are read; invalid rows are reported with "
        "their line and field at the end and do not stop the rest. Exit status 1 when any row was rejected.",
    )
    load.add_argument("file", help="a .csv or .jsonl file")
    load.add_argument("--tenant", required=True, help="the tenant's slug")
    load.add_argument("--batch-size", type=int, default=5_000, help="rows per transaction (default 5000)")
    load.add_argument("--max-errors", type=int, default=1_000, help="print at most this many errors (default 1000)")
    load.set_defaults(func=cmd_customers_import)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of `pennant`: run the subcommand and exit with its status."""
    args = build_parser().parse_args(argv)
    try:
        status = args.func(args)
    except KeyboardInterrupt:
        status = 130
    _exit(status or 0)


if __name__ == "__main__":
    main()
