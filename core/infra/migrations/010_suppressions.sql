-- Per-tenant suppression list: addresses that must never receive a channel's messages
-- (unsubscribes, complaints, hard bounces, manual blocks). Checked at send time.
CREATE TABLE suppressions (
    tenant_id  text NOT NULL REFERENCES tenants (slug),
    channel    text NOT NULL CHECK (channel IN ('email', 'sms', 'push', 'webhook')),
    address    text NOT NULL,            -- normalised: lower-case email, E.164 phone, token
    reason     text NOT NULL DEFAULT 'manual',
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, channel, address)
);

ALTER TABLE suppressions ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON suppressions
    USING (tenant_id = current_setting('pennant.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('pennant.tenant_id', true));
GRANT SELECT, INSERT, UPDATE, DELETE ON suppressions TO pennant_tenant;
