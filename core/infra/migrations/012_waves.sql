-- Local-time waves and quiet hours: each frozen recipient may carry the instant before
-- which it must not be sent (NULL: at once). Batches are cut per wave.
ALTER TABLE run_recipients ADD COLUMN send_after timestamptz;
CREATE INDEX run_recipients_by_wave ON run_recipients (tenant_id, run_id, send_after, customer_id);
