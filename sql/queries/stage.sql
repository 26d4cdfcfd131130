-- name: export_insert
INSERT INTO export_requests (run_id, series, query, method, protocol, email, n_records, est_bytes, status,
                             parent_id, record_keys, segments, created_at, updated_at)
VALUES ($run_id, $series, $query, $method, $protocol, $email, $n_records, $est_bytes, 'planned',
        $parent_id, $record_keys, $segments, (now() AT TIME ZONE 'UTC'), (now() AT TIME ZONE 'UTC'))
RETURNING id;

-- name: export_mark_submitting
UPDATE export_requests
SET status = 'submitting', attempts = attempts + 1,
    submitted_at = coalesce(submitted_at, (now() AT TIME ZONE 'UTC')), updated_at = (now() AT TIME ZONE 'UTC')
WHERE id = $id;

-- name: export_update
UPDATE export_requests
SET status = $status, jsoc_status = $jsoc_status, requestid = coalesce($requestid, requestid),
    error = $error, updated_at = (now() AT TIME ZONE 'UTC'),
    finished_at = CASE WHEN $status IN ('done', 'failed', 'expired', 'split', 'downloaded', 'refused',
                                        'abandoned', 'discarded')
                       THEN coalesce(finished_at, (now() AT TIME ZONE 'UTC')) ELSE finished_at END,
    expires_at = CASE WHEN $status = 'done' AND expires_at IS NULL
                      THEN (now() AT TIME ZONE 'UTC') + INTERVAL 7 DAY ELSE expires_at END
WHERE id = $id;

-- name: export_set_result
UPDATE export_requests
SET status = 'done', jsoc_status = 0, result = $result, error = NULL, updated_at = (now() AT TIME ZONE 'UTC'),
    finished_at = coalesce(finished_at, (now() AT TIME ZONE 'UTC')),
    expires_at = coalesce(expires_at, (now() AT TIME ZONE 'UTC') + INTERVAL 7 DAY)
WHERE id = $id;

-- name: export_get
SELECT id, run_id, series, query, method, protocol, email, n_records, est_bytes, status, jsoc_status, requestid,
       error, attempts, parent_id, record_keys, segments, result, created_at, submitted_at, updated_at,
       finished_at, expires_at, file_failures
FROM export_requests WHERE id = $id;

-- name: export_count_file_failure
UPDATE export_requests
SET file_failures = coalesce(file_failures, 0) + 1, updated_at = (now() AT TIME ZONE 'UTC')
WHERE id = $id;

-- name: export_unfinished
-- Requests a crashed or interrupted run left behind: resume these before asking JSOC anything new.
SELECT id, run_id, series, query, method, protocol, email, n_records, est_bytes, status, jsoc_status, requestid,
       error, attempts, parent_id, record_keys, segments, result, created_at, submitted_at, updated_at,
       finished_at, expires_at, file_failures
FROM export_requests
WHERE status IN ('planned', 'submitting', 'pending', 'done')
ORDER BY id;

-- name: export_pending_for_email
SELECT count(*) FROM export_requests WHERE status IN ('submitting', 'pending') AND email IS NOT DISTINCT FROM $email;

-- name: export_list
SELECT id, series, query, method, protocol, status, jsoc_status, requestid, n_records, attempts, error,
       created_at, finished_at
FROM export_requests ORDER BY id DESC LIMIT $limit;
