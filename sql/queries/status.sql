-- name: status_local_bytes
-- Files and bytes on disk per series (layout files only).
SELECT series, count(*) AS files, coalesce(sum(size), 0) AS bytes
FROM local_files WHERE state IN ('layout', 'empty') GROUP BY series ORDER BY series;

-- name: status_last_scan
SELECT root, scanned_at FROM scan_state;
