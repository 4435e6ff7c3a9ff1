#!/bin/sh
# Runs once, when the postgres image initialises an empty data volume (docker-entrypoint-initdb.d).
# POSTGRES_USER is the owner role: it owns the schema and runs the migrations (DATABASE_OWNER_URL).
# pennant_app is what the API and workers log in as (DATABASE_URL): not a superuser, owner of
# nothing, unable to bypass row-level security; migration 048 grants it what it may do.
# row_security = off: a read that row-level security would filter fails instead of returning
# nothing (tenant transactions turn it on for themselves).
# On a volume initialised before this file existed, run the same statements once by hand.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v app_password="$PENNANT_APP_DB_PASSWORD" <<'SQL'
CREATE ROLE pennant_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE PASSWORD :'app_password';
ALTER ROLE pennant_app SET row_security = off;
SQL
