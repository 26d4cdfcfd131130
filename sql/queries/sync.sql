-- name: series_def_get
SELECT series, struct, struct_hash, interval FROM series_defs WHERE lower(series) = lower($series);

-- name: series_def_put
INSERT OR REPLACE INTO series_defs (series, slug, struct, struct_hash, interval, fetched_at, changed_at)
VALUES ($series, $slug, $struct, $struct_hash, $interval, (now() AT TIME ZONE 'UTC'),
        coalesce((SELECT CASE WHEN d.struct_hash = $struct_hash THEN d.changed_at END
                  FROM series_defs d WHERE d.series = $series), (now() AT TIME ZONE 'UTC')));

-- name: series_def_list
SELECT series, slug, struct_hash, fetched_at, changed_at FROM series_defs ORDER BY lower(series);

-- name: sync_state_get
SELECT series, selection, lo_index, watermark_index, watermark_time, complete, first_recnum,
       last_recnum, max_recnum, last_record, records, run_id, updated_at
FROM sync_state WHERE lower(series) = lower($series);

-- name: sync_state_reset
-- A new selection starts from its first slot, incomplete, with the probe seen now as its baseline:
-- one statement, so a crash can never leave a "complete" state over rows that were never fetched.
INSERT OR REPLACE INTO sync_state (series, selection, lo_index, watermark_index, complete,
                                   first_recnum, last_recnum, max_recnum, last_record, run_id, updated_at)
VALUES ($series, $selection, $lo_index, $lo_index, false,
        $first_recnum, $last_recnum, $max_recnum, $last_record, $run_id, (now() AT TIME ZONE 'UTC'));

-- name: sync_state_advance
UPDATE sync_state
SET watermark_time = CASE WHEN $watermark_index >= coalesce(watermark_index, $watermark_index)
                          THEN $watermark_time ELSE watermark_time END,
    watermark_index = greatest(coalesce(watermark_index, $watermark_index), $watermark_index),
    run_id = $run_id, updated_at = (now() AT TIME ZONE 'UTC')
WHERE series = $series;

-- name: sync_state_begin
UPDATE sync_state SET complete = false, run_id = $run_id, updated_at = (now() AT TIME ZONE 'UTC')
WHERE series = $series;

-- name: sync_state_finish
UPDATE sync_state
SET complete = true, first_recnum = $first_recnum, last_recnum = $last_recnum, max_recnum = $max_recnum,
    last_record = $last_record, records = $records, run_id = $run_id, updated_at = (now() AT TIME ZONE 'UTC')
WHERE series = $series;

-- name: sync_state_list
SELECT s.series, s.watermark_time, s.complete, s.records, s.updated_at
FROM sync_state s ORDER BY lower(s.series);

-- name: sync_state_delete
DELETE FROM sync_state WHERE lower(series) = lower($series);
