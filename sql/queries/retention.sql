-- Retention (retention.py). For one series at a time retention.py defines the temp view
-- retention_times (record_key, t: the record's time prime key as UTC TIMESTAMP, from its
-- keyword table, gone rows included) and registers retention_planned (path) with the files
-- already chosen; only 'layout' files are ever candidates.

-- name: retention_horizon_get
SELECT quota_before, keep_before FROM retention_horizons WHERE series = $series;

-- name: retention_horizon_put
INSERT OR REPLACE INTO retention_horizons (series, quota_before, keep_before, run_id, updated_at)
VALUES ($series, $quota_before, $keep_before, $run_id, (now() AT TIME ZONE 'UTC'));

-- name: retention_series_totals
-- Layout files (zero-byte ones too) and their bytes per series: what the guard and quotas count.
SELECT series, count(*) AS files, coalesce(sum(size), 0) AS bytes
FROM local_files WHERE state IN ('layout', 'empty') AND series IS NOT NULL GROUP BY series;

-- name: retention_keep_files
-- The series' files of records older than the keep horizon.
SELECT f.path, coalesce(f.size, 0), f.record_key, f.segment, t.t
FROM local_files AS f JOIN retention_times AS t ON t.record_key = f.record_key
WHERE f.series = $series AND f.state = 'layout' AND t.t < $before
ORDER BY t.t, f.path;

-- name: retention_quota_totals
-- What is left of the series once the planned files are gone: all bytes, bytes of files
-- without a record time (they cannot be ordered: the quota never takes them), newest time.
WITH f AS (SELECT coalesce(l.size, 0) AS size, t.t
           FROM local_files AS l LEFT JOIN retention_times AS t ON t.record_key = l.record_key
           WHERE l.series = $series AND l.state IN ('layout', 'empty')
             AND l.path NOT IN (SELECT path FROM retention_planned))
SELECT coalesce(sum(size), 0), coalesce(sum(size) FILTER (WHERE t IS NULL), 0), max(t) FROM f;

-- name: retention_quota_cut
-- The earliest record time from which the series' files, newest first, fit in $budget bytes:
-- records at one time go or stay together, so the cut is a horizon the diff can keep to.
WITH f AS (SELECT coalesce(l.size, 0) AS size, t.t
           FROM local_files AS l JOIN retention_times AS t ON t.record_key = l.record_key
           WHERE l.series = $series AND l.state IN ('layout', 'empty')
             AND l.path NOT IN (SELECT path FROM retention_planned)),
     g AS (SELECT t, sum(size) AS bytes FROM f GROUP BY t),
     c AS (SELECT t, sum(bytes) OVER (ORDER BY t DESC ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS newer
           FROM g)
SELECT min(t) FROM c WHERE newer <= $budget;

-- name: retention_quota_files
-- The series' files of records older than the quota cut, oldest first.
SELECT f.path, coalesce(f.size, 0), f.record_key, f.segment, t.t
FROM local_files AS f JOIN retention_times AS t ON t.record_key = f.record_key
WHERE f.series = $series AND f.state = 'layout' AND t.t < $before
  AND f.path NOT IN (SELECT path FROM retention_planned)
ORDER BY t.t, f.path;

-- name: retention_layout_only
-- The planned paths that the inventory still holds as layout files of the same record and
-- segment: anything else (a file rescanned as unknown, a path of another series) is never touched.
SELECT p.path FROM retention_planned AS p
JOIN local_files AS f ON f.path = p.path AND f.state = 'layout'
 AND f.series = p.series AND f.record_key = p.record_key AND f.segment = p.segment;

-- name: retention_incomplete_syncs
-- Series whose last sync did not finish: their catalog may lack records, so their orphans stay.
SELECT series FROM sync_state WHERE NOT complete;

-- name: retention_forget_files
-- The inventory forgets removed files in the step that removes them.
DELETE FROM local_files WHERE path IN (SELECT path FROM retention_removed);

-- name: retention_forget_checks
DELETE FROM file_checks WHERE path IN (SELECT path FROM retention_removed);
