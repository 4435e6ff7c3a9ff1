-- Token buckets shared by every API process (core/infra/rate_limits.py): failed
-- authentications per client address, per-tenant limits on costly writes, events per second.
-- UNLOGGED: a bucket is a rate, not a record; after a crash every bucket starts full, which is
-- the state it would reach within one window anyway, and no write pays for the WAL.
CREATE UNLOGGED TABLE rate_buckets (
    key     text PRIMARY KEY,
    tokens  double precision NOT NULL,
    at      timestamptz NOT NULL
);

-- One call is one statement and one row lock: refill the bucket for the time since its last
-- use (up to `burst`), then take `cost` if at least `need` tokens are there, or always when
-- `force` (a debt to be repaid by refilling, e.g. events counted once their body is parsed).
-- Returns 0 when taken without force, else the seconds until `need` tokens will be there. With
-- force it answers after taking: 0 while the bucket could pay `cost` once more, else the seconds
-- until it holds `need` again, so a caller counting failures learns at once how long to block. The application role
-- may only call this; it cannot read or change the table (another tenant's counts included).
CREATE FUNCTION pennant_take_tokens(
    bucket text, rate double precision, burst double precision, cost double precision,
    need double precision, force boolean
) RETURNS double precision
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    now_at timestamptz := clock_timestamp();
    have double precision;
BEGIN
    IF rate <= 0 OR burst <= 0 OR cost < 0 OR need < 0 THEN
        RAISE EXCEPTION 'pennant_take_tokens: rate and burst must be positive, cost and need not negative'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO rate_buckets AS b (key, tokens, at) VALUES (bucket, burst, now_at)
    ON CONFLICT (key) DO UPDATE
        SET tokens = least(burst, b.tokens + rate * greatest(0, extract(epoch FROM now_at - b.at))), at = now_at
    RETURNING tokens INTO have;
    -- Now and then, forget buckets idle for a day (full again long since).
    IF random() < 0.001 THEN
        DELETE FROM rate_buckets WHERE at < now_at - interval '1 day';
    END IF;
    IF force OR have >= need THEN
        UPDATE rate_buckets SET tokens = have - cost WHERE key = bucket;
        IF force AND have - cost < greatest(cost, 1e-9) THEN
            RETURN greatest(0, (need - (have - cost)) / rate);
        END IF;
        RETURN 0;
    END IF;
    RETURN (need - have) / rate;
END $$;
REVOKE ALL ON rate_buckets FROM PUBLIC;
REVOKE ALL ON FUNCTION pennant_take_tokens(text, double precision, double precision, double precision, double precision, boolean) FROM PUBLIC;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pennant_app') THEN
        GRANT EXECUTE ON FUNCTION pennant_take_tokens(text, double precision, double precision, double precision, double precision, boolean) TO pennant_app;
    END IF;
END $$;
