-- Retention (retention.py): the per-series horizon before which records are no longer wanted.
-- The quota horizon is recorded when max_bytes removes a series' oldest records, so that the
-- next night's diff does not want them back as 'missing' (the keep horizon follows from the
-- config and the clock, and is recorded here only for reports). It only moves forward while
-- the series has a max_bytes; dropping max_bytes from the entry clears it.
CREATE TABLE retention_horizons (
    series       VARCHAR PRIMARY KEY,
    quota_before TIMESTAMP,           -- UTC: records whose time prime key is earlier went for the quota
    keep_before  TIMESTAMP,           -- UTC: now - keep at the last retention run (information)
    run_id       VARCHAR,             -- the run that last moved it
    updated_at   TIMESTAMP NOT NULL   -- UTC
);
