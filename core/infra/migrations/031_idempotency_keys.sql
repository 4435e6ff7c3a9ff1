-- Idempotency-Key: the first response to a creating POST, replayed to retries with the same key.
-- Keys are scoped per API key (api_key_id); tenant_id is that key's tenant (under row-level
-- security like every tenant table) or '*' for admin keys (not a valid slug).
CREATE TABLE idempotency_keys (
    tenant_id    text NOT NULL,
    api_key_id   uuid NOT NULL,
    key          text NOT NULL,
    fingerprint  text NOT NULL,          -- sha256 of method, path, query and (normalised) body
    status       integer,                -- NULL while the first request is still in progress
    content_type text,
    body         bytea,                  -- sealed with the caller's API key (see api/idempotency.py)
    nonce        bytea,
    locked_until timestamptz NOT NULL,   -- an in-progress claim older than this was abandoned
    expires_at   timestamptz NOT NULL,   -- after this the key may be used afresh
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, api_key_id, key)
);
CREATE INDEX idempotency_keys_by_expiry ON idempotency_keys (expires_at);

ALTER TABLE idempotency_keys ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON idempotency_keys
    USING (tenant_id = current_setting('pennant.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('pennant.tenant_id', true));
GRANT SELECT, INSERT, UPDATE, DELETE ON idempotency_keys TO pennant_tenant;
