"""`pennant tenants secrets set|generate|list|delete|new-key`: a tenant's secret store from a
terminal, through the API (so the value is encrypted by the API, and the API's checks apply).

A value is never taken from the command line (it would sit in shell history and `ps`): `set`
reads it from standard input, or prompts without echo when that is a terminal.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from core.security.secrets import Keyring
from devstack.runs_cli import Api, _subcommand


def _read_value() -> str:
    if sys.stdin.isatty():
        return getpass.getpass("value (not echoed): ")
    return sys.stdin.read().rstrip("\n")


def cmd_set(api: Api, args: argparse.Namespace, console: Console) -> int:
    """`set NAME`: store the value read from stdin (or a no-echo prompt)."""
    value = _read_value()
    info = api.call("PUT", f"/secrets/{args.name}", json={"value": value})
    console.print(f"{api.tenant}: secret {info['name']} stored (fingerprint {info['fingerprint']})")
    return 0


def cmd_generate(api: Api, args: argparse.Namespace, console: Console) -> int:
    """`generate NAME`: a random secret made by the platform, printed this once."""
    info = api.call("POST", f"/secrets/{args.name}:generate")
    console.print(f"{api.tenant}: secret {info['name']} generated; shown once, give it to the receiver:", style="bold")
    print(info["value"])
    return 0


def cmd_list(api: Api, args: argparse.Namespace, console: Console) -> int:
    """`list`: names, fingerprints and dates; never values."""
    table = Table("name", "fingerprint", "origin", "updated")
    rows: list[dict[str, Any]] = api.call("GET", "/secrets")
    for row in rows:
        table.add_row(row["name"], row["fingerprint"], row["origin"], row["updated_at"][:19])
    console.print(table)
    return 0


def cmd_delete(api: Api, args: argparse.Namespace, console: Console) -> int:
    """`delete NAME`: refused while the current config or a run in progress uses it."""
    api.call("DELETE", f"/secrets/{args.name}")
    console.print(f"{api.tenant}: secret {args.name} deleted")
    return 0


def cmd_new_key(args: argparse.Namespace) -> int:
    """`new-key`: print a fresh SECRETS_KEYRING entry (put it first; keep the old ones after it)."""
    print(Keyring.new_entry(args.id))
    return 0


def cmd_legacy(args: argparse.Namespace) -> int:
    """`legacy`: every current config and run in progress that still names an `env:` variable
    (they no longer resolve: store the values as secrets, then save `secret:NAME`). Exit 1 when any."""
    import asyncio

    from core.infra.db import create_pool
    from core.infra.settings import get_settings
    from core.security.secrets import legacy_references

    async def go() -> list[tuple[str, str, list[str]]]:
        url = get_settings().owner_database_url
        if not url:
            raise SystemExit("DATABASE_URL (or DATABASE_OWNER_URL) is not set")
        pool = await create_pool(url)
        try:
            return await legacy_references(pool)
        finally:
            await pool.close()

    found = asyncio.run(go())
    for tenant, what, paths in found:
        print(f"{tenant}: {what}: {', '.join(paths)}")
    if not found:
        print("no current config or run in progress names an env: variable")
    return 1 if found else 0


def register(tenants: Any) -> None:
    """Add `secrets` to `pennant tenants`."""
    secrets = tenants.add_parser("secrets", help="the tenant's secret store (write-only)")
    actions = secrets.add_subparsers(dest="secrets_action", required=True)
    _subcommand(actions, "set", cmd_set, "store a secret read from stdin").add_argument("name")
    _subcommand(actions, "generate", cmd_generate, "store a random secret and print it once").add_argument("name")
    _subcommand(actions, "list", cmd_list, "the tenant's secrets (never values)")
    _subcommand(actions, "delete", cmd_delete, "delete a secret no config in use names").add_argument("name")
    legacy = actions.add_parser("legacy", help="configs and runs still naming env: variables (the upgrade)")
    legacy.set_defaults(func=cmd_legacy)
    new_key = actions.add_parser("new-key", help="print a new SECRETS_KEYRING entry for rotation")
    new_key.add_argument("--id", help="the key id (default: k<UTC timestamp>)")
    new_key.set_defaults(func=cmd_new_key)
