-- A run's experiment (issue 13, winner selection): what the run tested and how it was decided.
-- winner mode: decide_at (the durable timer's target, moved by an extension) and the decision
-- with its statistics; adaptive mode: the weights this run split its traffic by and the earlier
-- runs' results they were drawn from. One row per run that has an experiment.
CREATE TABLE run_experiments (
    tenant_id   text NOT NULL,
    run_id      uuid NOT NULL,
    campaign_id uuid NOT NULL,
    mode        text NOT NULL CHECK (mode IN ('winner', 'adaptive')),
    metric      text NOT NULL,
    test_percent double precision,
    decide_at   timestamptz,
    weights     jsonb,
    prior       jsonb,
    decision    jsonb,
    decided_at  timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, run_id),
    FOREIGN KEY (tenant_id, run_id) REFERENCES runs (tenant_id, id) ON DELETE CASCADE
);

ALTER TABLE run_experiments ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON run_experiments
    USING (tenant_id = current_setting('pennant.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('pennant.tenant_id', true));
GRANT SELECT, INSERT, UPDATE, DELETE ON run_experiments TO pennant_tenant;
