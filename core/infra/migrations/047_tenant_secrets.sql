-- Each tenant's secrets (provider credentials, its LLM key, its webhook signing secret), which
-- its config names as `secret:NAME`. Only ciphertext is stored: AES-256-GCM under the platform
-- keyring key `key_id`, with the associated data binding (tenant, name, key id), so a row copied
-- to another tenant or name does not decrypt (core/security/secrets.py).
-- No foreign key to tenants: `make run` stores the demo tenants' secrets before their first
-- config version exists.
CREATE TABLE tenant_secrets (
    tenant_id   text NOT NULL,
    name        text NOT NULL CHECK (name ~ '^[A-Za-z][A-Za-z0-9_]{0,63}$'),
    key_id      text NOT NULL,
    nonce       bytea NOT NULL,
    ciphertext  bytea NOT NULL,
    -- HMAC of the value under a platform key: shows a change, reveals nothing.
    fingerprint text NOT NULL,
    -- 'tenant': set by the tenant; 'generated': made by the platform and shown once.
    origin      text NOT NULL DEFAULT 'tenant' CHECK (origin IN ('tenant', 'generated')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);

ALTER TABLE tenant_secrets ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenant_secrets
    USING (tenant_id = current_setting('pennant.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('pennant.tenant_id', true));
GRANT SELECT, INSERT, UPDATE, DELETE ON tenant_secrets TO pennant_tenant;
