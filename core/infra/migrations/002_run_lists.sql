-- Run lists and ledger pages: keyset pagination, newest run first.
CREATE INDEX runs_newest_first ON runs (tenant_id, created_at DESC, id DESC);
CREATE INDEX runs_by_status ON runs (tenant_id, status, created_at DESC, id DESC);
