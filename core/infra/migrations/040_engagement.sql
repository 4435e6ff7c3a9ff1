-- The data loop: what each message did (opens, clicks, provider receipts, bounces,
-- complaints), the links a run's messages carried, and the tenant's own customer events
-- (purchases and custom), each conversion attributed to the message that led to it.

-- Tracked links redirect only to a URL recorded here when the message was rendered, never to
-- one taken from the request: no open redirect.
CREATE TABLE run_links (
    tenant_id  text NOT NULL,
    run_id     uuid NOT NULL,
    link_id    text NOT NULL,              -- a short hash of the URL, carried in the token
    url        text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, run_id, link_id)
);

-- One row per event on one message (tenant, run, customer, channel). Machine opens and clicks
-- (link scanners, privacy proxies, bots, too soon after the send) are flagged, never dropped.
-- No IP address is stored.
CREATE TABLE message_events (
    tenant_id      text NOT NULL,
    id             bigint GENERATED ALWAYS AS IDENTITY,
    run_id         uuid NOT NULL,
    customer_id    bigint NOT NULL,
    channel        text NOT NULL,
    kind           text NOT NULL
                   CHECK (kind IN ('open', 'click', 'delivered', 'bounce', 'complaint', 'unsubscribe')),
    bounce_type    text CHECK (bounce_type IN ('hard', 'soft')),
    link_id        text,
    machine        boolean NOT NULL DEFAULT false,
    machine_reason text,
    user_agent     text,
    occurred_at    timestamptz NOT NULL DEFAULT now(),
    -- set when the source names its event (a provider's event id): a replay is ignored
    dedupe_key     text,
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX message_events_dedupe ON message_events (tenant_id, dedupe_key) WHERE dedupe_key IS NOT NULL;
CREATE INDEX message_events_by_run ON message_events (tenant_id, run_id, kind, customer_id);
CREATE INDEX message_events_by_customer ON message_events (tenant_id, customer_id, occurred_at);

-- Customer events from the tenant's systems, idempotent by the tenant's own event id. A
-- conversion is attributed at ingestion to the customer's last ledger row (a message sent, or
-- held out) within the tenant's attribution window: run, channel and variant.
CREATE TABLE customer_events (
    tenant_id   text NOT NULL,
    event_id    text NOT NULL,
    customer_id bigint NOT NULL,
    type        text NOT NULL,
    occurred_at timestamptz NOT NULL,
    amount      numeric(14, 2),
    currency    text,
    sku         text,
    category    text,
    properties  jsonb NOT NULL DEFAULT '{}'::jsonb,
    run_id      uuid,
    channel     text,
    variant     text,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, event_id)
);
CREATE INDEX customer_events_by_run ON customer_events (tenant_id, run_id, type) WHERE run_id IS NOT NULL;
CREATE INDEX customer_events_by_customer ON customer_events (tenant_id, customer_id, occurred_at);

-- Attribution looks for a customer's latest ledger row.
CREATE INDEX deliveries_by_customer ON deliveries (tenant_id, customer_id, created_at);

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['run_links', 'message_events', 'customer_events'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format($p$CREATE POLICY tenant_isolation ON %I
                          USING (tenant_id = current_setting('pennant.tenant_id', true))
                          WITH CHECK (tenant_id = current_setting('pennant.tenant_id', true))$p$, t);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO pennant_tenant', t);
    END LOOP;
END $$;
