-- Console sessions, recorded server-side: the cookie names a row here (and is signed), so signing
-- out, or revoking the key that signed in, ends the session everywhere; a copied cookie is dead
-- once its row is revoked. Only ids and times are stored: no key, no token.

-- Sessions opened with a tenant's key: a tenant table under row-level security, read and written
-- inside tenant_tx like every other tenant table.
CREATE TABLE console_sessions (
    tenant_id  text NOT NULL,
    id         uuid NOT NULL,
    key_id     uuid NOT NULL,                -- api_keys.id of the key that signed in
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz,                  -- signed out (or ended by an admin)
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX console_sessions_by_key ON console_sessions (tenant_id, key_id) WHERE revoked_at IS NULL;

ALTER TABLE console_sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE console_sessions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON console_sessions
    USING (tenant_id = current_setting('pennant.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('pennant.tenant_id', true));
GRANT SELECT, INSERT, UPDATE, DELETE ON console_sessions TO pennant_tenant;

-- Sessions opened with an admin key (no tenant): a platform table, beside the admin keys in
-- api_keys, never reachable inside a tenant transaction (pennant_tenant has no grant on it).
CREATE TABLE console_admin_sessions (
    id         uuid PRIMARY KEY,
    key_id     uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz
);
CREATE INDEX console_admin_sessions_by_key ON console_admin_sessions (key_id) WHERE revoked_at IS NULL;

-- The application's login role, where one exists (migrations 048/049 create it): it reads and
-- writes admin sessions outside any tenant transaction.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pennant_app') THEN
        GRANT SELECT, INSERT, UPDATE ON console_admin_sessions TO pennant_app;
    END IF;
END $$;
