-- Core bookkeeping every stage shares: the audit table of runs.
CREATE TABLE runs (
    run_id      VARCHAR PRIMARY KEY,
    command     VARCHAR NOT NULL,
    started_at  TIMESTAMP NOT NULL,
    finished_at TIMESTAMP,
    status      VARCHAR NOT NULL DEFAULT 'running',  -- running | ok | failed | interrupted
    summary     JSON
);
