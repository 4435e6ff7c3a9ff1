-- Which provider account a message went through: the platform's ('platform', the operator's
-- providers and relay) or the tenant's own ('tenant': a channel endpoint the tenant set). Events
-- signed with the platform's provider-events key match only 'platform' messages, so an endpoint a
-- tenant controls (which picks its own message ids) cannot steer an event onto any message.
ALTER TABLE deliveries ADD COLUMN provider_account text NOT NULL DEFAULT 'platform'
    CHECK (provider_account IN ('platform', 'tenant'));

CREATE OR REPLACE FUNCTION pennant_messages_by_key(channel text, idx int[], tenants text[], run_ids uuid[], customer_ids bigint[])
    RETURNS TABLE (i int, tenant_id text, run_id uuid, customer_id bigint, address text)
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
#variable_conflict use_column
BEGIN
    PERFORM pennant_platform_only();
    RETURN QUERY
        SELECT k.i, d.tenant_id, d.run_id, d.customer_id, d.address
        FROM unnest(idx, tenants, run_ids, customer_ids) AS k(i, tenant_id, run_id, customer_id)
        JOIN deliveries d ON d.tenant_id = k.tenant_id AND d.run_id = k.run_id
                         AND d.customer_id = k.customer_id AND d.channel = pennant_messages_by_key.channel
        WHERE d.status = 'sent' AND d.provider_account = 'platform';
END $$;

CREATE OR REPLACE FUNCTION pennant_messages_by_provider_id(channel text, ids text[])
    RETURNS TABLE (tenant_id text, run_id uuid, customer_id bigint, address text, provider_message_id text)
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
#variable_conflict use_column
BEGIN
    PERFORM pennant_platform_only();
    RETURN QUERY
        SELECT d.tenant_id, d.run_id, d.customer_id, d.address, d.provider_message_id FROM deliveries d
        WHERE d.provider_message_id = ANY(ids) AND d.channel = pennant_messages_by_provider_id.channel
          AND d.status = 'sent' AND d.provider_account = 'platform';
END $$;
