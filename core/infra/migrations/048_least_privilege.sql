-- Least privilege (issue 21, item 6). The application logs in as pennant_app: not a superuser,
-- owner of nothing, NOBYPASSRLS. Migrations run as the owner role (DATABASE_OWNER_URL), which
-- must be a superuser or hold BYPASSRLS: the functions below run as it and read across tenants.
--
-- Tenant tables FORCE row-level security, and their policies no longer trust the setting
-- `pennant.tenant_id` (any statement can set_config it): they compare against pennant_tenant(),
-- which reads a row that only pennant_enter_tenant() writes, once per transaction, into a
-- temporary table the application role cannot write, truncate or drop.

-- The login itself is created by devstack/postgres.py ensure_database or deploy/postgres-init.sql
-- (with a password). Created here NOLOGIN when missing, so that the grants below always apply.
DO $$ BEGIN
    CREATE ROLE pennant_app NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;
GRANT pennant_tenant TO pennant_app;
-- Outside a tenant transaction, a read that row-level security would filter fails ("query would
-- be affected by row-level security policy") instead of quietly returning nothing; tenant_tx
-- turns it on for its own transaction.
ALTER ROLE pennant_app SET row_security = off;

REVOKE CREATE ON SCHEMA public FROM PUBLIC;
REVOKE ALL ON schema_migrations FROM PUBLIC;

-- Platform tables (no tenant_id under RLS, read across tenants on purpose).
GRANT SELECT, INSERT, UPDATE ON tenants TO pennant_app;
GRANT SELECT, INSERT ON api_keys TO pennant_app;
GRANT UPDATE (last_used_at, revoked_at) ON api_keys TO pennant_app;

-- Admin keys (tenant_id NULL) are made only by the owner role: a stolen app connection cannot
-- mint a key that reaches every tenant.
CREATE FUNCTION pennant_refuse_admin_key() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.tenant_id IS NULL
       AND NOT pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = TG_RELID), 'MEMBER') THEN
        RAISE EXCEPTION 'admin keys are created with the owner role (DATABASE_OWNER_URL)'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER api_keys_admin_by_owner BEFORE INSERT OR UPDATE OF tenant_id ON api_keys
    FOR EACH ROW EXECUTE FUNCTION pennant_refuse_admin_key();

-- The tenant of the current transaction, as pennant_enter_tenant recorded it; NULL outside one.
-- The table must be the owner's own: a temporary table of that name made by the application
-- (before entering) is ignored, so it cannot stand in for the real one.
CREATE FUNCTION pennant_tenant() RETURNS text
    LANGUAGE plpgsql STABLE PARALLEL RESTRICTED SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ctx regclass := to_regclass('pg_temp.pennant_tenant_context');
    found text;
BEGIN
    IF ctx IS NULL OR (SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = ctx) <> current_user THEN
        RETURN NULL;
    END IF;
    SELECT tenant INTO found FROM pg_temp.pennant_tenant_context;
    RETURN found;
END $$;
GRANT EXECUTE ON FUNCTION pennant_tenant() TO PUBLIC;

-- Enter `tenant` for the rest of the transaction; once only (a second call, e.g. from injected
-- SQL after RESET ROLE, is refused). ON COMMIT DELETE ROWS ends it with the transaction.
CREATE FUNCTION pennant_enter_tenant(tenant text) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ctx regclass := to_regclass('pg_temp.pennant_tenant_context');
BEGIN
    IF tenant IS NULL THEN
        RAISE EXCEPTION 'pennant_enter_tenant: no tenant' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF ctx IS NULL THEN
        CREATE TEMPORARY TABLE pennant_tenant_context (tenant text NOT NULL) ON COMMIT DELETE ROWS;
        ctx := to_regclass('pg_temp.pennant_tenant_context');
    END IF;
    IF (SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = ctx) <> current_user THEN
        RAISE EXCEPTION 'pg_temp.pennant_tenant_context is not the platform''s' USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF EXISTS (SELECT 1 FROM pg_temp.pennant_tenant_context) THEN
        RAISE EXCEPTION 'this transaction has entered a tenant already' USING ERRCODE = 'insufficient_privilege';
    END IF;
    INSERT INTO pg_temp.pennant_tenant_context VALUES (tenant);
    -- Informational only (logs, older code); no policy reads it any more.
    PERFORM set_config('pennant.tenant_id', tenant, true);
