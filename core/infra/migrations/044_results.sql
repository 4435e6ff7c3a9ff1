-- Results and the ledger's per-message events read message_events by message, in (run,
-- customer) order: this index lets results meet the ledger's primary key in a merge join, and
-- covers kind, machine flag and time so neither reads the table itself.
CREATE INDEX message_events_by_message ON message_events (tenant_id, run_id, customer_id, channel)
    INCLUDE (kind, machine, occurred_at);
-- Results count each recipient's attributed conversions and revenue in the same order.
CREATE INDEX customer_events_by_recipient ON customer_events (tenant_id, run_id, customer_id)
    INCLUDE (type, amount) WHERE run_id IS NOT NULL;
