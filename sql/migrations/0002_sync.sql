-- Sync bookkeeping: series definitions as JSOC gave them, and the sync state of each series.
-- Keyword tables themselves (kw_<slug>) are created per series by catalog.ensure_keyword_table,
-- because their columns come from each series' definition.

-- One row per series: its series_struct (without the volatile Interval/runtime/status),
-- refreshed when JSOC's definition changes (struct_hash), plus the last Interval seen.
CREATE TABLE series_defs (
    series      VARCHAR PRIMARY KEY,  -- canonical name as JSOC spells it (hmi.M_720s)
    slug        VARCHAR NOT NULL,     -- hmi_m_720s: the view name; the table is kw_<slug>
    struct      JSON NOT NULL,
    struct_hash VARCHAR NOT NULL,
    interval    JSON,                 -- series_struct Interval at the last probe
    fetched_at  TIMESTAMP NOT NULL,   -- UTC
    changed_at  TIMESTAMP NOT NULL    -- UTC: when struct_hash last changed
);

-- One row per mirrored series and window (the configured selection).
-- Slot indices are those of the series' slotted time prime key (T_REC_index).
CREATE TABLE sync_state (
    series          VARCHAR PRIMARY KEY,
    selection       JSON NOT NULL,    -- the config selection this state belongs to
    lo_index        BIGINT,           -- first slot of the window
    watermark_index BIGINT,           -- slots [lo_index, watermark_index) are synced
    watermark_time  TIMESTAMP,        -- UTC time of slot watermark_index - 1
    complete        BOOLEAN NOT NULL DEFAULT false,  -- the last run finished every phase
    first_recnum    BIGINT,           -- probe values (series_struct Interval) at the last complete run
    last_recnum     BIGINT,
    max_recnum      BIGINT,
    last_record     VARCHAR,
    records         BIGINT,           -- records in the window at the last complete run
    run_id          VARCHAR,
    updated_at      TIMESTAMP NOT NULL  -- UTC
);
