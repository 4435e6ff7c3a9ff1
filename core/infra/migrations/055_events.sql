-- Events in (issue 23): source keys, one event stream per tenant partitioned by time, the
-- messageId dedupe window, and the anonymous ids bound to customers.

-- Source keys are Segment write keys: public (they ship in a retailer's pages), so they write
-- events and nothing else. A platform table like api_keys: the tracking lane finds the tenant
-- from the key before it is in any tenant. Stored as a SHA-256 hash only.
CREATE TABLE source_keys (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    key_hash     text NOT NULL UNIQUE,
    tenant_id    text NOT NULL REFERENCES tenants (slug),
    label        text NOT NULL DEFAULT '',
    prefix       text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX source_keys_by_tenant ON source_keys (tenant_id, created_at);
GRANT SELECT, INSERT ON source_keys TO pennant_app;
GRANT UPDATE (last_used_at, revoked_at) ON source_keys TO pennant_app;

-- The stream. Range partitions by the event's own time (after the clock-skew correction), a
-- month each, so "who did X within N days" reads only recent partitions and retention drops
-- whole ones. A unique index on a partitioned table must include the partition key, so the
-- messageId dedupe lives in event_dedupe. No IP address is stored (context.ip is removed).
CREATE SEQUENCE events_id_seq;
CREATE TABLE events (
    tenant_id    text NOT NULL,
    id           bigint NOT NULL DEFAULT nextval('events_id_seq'),
    message_id   text NOT NULL,
    type         text NOT NULL CHECK (type IN ('track', 'identify', 'page', 'screen', 'alias', 'group')),
    event        text,               -- track: the event name; page and screen: the name
    user_id      text,
    anonymous_id text,
    previous_id  text,               -- alias
    group_id     text,               -- group
    customer_id  bigint,             -- NULL until the user or anonymous id is a known customer
    properties   jsonb NOT NULL DEFAULT '{}'::jsonb,
    traits       jsonb NOT NULL DEFAULT '{}'::jsonb,
    context      jsonb NOT NULL DEFAULT '{}'::jsonb,
    source_id    uuid,               -- the source key it came through (NULL: a tenant API key)
    "timestamp"  timestamptz NOT NULL,
    sent_at      timestamptz,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, "timestamp", id)
) PARTITION BY RANGE ("timestamp");
-- Events older than the first monthly partition (a backfill) land here.
CREATE TABLE events_before PARTITION OF events DEFAULT;

-- A partition is read only through `events` (the application role has no grant on it), whose
-- policy applies; each partition carries the same policy too, so a grant added by mistake
-- still reaches one tenant's rows only.
CREATE FUNCTION pennant_guard_event_partition(part text) RETURNS void
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, public AS $$
BEGIN
    EXECUTE format('ALTER TABLE public.%I ENABLE ROW LEVEL SECURITY', part);
    EXECUTE format('ALTER TABLE public.%I FORCE ROW LEVEL SECURITY', part);
    EXECUTE format($p$CREATE POLICY tenant_isolation ON public.%I
                      USING (tenant_id = (SELECT pennant_tenant()))
                      WITH CHECK (tenant_id = (SELECT pennant_tenant()))$p$, part);
END $$;
REVOKE ALL ON FUNCTION pennant_guard_event_partition(text) FROM PUBLIC;
SELECT pennant_guard_event_partition('events_before');
CREATE INDEX events_by_customer ON events (tenant_id, customer_id, "timestamp" DESC) WHERE customer_id IS NOT NULL;
CREATE INDEX events_by_name ON events (tenant_id, event, "timestamp", customer_id);
-- Events waiting for their customer: attached by the identify or alias that names them.
CREATE INDEX events_unattached_anonymous ON events (tenant_id, anonymous_id) WHERE customer_id IS NULL;
CREATE INDEX events_unattached_user ON events (tenant_id, user_id) WHERE customer_id IS NULL;

-- First copy wins: a messageId seen from the tenant within 7 days of its first receipt is not
-- stored again. Rows older than the window are reused (ON CONFLICT ... WHERE) and swept.
CREATE TABLE event_dedupe (
    tenant_id   text NOT NULL,
    message_id  text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, message_id)
);

-- An anonymous id binds to one customer, on the first identify or alias that links it.
CREATE TABLE event_identities (
    tenant_id    text NOT NULL,
    anonymous_id text NOT NULL,
    customer_id  bigint NOT NULL,
    linked_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, anonymous_id)
);

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['events', 'event_dedupe', 'event_identities'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format($p$CREATE POLICY tenant_isolation ON %I
                          USING (tenant_id = (SELECT pennant_tenant()))
                          WITH CHECK (tenant_id = (SELECT pennant_tenant()))$p$, t);
    END LOOP;
END $$;
GRANT SELECT, INSERT, UPDATE ON events TO pennant_tenant;
GRANT SELECT, INSERT, UPDATE ON event_dedupe TO pennant_tenant;
GRANT SELECT, INSERT ON event_identities TO pennant_tenant;
GRANT USAGE ON SEQUENCE events_id_seq TO pennant_tenant;

-- Monthly partitions from last month to `months_ahead` months ahead, made when missing; the
-- number made. Idempotent and cheap, so the API calls it now and then; a month whose rows
-- already sit in the default partition (nobody called this for months) is left there.
CREATE FUNCTION pennant_ensure_event_partitions(months_ahead int) RETURNS int
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    m date := (date_trunc('month', now()) - interval '1 month')::date;
    made int := 0;
    part text;
BEGIN
    PERFORM pennant_platform_only();
    IF months_ahead < 0 OR months_ahead > 24 THEN
        RAISE EXCEPTION 'months_ahead must be 0..24' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR i IN 0 .. months_ahead + 1 LOOP
        part := format('events_%s', to_char(m, 'YYYY_MM'));
        IF to_regclass('public.' || part) IS NULL THEN
            BEGIN
                EXECUTE format('CREATE TABLE public.%I PARTITION OF public.events FOR VALUES FROM (%L) TO (%L)',
                               part, m, (m + interval '1 month')::date);
                PERFORM pennant_guard_event_partition(part);
                made := made + 1;
            EXCEPTION WHEN check_violation THEN
                NULL;
            END;
        END IF;
        m := (m + interval '1 month')::date;
    END LOOP;
    RETURN made;
END $$;

-- Every tenant's dedupe rows past the 7-day window.
CREATE FUNCTION pennant_sweep_event_dedupe() RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE n bigint;
BEGIN
    PERFORM pennant_platform_only();
    DELETE FROM event_dedupe WHERE received_at < now() - interval '7 days';
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;

REVOKE ALL ON FUNCTION pennant_ensure_event_partitions(int) FROM PUBLIC;
REVOKE ALL ON FUNCTION pennant_sweep_event_dedupe() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pennant_ensure_event_partitions(int) TO pennant_app;
GRANT EXECUTE ON FUNCTION pennant_sweep_event_dedupe() TO pennant_app;
SELECT pennant_ensure_event_partitions(3);
