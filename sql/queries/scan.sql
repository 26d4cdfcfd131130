-- Inventory of the data root (scan.py). Batches are Arrow tables registered as scan_batch,
-- scan_listed_dirs, scan_gone_dirs and verify_batch for the duration of one statement.

-- name: scan_root
SELECT root FROM scan_state;

-- name: scan_forget_files
DELETE FROM local_files;

-- name: scan_forget_checks
DELETE FROM file_checks;

-- name: scan_forget_dirs
DELETE FROM scan_dirs;

-- name: scan_forget_state
DELETE FROM scan_state;

-- name: scan_set_state
INSERT INTO scan_state (root, scanned_at, summary) VALUES ($root, $now, $summary);

-- name: scan_known_dirs
SELECT dir, mtime_ns, state FROM scan_dirs;

-- name: scan_file_count
SELECT count(*) FROM local_files;

-- name: scan_insert_all
-- First scan of a root: nothing to merge with.
INSERT INTO local_files (path, dir, series, record_key, segment, size, mtime, state, problem, scanned_at)
SELECT path, dir, series, record_key, segment, size, mtime, state, problem, $now FROM scan_batch;

-- name: scan_count_new
SELECT count(*) FROM scan_batch b WHERE NOT EXISTS (SELECT 1 FROM local_files t WHERE t.path = b.path);

-- name: scan_find_vanished
-- Files no longer in a directory that was listed again, and everything under vanished directories.
CREATE OR REPLACE TEMP TABLE scan_vanished AS
SELECT path FROM local_files
WHERE (dir IN (SELECT dir FROM scan_listed_dirs)
       AND NOT EXISTS (SELECT 1 FROM scan_batch b WHERE b.path = local_files.path))
   OR dir IN (SELECT dir FROM scan_gone_dirs);

-- name: scan_drop_vanished
DELETE FROM local_files WHERE path IN (SELECT path FROM scan_vanished);

-- name: scan_drop_vanished_checks
DELETE FROM file_checks WHERE path IN (SELECT path FROM scan_vanished);

-- name: scan_forget_vanished
DROP TABLE IF EXISTS scan_vanished;