END $$;
REVOKE ALL ON FUNCTION pennant_enter_tenant(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pennant_enter_tenant(text) TO pennant_app;

-- Cross-tenant reads are platform work: refused inside a tenant transaction, so SQL injected
-- into tenant work cannot reach them by switching back to the login role.
CREATE FUNCTION pennant_platform_only() RETURNS void
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, public AS $$
BEGIN
    IF pennant_tenant() IS NOT NULL THEN
        RAISE EXCEPTION 'a cross-tenant read inside a tenant transaction' USING ERRCODE = 'insufficient_privilege';
    END IF;
END $$;

-- Every policy and every tenant table: the tenant comes from pennant_tenant() (evaluated once
-- per statement as an init plan), and the owner is bound by the policies too (FORCE).
DO $$
DECLARE r record;
BEGIN
    FOR r IN SELECT schemaname, tablename FROM pg_policies
             WHERE policyname = 'tenant_isolation' AND schemaname = 'public' LOOP
        EXECUTE format($p$ALTER POLICY tenant_isolation ON %I.%I
                          USING (tenant_id = (SELECT pennant_tenant()))
                          WITH CHECK (tenant_id = (SELECT pennant_tenant()))$p$, r.schemaname, r.tablename);
    END LOOP;
    FOR r IN SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'public' AND c.relrowsecurity LOOP
        EXECUTE format('ALTER TABLE %I.%I FORCE ROW LEVEL SECURITY', r.nspname, r.relname);
    END LOOP;
END $$;

-- The narrow cross-tenant reads the platform needs, as the owner.

-- Workers: every active tenant with the execution settings of its current config.
CREATE FUNCTION pennant_active_tenants() RETURNS TABLE (slug text, execution jsonb)
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
#variable_conflict use_column
BEGIN
    PERFORM pennant_platform_only();
    RETURN QUERY
        SELECT t.slug, v.config -> 'execution' FROM tenants t
        JOIN tenant_config_versions v ON v.tenant_id = t.slug AND v.version = t.current_version
        WHERE t.removed_at IS NULL ORDER BY t.slug;
END $$;

-- Gauges (api/metrics.py): unfinished runs per tenant and status; counts only.
CREATE FUNCTION pennant_run_counts(statuses text[]) RETURNS TABLE (tenant_id text, status text, n bigint)
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
#variable_conflict use_column
BEGIN
    PERFORM pennant_platform_only();
    RETURN QUERY
        SELECT r.tenant_id, r.status, count(*) FROM runs r
        WHERE r.status = ANY(statuses) GROUP BY r.tenant_id, r.status;
END $$;

-- Provider events: the sent ledger rows named by Pennant's idempotency key (tenant, run,
-- customer) or by the provider's own message id; only what recording the event needs.
CREATE FUNCTION pennant_messages_by_key(channel text, idx int[], tenants text[], run_ids uuid[], customer_ids bigint[])
    RETURNS TABLE (i int, tenant_id text, run_id uuid, customer_id bigint, address text)
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
#variable_conflict use_column
BEGIN
    PERFORM pennant_platform_only();
    RETURN QUERY
        SELECT k.i, d.tenant_id, d.run_id, d.customer_id, d.address
        FROM unnest(idx, tenants, run_ids, customer_ids) AS k(i, tenant_id, run_id, customer_id)
        JOIN deliveries d ON d.tenant_id = k.tenant_id AND d.run_id = k.run_id
                         AND d.customer_id = k.customer_id AND d.channel = pennant_messages_by_key.channel
        WHERE d.status = 'sent';
END $$;

CREATE FUNCTION pennant_messages_by_provider_id(channel text, ids text[])
    RETURNS TABLE (tenant_id text, run_id uuid, customer_id bigint, address text, provider_message_id text)
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
#variable_conflict use_column
BEGIN
    PERFORM pennant_platform_only();
    RETURN QUERY
        SELECT d.tenant_id, d.run_id, d.customer_id, d.address, d.provider_message_id FROM deliveries d
        WHERE d.provider_message_id = ANY(ids) AND d.channel = pennant_messages_by_provider_id.channel
          AND d.status = 'sent';
END $$;

-- Idempotency keys past their expiry, every tenant's (api/idempotency.py sweeps now and then).
CREATE FUNCTION pennant_sweep_idempotency_keys() RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
#variable_conflict use_column
DECLARE n bigint;
BEGIN
    PERFORM pennant_platform_only();
    DELETE FROM idempotency_keys WHERE expires_at <= now();
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;

DO $$
DECLARE f text;
BEGIN
    FOREACH f IN ARRAY ARRAY['pennant_platform_only()', 'pennant_active_tenants()', 'pennant_run_counts(text[])',
                             'pennant_messages_by_key(text, int[], text[], uuid[], bigint[])',
                             'pennant_messages_by_provider_id(text, text[])',
                             'pennant_sweep_idempotency_keys()'] LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO pennant_app', f);
    END LOOP;
END $$;
