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
-- A FITS file's sums and structure were checked as it was written (download.FitsSums): it
-- counts as verified at landing ('ok'), so the nightly rotation does not read it again tonight.
MERGE INTO local_files AS t
USING (SELECT path, dir, series, record_key, segment, size::BIGINT AS size, mtime::DOUBLE AS mtime,
              recnum::BIGINT AS recnum, CASE WHEN verified THEN 'ok' END AS verify_state FROM landed_batch) AS b
ON t.path = b.path
WHEN MATCHED THEN UPDATE SET
    series = b.series, record_key = b.record_key, segment = b.segment, size = b.size, mtime = b.mtime,
    state = CASE WHEN b.size = 0 THEN 'empty' ELSE 'layout' END, problem = NULL, scanned_at = $now,
    verify_state = b.verify_state, file_recnum = b.recnum
WHEN NOT MATCHED THEN INSERT
    (path, dir, series, record_key, segment, size, mtime, state, scanned_at, verify_state, file_recnum)
    VALUES (b.path, b.dir, b.series, b.record_key, b.segment, b.size, b.mtime,
            CASE WHEN b.size = 0 THEN 'empty' ELSE 'layout' END, $now, b.verify_state, b.recnum);

-- name: record_landed_checks
-- ... and what is known of each file's content: the RECNUM it was fetched for and, for a FITS
-- file, the downloader's check (its sums: ok, or absent when the file carries none) at landing.
MERGE INTO file_checks AS t
USING (SELECT path, recnum::BIGINT AS recnum, size::BIGINT AS size, mtime::DOUBLE AS mtime, verified,
              CASE WHEN verified THEN checksum END AS checksum FROM landed_batch) AS b
ON t.path = b.path
WHEN MATCHED THEN UPDATE SET
    fetched_recnum = b.recnum, fetched_at = $now,
    verify_state = CASE WHEN b.verified THEN 'ok' END, verify_problem = NULL,
    verified_size = CASE WHEN b.verified THEN b.size END, verified_mtime = CASE WHEN b.verified THEN b.mtime END,
    verified_at = CASE WHEN b.verified THEN $now END,
    header_recnum = NULL, checksum = b.checksum, datasum = NULL
WHEN NOT MATCHED THEN INSERT
    (path, fetched_recnum, fetched_at, verify_state, verified_size, verified_mtime, verified_at, checksum)
    VALUES (b.path, b.recnum, $now, CASE WHEN b.verified THEN 'ok' END, CASE WHEN b.verified THEN b.size END,
            CASE WHEN b.verified THEN b.mtime END, CASE WHEN b.verified THEN $now END, b.checksum);
