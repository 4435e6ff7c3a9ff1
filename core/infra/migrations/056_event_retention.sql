-- Event retention (issue 23): each tenant's events older than its events.retention_days go.
-- Partitions are months shared by every tenant, so a whole partition is dropped once it is
-- older than the longest retention of any tenant; within that, each tenant's older rows are
-- deleted in bounded batches (`batch` rows per tenant per call), so one call never holds a
-- long transaction. The API calls it with its other stream upkeep.
CREATE FUNCTION pennant_expire_events(batch int) RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    r record;
    longest int := 0;
    removed bigint := 0;
    n bigint;
    month date;
BEGIN
    PERFORM pennant_platform_only();
    IF batch < 1 OR batch > 1000000 THEN
        RAISE EXCEPTION 'batch must be 1..1000000' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR r IN SELECT t.slug, coalesce((v.config -> 'events' ->> 'retention_days')::int, 400) AS days
             FROM tenants t JOIN tenant_config_versions v ON v.tenant_id = t.slug AND v.version = t.current_version
    LOOP
        longest := greatest(longest, r.days);
        DELETE FROM events WHERE (tenant_id, "timestamp", id) IN (
            SELECT e.tenant_id, e."timestamp", e.id FROM events e
            WHERE e.tenant_id = r.slug AND e."timestamp" < now() - make_interval(days => r.days)
            LIMIT batch);
        GET DIAGNOSTICS n = ROW_COUNT;
        removed := removed + n;
    END LOOP;
    IF longest > 0 THEN
        FOR r IN SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                 WHERE i.inhparent = 'public.events'::regclass AND c.relname ~ '^events_[0-9]{4}_[0-9]{2}$'
        LOOP
            month := to_date(substr(r.relname, 8), 'YYYY_MM');
            IF month + interval '1 month' <= now() - make_interval(days => longest) THEN
                EXECUTE format('DROP TABLE public.%I', r.relname);
            END IF;
        END LOOP;
    END IF;
    RETURN removed;
END $$;
REVOKE ALL ON FUNCTION pennant_expire_events(int) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pennant_expire_events(int) TO pennant_app;
