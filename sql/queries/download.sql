-- Queries of the nightly job and the demo (update.py, demo.py).

-- name: demo_status
SELECT series, count(*) AS files, sum(size) AS bytes
FROM local_files WHERE state = 'layout' AND series IS NOT NULL
GROUP BY series ORDER BY series;

-- name: demo_sample
-- Two files of each series the mirror holds (the demo asks the emulator to reprocess them).
SELECT series, record_key FROM (
    SELECT series, record_key, row_number() OVER (PARTITION BY series ORDER BY record_key) AS n
    FROM local_files WHERE state = 'layout' AND series IS NOT NULL
) WHERE n IN (2, 4) ORDER BY series, record_key;

-- name: record_landed_files
-- The downloader's batch form of scan.sql's record_landed_file_row: files it wrote, verified and
-- renamed into place, with the RECNUM each was fetched for (landed_batch is a registered table).
MERGE INTO local_files AS t
USING (SELECT path, dir, series, record_key, segment, size::BIGINT AS size, mtime::DOUBLE AS mtime,
              recnum::BIGINT AS recnum FROM landed_batch) AS b
ON t.path = b.path
WHEN MATCHED THEN UPDATE SET
    series = b.series, record_key = b.record_key, segment = b.segment, size = b.size, mtime = b.mtime,
    state = CASE WHEN b.size = 0 THEN 'empty' ELSE 'layout' END, problem = NULL, scanned_at = $now,
    verify_state = NULL, file_recnum = b.recnum
WHEN NOT MATCHED THEN INSERT
    (path, dir, series, record_key, segment, size, mtime, state, scanned_at, file_recnum)
    VALUES (b.path, b.dir, b.series, b.record_key, b.segment, b.size, b.mtime,
            CASE WHEN b.size = 0 THEN 'empty' ELSE 'layout' END, $now, b.recnum);

-- name: record_landed_checks
-- ... and what is known of each file's content: only the RECNUM it was fetched for (a scan
-- --verify adds its own findings later).
MERGE INTO file_checks AS t
USING (SELECT path, recnum::BIGINT AS recnum FROM landed_batch) AS b
ON t.path = b.path
WHEN MATCHED THEN UPDATE SET
    fetched_recnum = b.recnum, fetched_at = $now,
    verify_state = NULL, verify_problem = NULL, verified_size = NULL, verified_mtime = NULL, verified_at = NULL,
    header_recnum = NULL, checksum = NULL, datasum = NULL
WHEN NOT MATCHED THEN INSERT (path, fetched_recnum, fetched_at) VALUES (b.path, b.recnum, $now);
