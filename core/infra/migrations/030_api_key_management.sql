-- Key management: a public id to name a key by, a display prefix (never the secret), when it was
-- last used (refreshed at most once a minute) and when it was revoked (refused from then on).
ALTER TABLE api_keys
    ADD COLUMN id           uuid NOT NULL DEFAULT gen_random_uuid(),
    ADD COLUMN prefix       text NOT NULL DEFAULT '',
    ADD COLUMN last_used_at timestamptz,
    ADD COLUMN revoked_at   timestamptz;
ALTER TABLE api_keys ADD CONSTRAINT api_keys_id_unique UNIQUE (id);
CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id, created_at);
