-- Frequency caps count a customer's recent sends from the ledger.
CREATE INDEX deliveries_recent_by_customer ON deliveries (tenant_id, customer_id, created_at)
    WHERE status = 'sent';
