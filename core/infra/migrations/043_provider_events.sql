-- Provider events name a message by the provider's own id (an SMS sid, a push message id, an
-- email's Message-ID) when they do not echo Pennant's idempotency key: find its ledger row fast.
CREATE INDEX deliveries_by_provider_message ON deliveries (provider_message_id, channel)
    WHERE provider_message_id IS NOT NULL;
