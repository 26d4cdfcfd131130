-- The diff (diff.py): every wanted (record, segment) against the inventory.
-- For one configured (series, segment) at a time, diff.py defines the temp view diff_wanted_one
-- (the series' wanted records: record_key, recnum, quality, online, prev_recnum, day) and runs
-- diff_insert_gaps; joining on the record key alone (series and segment are constants on both
-- sides) is about twice as fast as a three-column join.

-- name: diff_create_gaps
CREATE OR REPLACE TEMP TABLE diff_gaps (
    series VARCHAR, record_key VARCHAR, segment VARCHAR, recnum BIGINT, file_recnum BIGINT, day VARCHAR,
    path VARCHAR, size BIGINT, state VARCHAR, reason VARCHAR
);

-- name: diff_insert_gaps
-- One FULL JOIN classifies both sides: wanted rows without a file (missing / no_image / offline),
-- rows with a file (present / stale / corrupt) and files nothing wants (orphan). Only the rows
-- that are not 'present' are kept: the gap set is small even when the mirror is not.
INSERT INTO diff_gaps
SELECT * FROM (
    SELECT
        $series AS series,
        coalesce(w.record_key, f.record_key) AS record_key,
        $segment AS segment,
        w.recnum AS recnum,
        f.file_recnum AS file_recnum,
        w.day AS day,
        f.path AS path,
        f.size AS size,
        CASE
            WHEN w.record_key IS NULL THEN 'orphan'
            WHEN f.path IS NULL AND w.quality < 0 THEN 'no_image'
            WHEN f.path IS NULL AND w.online = false THEN 'offline'
            WHEN f.path IS NULL THEN 'missing'
            WHEN f.state = 'empty' OR f.verify_state IN ('not_fits', 'truncated', 'bad_checksum', 'bad_datasum',
                                                        'header_mismatch', 'unreadable') THEN 'corrupt'
            WHEN f.file_recnum < w.recnum THEN 'stale'
            WHEN f.file_recnum IS NULL AND w.prev_recnum IS NOT NULL THEN 'stale'
            ELSE 'present'
        END AS state,
        CASE
            WHEN w.record_key IS NULL THEN 'no configured record wants this file'
            WHEN f.path IS NULL AND w.quality < 0 THEN 'QUALITY < 0: JSOC has no image for this record'
            WHEN f.path IS NULL AND w.online = false THEN 'offline upstream (on tape)'
            WHEN f.path IS NULL THEN NULL
            WHEN f.state = 'empty' THEN 'zero-byte file'
            WHEN f.verify_state IS NOT NULL AND f.verify_state <> 'ok' THEN f.verify_state || ': ' || coalesce(f.verify_problem, '')
            WHEN f.file_recnum < w.recnum THEN 'file is RECNUM ' || f.file_recnum || ', JSOC has ' || w.recnum
            WHEN f.file_recnum IS NULL AND w.prev_recnum IS NOT NULL THEN 'reprocessed upstream; the file''s RECNUM is unknown'
            ELSE NULL
        END AS reason
    FROM diff_wanted_one AS w
    FULL OUTER JOIN (
        SELECT record_key, path, size, state, verify_state, verify_problem,
               coalesce(header_recnum, fetched_recnum) AS file_recnum
        FROM local_files
        WHERE series = $series AND segment = $segment AND state IN ('layout', 'empty')
    ) AS f
    ON w.record_key = f.record_key
) WHERE state <> 'present';

-- name: diff_insert_other_orphans
-- Layout files of series in scope whose (series, segment) no configured entry wants at all.
INSERT INTO diff_gaps
SELECT f.series, f.record_key, f.segment, NULL, coalesce(f.header_recnum, f.fetched_recnum), NULL, f.path, f.size,
       'orphan', CASE WHEN f.series IN (SELECT series FROM diff_pairs) THEN 'segment not configured'
                      ELSE 'series not configured' END
FROM local_files AS f
WHERE f.state IN ('layout', 'empty') AND f.series IN (SELECT series FROM diff_scope)
  AND NOT EXISTS (SELECT 1 FROM diff_pairs p WHERE p.series = f.series AND p.segment = f.segment);

-- name: diff_wanted_counts
SELECT day, count(*) FROM diff_wanted_one GROUP BY ALL;

-- name: diff_gap_counts
SELECT series, day, state, count(*) FROM diff_gaps GROUP BY ALL;

-- name: diff_gap_rows
SELECT series, record_key, segment, state, recnum, file_recnum, path, size, reason
FROM diff_gaps
WHERE ($states IS NULL OR list_contains($states, state))
ORDER BY series, record_key, segment;

-- name: diff_unknown_files
SELECT path, state, problem, size FROM local_files WHERE state NOT IN ('layout', 'empty') ORDER BY path;

-- name: diff_unknown_count
SELECT count(*) FROM local_files WHERE state NOT IN ('layout', 'empty');

-- name: diff_drop
DROP TABLE IF EXISTS diff_gaps;
