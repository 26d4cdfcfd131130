-- The export governor's journal: every export request is written here BEFORE it is submitted to
-- JSOC and updated as it moves, so a restarted run resumes pending request ids (drms
-- export_from_id) instead of asking JSOC again. Times are UTC in TIMESTAMP columns.
CREATE SEQUENCE export_requests_id_seq START 1;
CREATE TABLE export_requests (
    id           BIGINT PRIMARY KEY DEFAULT nextval('export_requests_id_seq'),
    run_id       VARCHAR,             -- the run that planned it (runs.run_id)
    series       VARCHAR NOT NULL,
    query        VARCHAR NOT NULL,    -- the record-set string sent as ds=
    method       VARCHAR NOT NULL,    -- url_quick | url | url-tar
    protocol     VARCHAR NOT NULL,    -- as-is | fits
    email        VARCHAR,             -- notify= (one pending export per email)
    n_records    INTEGER NOT NULL,    -- gap records the query covers
    est_bytes    BIGINT,
    -- planned: written, not yet sent | submitting: sent, reply not yet recorded |
    -- pending: JSOC has it (requestid known) | done: files listed | downloaded: all files landed |
    -- failed | expired (JSOC status 5) | split (status 3: replaced by smaller children)
    status       VARCHAR NOT NULL DEFAULT 'planned',
    jsoc_status  INTEGER,             -- JSOC's last status code
    requestid    VARCHAR,             -- JSOC_YYYYMMDD_NNN ('' for url_quick answered at once)
    error        VARCHAR,
    attempts     INTEGER NOT NULL DEFAULT 0,  -- submissions (status 7 retries included)
    parent_id    BIGINT,              -- the request this one was split from
    record_keys  JSON,                -- the gap record keys, to check what came back
    segments     JSON,
    result       JSON,                -- exp_status index (dir, data, tarfile) once done
    created_at   TIMESTAMP NOT NULL,
    submitted_at TIMESTAMP,
    updated_at   TIMESTAMP NOT NULL,
    finished_at  TIMESTAMP,
    expires_at   TIMESTAMP            -- JSOC keeps results at least 7 days
);
