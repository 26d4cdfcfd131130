-- The coverage report (report.py): what it reads besides the diff's per-day counts.

-- name: report_runs
-- The newest runs first, with their JSON summary (NULL while a run is going or if it died).
SELECT run_id, command, started_at, finished_at, status, summary
FROM runs ORDER BY started_at DESC, run_id LIMIT $limit;

-- name: report_run_totals
SELECT count(*) AS runs, count(*) FILTER (WHERE status NOT IN ('ok', 'running')) AS not_ok FROM runs;

-- name: report_sync_states
-- Per series: how far it is synced (UTC time of its newest synced slot), and when it last was.
SELECT series, watermark_time, updated_at FROM sync_state;