-- name: scan_drop_changed_checks
-- A file whose size or mtime changed is no longer the file that was verified or fetched: it
-- forgets both (scan_merge then clears the diff's copy in local_files).
DELETE FROM file_checks
WHERE path IN (SELECT b.path FROM scan_batch b JOIN local_files t ON t.path = b.path
               WHERE b.size IS NOT NULL AND (t.size IS DISTINCT FROM b.size OR t.mtime IS DISTINCT FROM b.mtime));

-- name: scan_merge
-- New files are inserted; a file whose size or mtime changed forgets its verification and the
-- RECNUM it was fetched for (it is no longer the file the downloader wrote).
MERGE INTO local_files AS t
USING scan_batch AS b ON t.path = b.path
WHEN MATCHED AND (t.state IS DISTINCT FROM b.state
                  OR t.record_key IS DISTINCT FROM b.record_key
                  OR (b.size IS NOT NULL AND (t.size IS DISTINCT FROM b.size OR t.mtime IS DISTINCT FROM b.mtime))) THEN
    UPDATE SET series = b.series, record_key = b.record_key, segment = b.segment,
               size = coalesce(b.size, t.size), mtime = coalesce(b.mtime, t.mtime),
               state = b.state, problem = b.problem, scanned_at = $now,
               verify_state = CASE WHEN b.size IS NOT NULL AND (t.size IS DISTINCT FROM b.size
                                   OR t.mtime IS DISTINCT FROM b.mtime) THEN NULL ELSE t.verify_state END,
               file_recnum = CASE WHEN b.size IS NOT NULL AND (t.size IS DISTINCT FROM b.size
                                  OR t.mtime IS DISTINCT FROM b.mtime) THEN NULL ELSE t.file_recnum END
WHEN NOT MATCHED THEN
    INSERT (path, dir, series, record_key, segment, size, mtime, state, problem, scanned_at)
    VALUES (b.path, b.dir, b.series, b.record_key, b.segment, b.size, b.mtime, b.state, b.problem, $now);

-- name: scan_replace_dirs
DELETE FROM scan_dirs WHERE dir IN (SELECT dir FROM scan_listed_dirs) OR dir IN (SELECT dir FROM scan_gone_dirs);

-- name: scan_insert_dirs
INSERT INTO scan_dirs (dir, mtime_ns, state, scanned_at) SELECT dir, mtime_ns, state, $now FROM scan_listed_dirs;

-- name: scan_state_counts
SELECT state, count(*) AS files, coalesce(sum(size), 0) AS bytes FROM local_files GROUP BY state ORDER BY state;

-- name: scan_problem_files
SELECT path, state, problem FROM local_files WHERE state <> 'layout' ORDER BY path LIMIT $limit;

-- name: verify_todo
-- Layout files whose verification is missing or out of date (size/mtime changed since).
SELECT f.path, f.size, f.mtime FROM local_files AS f LEFT JOIN file_checks AS c ON c.path = f.path
WHERE f.state = 'layout'
  AND (c.verify_state IS NULL OR (f.size IS NOT NULL AND (c.verified_size IS DISTINCT FROM f.size
                                                          OR c.verified_mtime IS DISTINCT FROM f.mtime)))
ORDER BY f.path;

-- name: verify_store_checks
MERGE INTO file_checks AS t
USING verify_batch AS v ON t.path = v.path
WHEN MATCHED THEN UPDATE SET
    verify_state = v.verify_state, verify_problem = v.verify_problem, verified_size = v.size,
    verified_mtime = v.mtime, verified_at = $now, header_recnum = v.header_recnum, checksum = v.checksum,
    datasum = v.datasum
WHEN NOT MATCHED THEN INSERT
    (path, verify_state, verify_problem, verified_size, verified_mtime, verified_at, header_recnum, checksum, datasum)
    VALUES (v.path, v.verify_state, v.verify_problem, v.size, v.mtime, $now, v.header_recnum, v.checksum, v.datasum);

-- name: verify_store_files
-- After verify_store_checks: the diff's copy of the verification, and the size/mtime the
-- verification saw (a names-only scan records none; a file rewritten in place leaves its
-- directory's mtime alone, so an incremental scan does not see its new ones).
UPDATE local_files SET
    verify_state = c.verify_state, file_recnum = coalesce(c.header_recnum, c.fetched_recnum),
    size = coalesce(v.size, local_files.size), mtime = coalesce(v.mtime, local_files.mtime)
FROM verify_batch AS v JOIN file_checks AS c ON c.path = v.path
WHERE local_files.path = v.path;

-- name: verify_state_counts
SELECT verify_state, count(*) FROM local_files WHERE verify_state IS NOT NULL GROUP BY verify_state ORDER BY 1;

-- name: record_landed_file
-- The downloader records a file it wrote and verified, with the RECNUM it fetched it for (the
-- checks first, then record_landed_file_row).
MERGE INTO file_checks AS t
USING (SELECT $path AS path, $size::BIGINT AS size, $mtime::DOUBLE AS mtime, $recnum::BIGINT AS recnum,
              $verify_state::VARCHAR AS verify_state, $header_recnum::BIGINT AS header_recnum,
              $checksum::VARCHAR AS checksum, $datasum::VARCHAR AS datasum) AS b
ON t.path = b.path
WHEN MATCHED THEN UPDATE SET
    fetched_recnum = b.recnum, fetched_at = $now, verify_state = b.verify_state, verify_problem = NULL,
    verified_size = CASE WHEN b.verify_state IS NULL THEN NULL ELSE b.size END,
    verified_mtime = CASE WHEN b.verify_state IS NULL THEN NULL ELSE b.mtime END,
    verified_at = CASE WHEN b.verify_state IS NULL THEN NULL ELSE $now END,
    header_recnum = b.header_recnum, checksum = b.checksum, datasum = b.datasum
WHEN NOT MATCHED THEN INSERT
    (path, fetched_recnum, fetched_at, verify_state, verified_size, verified_mtime, verified_at, header_recnum,
     checksum, datasum)
    VALUES (b.path, b.recnum, $now, b.verify_state,
            CASE WHEN b.verify_state IS NULL THEN NULL ELSE b.size END,
            CASE WHEN b.verify_state IS NULL THEN NULL ELSE b.mtime END,
            CASE WHEN b.verify_state IS NULL THEN NULL ELSE $now END,
            b.header_recnum, b.checksum, b.datasum);

-- name: record_landed_file_row
MERGE INTO local_files AS t
USING (SELECT $path AS path, $dir AS dir, $series AS series, $record_key AS record_key, $segment AS segment,
              $size::BIGINT AS size, $mtime::DOUBLE AS mtime, $verify_state::VARCHAR AS verify_state,
              coalesce($header_recnum::BIGINT, $recnum::BIGINT) AS file_recnum) AS b
ON t.path = b.path
WHEN MATCHED THEN UPDATE SET
    series = b.series, record_key = b.record_key, segment = b.segment, size = b.size, mtime = b.mtime,
    state = CASE WHEN b.size = 0 THEN 'empty' ELSE 'layout' END, problem = NULL, scanned_at = $now,
    verify_state = b.verify_state, file_recnum = b.file_recnum
WHEN NOT MATCHED THEN INSERT
    (path, dir, series, record_key, segment, size, mtime, state, scanned_at, verify_state, file_recnum)
    VALUES (b.path, b.dir, b.series, b.record_key, b.segment, b.size, b.mtime,
            CASE WHEN b.size = 0 THEN 'empty' ELSE 'layout' END, $now, b.verify_state, b.file_recnum);

-- name: verify_candidates
-- The files the nightly rotation verifies (layout FITS files) with the time of their last
-- verification that still describes them: NULL when never verified, or changed since.
CREATE OR REPLACE TEMP VIEW verify_candidates AS
SELECT f.path, f.size, f.mtime,
       CASE WHEN c.verify_state IS NULL OR c.verified_at IS NULL
                 OR (f.size IS NOT NULL AND (c.verified_size IS DISTINCT FROM f.size
                                             OR c.verified_mtime IS DISTINCT FROM f.mtime))
            THEN NULL ELSE c.verified_at END AS last_verified
FROM local_files AS f LEFT JOIN file_checks AS c ON c.path = f.path
WHERE f.state = 'layout' AND (f.path ILIKE '%.fits' OR f.path ILIKE '%.fts' OR f.path ILIKE '%.fit');

-- name: verify_due_counts
-- (never verified or changed since, verified, verified before $overdue) of verify_candidates.
SELECT count(*) FILTER (WHERE last_verified IS NULL),
       count(*) FILTER (WHERE last_verified IS NOT NULL),
       count(*) FILTER (WHERE last_verified < $overdue)
FROM verify_candidates;

-- name: verify_slice_create
-- Tonight's slice, numbered in reading order: never verified (or changed) first, then the oldest
-- verified. Kept in a temporary table so that it is read page by page (an adopted archive's
-- first night may hold millions of files, of which the budget reads some).
CREATE OR REPLACE TEMP TABLE verify_slice AS
SELECT row_number() OVER (ORDER BY last_verified NULLS FIRST, path) AS n, path, size, mtime
FROM (SELECT path, size, mtime, last_verified FROM verify_candidates
      ORDER BY last_verified NULLS FIRST, path LIMIT $limit);

-- name: verify_slice_page
SELECT path, size, mtime FROM verify_slice WHERE n > $after ORDER BY n LIMIT $page;

-- name: verify_slice_drop
DROP TABLE IF EXISTS verify_slice;

-- name: verify_coverage
-- (files never verified since they changed, the oldest last verification): every file has been
-- read since that time when the first is 0.
SELECT count(*) FILTER (WHERE last_verified IS NULL), min(last_verified) FROM verify_candidates;

-- name: verify_due_size
-- (files, bytes) of tonight's slice: what a dry run says it would read.
SELECT count(*), coalesce(sum(size), 0)
FROM (SELECT size FROM verify_candidates ORDER BY last_verified NULLS FIRST, path LIMIT $limit);
