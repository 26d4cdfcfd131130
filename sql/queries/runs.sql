-- name: run_start
INSERT INTO runs (run_id, command, started_at) VALUES ($run_id, $command, (now() AT TIME ZONE 'UTC'));

-- name: run_finish
UPDATE runs SET finished_at = (now() AT TIME ZONE 'UTC'), status = $status, summary = $summary WHERE run_id = $run_id;

-- name: runs_mark_died
-- Called by a run that holds the mirror's lock, before its own run_start: no other process can
-- be running, so a row still 'running' that this process did not start ($live) belongs to a run
-- that was killed (SIGKILL, power loss). finished_at stays NULL: when it died is not known.
UPDATE runs SET status = 'died'
WHERE status = 'running' AND finished_at IS NULL AND run_id NOT IN (SELECT unnest($live::VARCHAR[]))
RETURNING run_id, command, started_at;
