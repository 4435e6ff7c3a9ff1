-- Who changed what on a tenant's boundary: secrets, endpoints and credentials in its config, API
-- keys, removal and restore. Never a value: a secret's name, a config path, a key's id.
-- Rows are only ever added (no UPDATE or DELETE grant).
CREATE TABLE audit_log (
    tenant_id text NOT NULL,
    id        bigint GENERATED ALWAYS AS IDENTITY,
    at        timestamptz NOT NULL DEFAULT now(),
    actor     text NOT NULL,       -- 'admin key <id>' or 'tenant key <id>'
    action    text NOT NULL,       -- e.g. secret.set, config.save, key.issue
    target    text NOT NULL DEFAULT '',
    detail    jsonb NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX audit_log_recent ON audit_log (tenant_id, at DESC);

ALTER TABLE audit_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_log FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_log
    USING (tenant_id = (SELECT pennant_tenant()))
    WITH CHECK (tenant_id = (SELECT pennant_tenant()));
GRANT SELECT, INSERT ON audit_log TO pennant_tenant;
