-- name: run_start
INSERT INTO runs (run_id, command, started_at) VALUES ($run_id, $command, (now() AT TIME ZONE 'UTC'));

-- name: run_finish
UPDATE runs SET finished_at = (now() AT TIME ZONE 'UTC'), status = $status, summary = $summary WHERE run_id = $run_id;
