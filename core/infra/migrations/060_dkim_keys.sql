-- DKIM keys per tenant and sending domain (issue 29). The private key lives in the tenant's secret
-- store (secret_name); this table holds what is public: the selector, the key's DNS value and its
-- state. A rotation keeps two selectors live: 'next' is published before it signs, 'active' signs,
-- 'retiring' stays published after it stopped signing, so mail in flight still verifies.
CREATE TABLE dkim_keys (
    tenant_id   text NOT NULL,
    domain      text NOT NULL,
    selector    text NOT NULL,
    state       text NOT NULL CHECK (state IN ('next', 'active', 'retiring')),
    algorithm   text NOT NULL DEFAULT 'rsa' CHECK (algorithm IN ('rsa', 'ed25519')),
    public_key  text NOT NULL,             -- the p= value: base64 of the DER SubjectPublicKeyInfo
    secret_name text NOT NULL,             -- the private key, in tenant_secrets
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, domain, selector)
);
-- One signing key and at most one waiting key per domain: concurrent first sends agree on one.
CREATE UNIQUE INDEX dkim_keys_one_active ON dkim_keys (tenant_id, domain) WHERE state = 'active';
CREATE UNIQUE INDEX dkim_keys_one_next ON dkim_keys (tenant_id, domain) WHERE state = 'next';

ALTER TABLE dkim_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE dkim_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON dkim_keys
    USING (tenant_id = (SELECT pennant_tenant()))
    WITH CHECK (tenant_id = (SELECT pennant_tenant()));
GRANT SELECT, INSERT, UPDATE, DELETE ON dkim_keys TO pennant_tenant;

-- What DNS publishes for a domain, across tenants (the dev/test loopback DNS server reads it as the
-- application role): public keys only, which are public by design.
CREATE FUNCTION pennant_dkim_public_keys(name text)
    RETURNS TABLE (selector text, algorithm text, public_key text)
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
#variable_conflict use_column
BEGIN
    PERFORM pennant_platform_only();
    RETURN QUERY
        SELECT k.selector, k.algorithm, k.public_key FROM dkim_keys k
        WHERE k.domain = lower(pennant_dkim_public_keys.name) ORDER BY k.created_at, k.selector;
END $$;
REVOKE ALL ON FUNCTION pennant_dkim_public_keys(text) FROM PUBLIC;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pennant_app') THEN
        GRANT EXECUTE ON FUNCTION pennant_dkim_public_keys(text) TO pennant_app;
    END IF;
END $$;
