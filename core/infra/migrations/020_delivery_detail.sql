-- Why a message failed when the reason alone cannot say (a render error names its template part
-- and the limit or the missing variable).
ALTER TABLE deliveries ADD COLUMN IF NOT EXISTS detail text;
