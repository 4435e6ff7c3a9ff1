-- Pennant schema, first cut. Every tenant-owned table carries tenant_id and is guarded by a
-- row-level-security policy keyed on the transaction setting `pennant.tenant_id`; tenant code
-- runs as the role pennant_tenant (see core/infra/db.py tenant_tx), which sees nothing without it.

DO $$ BEGIN
    CREATE ROLE pennant_tenant NOLOGIN;
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;

-- A non-superuser application login must be able to SET ROLE pennant_tenant.
DO $$ BEGIN
    EXECUTE format('GRANT pennant_tenant TO %I', current_user);
EXCEPTION WHEN OTHERS THEN NULL;
END $$;

CREATE TABLE tenants (
    slug            text PRIMARY KEY CHECK (slug ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    display_name    text NOT NULL,
    current_version integer,
    created_at      timestamptz NOT NULL DEFAULT now(),
    removed_at      timestamptz
);

CREATE TABLE tenant_config_versions (
    tenant_id  text NOT NULL REFERENCES tenants (slug),
    version    integer NOT NULL CHECK (version > 0),
    config     jsonb NOT NULL,
    checksum   text NOT NULL,
    author     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, version)
);

-- Config versions are immutable: a change is a new version, never an edit.
CREATE FUNCTION pennant_forbid_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END $$;
CREATE TRIGGER tenant_config_versions_immutable
    BEFORE UPDATE OR DELETE ON tenant_config_versions
    FOR EACH ROW EXECUTE FUNCTION pennant_forbid_change();

CREATE TABLE api_keys (
    key_hash   text PRIMARY KEY,          -- sha256 hex of the key; the key itself is never stored
    tenant_id  text REFERENCES tenants (slug),  -- NULL: an admin key
    label      text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE customers (
    tenant_id     text NOT NULL REFERENCES tenants (slug),
    id            bigint NOT NULL,
    external_id   text NOT NULL,
    email         text,
    phone         text,
    push_token    text,
    first_name    text NOT NULL DEFAULT '',
    last_name     text NOT NULL DEFAULT '',
    locale        text NOT NULL DEFAULT 'en-US',
    time_zone     text NOT NULL DEFAULT 'UTC',
    loyalty_tier  text NOT NULL DEFAULT 'none',
    city          text,
    country       text,
    birth_date    date,
    consent_email boolean NOT NULL DEFAULT false,
    consent_sms   boolean NOT NULL DEFAULT false,
    consent_push  boolean NOT NULL DEFAULT false,
    attributes    jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, external_id)
);

CREATE TABLE purchases (
    tenant_id    text NOT NULL,
    id           bigint NOT NULL,
    customer_id  bigint NOT NULL,
    sku          text NOT NULL,
    product_name text NOT NULL,
    category     text NOT NULL,
    amount       numeric(12, 2) NOT NULL,
    purchased_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, customer_id) REFERENCES customers (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX purchases_by_customer ON purchases (tenant_id, customer_id, purchased_at);

CREATE TABLE campaigns (
    tenant_id  text NOT NULL REFERENCES tenants (slug),
    id         uuid NOT NULL,
    name       text NOT NULL,
    definition jsonb NOT NULL,             -- segment, channels, variants, schedule (api schema)
    status     text NOT NULL DEFAULT 'active',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE runs (
    tenant_id      text NOT NULL REFERENCES tenants (slug),
    id             uuid NOT NULL,
    campaign_id    uuid NOT NULL,
    workflow_id    text NOT NULL UNIQUE,
    status         text NOT NULL DEFAULT 'scheduled'
                   CHECK (status IN ('scheduled', 'running', 'paused', 'completed', 'cancelled', 'failed')),
    config_version integer,
    planned        integer,
    send_at        timestamptz,
    error          text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    started_at     timestamptz,
    finished_at    timestamptz,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, campaign_id) REFERENCES campaigns (tenant_id, id)
);
CREATE INDEX runs_by_campaign ON runs (tenant_id, campaign_id, created_at);

-- The audience frozen at plan time: counts stay stable while customers change.
CREATE TABLE run_recipients (
    tenant_id   text NOT NULL,
    run_id      uuid NOT NULL,
    customer_id bigint NOT NULL,
    PRIMARY KEY (tenant_id, run_id, customer_id)
);

-- The ledger: one row per (tenant, run, recipient, channel); the key makes duplicates impossible.
CREATE TABLE deliveries (
    tenant_id           text NOT NULL,
    run_id              uuid NOT NULL,
    customer_id         bigint NOT NULL,
    channel             text NOT NULL,
    variant             text,
    status              text NOT NULL CHECK (status IN ('sent', 'failed', 'skipped')),
    reason              text,
    address             text,
    idempotency_key     text NOT NULL,
    provider_message_id text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, run_id, customer_id, channel)
);

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['tenant_config_versions', 'customers', 'purchases', 'campaigns',
                             'runs', 'run_recipients', 'deliveries'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format($p$CREATE POLICY tenant_isolation ON %I
                          USING (tenant_id = current_setting('pennant.tenant_id', true))
                          WITH CHECK (tenant_id = current_setting('pennant.tenant_id', true))$p$, t);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO pennant_tenant', t);
    END LOOP;
END $$;
GRANT SELECT ON tenants TO pennant_tenant;
