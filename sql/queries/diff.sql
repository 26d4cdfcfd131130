-- The diff (diff.py): every wanted (record, segment) against the inventory.
-- For one configured (series, segment) at a time, diff.py defines the temp view diff_wanted_one
-- (the series' wanted records: record_key, recnum, quality, online, prev_recnum, day) and runs
-- diff_insert_gaps; joining on the record key alone (series and segment are constants on both
-- sides) is about twice as fast as a three-column join.

-- name: diff_create_gaps
CREATE OR REPLACE TEMP TABLE diff_gaps (
    series VARCHAR, record_key VARCHAR, segment VARCHAR, recnum BIGINT, file_recnum BIGINT, day VARCHAR,
    file_rowid BIGINT, size BIGINT, state VARCHAR, reason VARCHAR
);

-- name: diff_insert_gaps
-- One FULL JOIN classifies both sides: wanted rows without a file (missing / no_image / offline),
-- rows with a file (present / stale / corrupt) and files nothing wants (orphan). Only the rows
-- that are not 'present' are kept: the gap set is small even when the mirror is not. The join
-- carries only narrow columns (flags packed in a byte, the file's rowid rather than its path):
-- payload, not keys, is what makes a 10M-row join big; diff_gap_rows fetches the rest for the
-- few gap rows. wanted flags: 1 no image (QUALITY < 0), 2 offline, 4 reprocessed (_prev_recnum).
INSERT INTO diff_gaps
SELECT $series, record_key, $segment, recnum, file_recnum,
       CASE WHEN state = 'orphan' THEN NULL
            ELSE regexp_extract(record_key, '\[(\d{4}[.-]\d\d[.-]\d\d)[_T]', 1) END,
       rid, NULL, state, NULL
FROM (
    SELECT
        coalesce(w.record_key, f.record_key) AS record_key, w.recnum, f.file_recnum, f.rid,
        CASE
            WHEN w.record_key IS NULL THEN 'orphan'
            WHEN f.rid IS NULL AND w.flags & 1 = 1 THEN 'no_image'
            WHEN f.rid IS NULL AND w.flags & 2 = 2 THEN 'offline'
            WHEN f.rid IS NULL THEN 'missing'
            WHEN f.bad THEN 'corrupt'
            WHEN f.file_recnum < w.recnum THEN 'stale'
            WHEN f.file_recnum IS NULL AND w.flags & 4 = 4 THEN 'stale'
            ELSE 'present'
        END AS state
    FROM (SELECT record_key, recnum, flags FROM diff_wanted_one) AS w
    FULL OUTER JOIN (
        SELECT record_key, rowid AS rid,
               state = 'empty' OR coalesce(verify_state, 'ok') <> 'ok' AS bad, file_recnum
        FROM local_files
        WHERE series = $series AND segment = $segment AND state IN ('layout', 'empty')
    ) AS f
    ON w.record_key = f.record_key
) WHERE state <> 'present';

-- name: diff_layout_pairs
SELECT DISTINCT series, segment FROM local_files WHERE state IN ('layout', 'empty');

-- name: diff_insert_other_orphans
-- Layout files of series in scope whose (series, segment) no configured entry wants at all.
INSERT INTO diff_gaps
SELECT f.series, f.record_key, f.segment, NULL, f.file_recnum, NULL, f.rowid, f.size,
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
-- The gap rows with the path of their file (if any) and why they are gaps.
WITH g AS (SELECT * FROM diff_gaps WHERE ($states IS NULL OR list_contains($states, state))),
     f AS (SELECT l.rowid AS rid, l.path, l.size, l.state, l.verify_state, c.verify_problem
           FROM local_files AS l
           LEFT JOIN (SELECT path, verify_problem FROM file_checks WHERE verify_problem IS NOT NULL) AS c
                  ON c.path = l.path
           WHERE l.rowid IN (SELECT file_rowid FROM g WHERE file_rowid IS NOT NULL))
SELECT g.series, g.record_key, g.segment, g.state, g.recnum, g.file_recnum, f.path, f.size,
       CASE g.state
           WHEN 'orphan' THEN coalesce(g.reason, 'no configured record wants this file')
           WHEN 'no_image' THEN 'QUALITY < 0: JSOC has no image for this record'
           WHEN 'offline' THEN 'offline upstream (on tape)'
           WHEN 'corrupt' THEN CASE WHEN f.state = 'empty' THEN 'zero-byte file'
                                    ELSE f.verify_state || ': ' || coalesce(f.verify_problem, '') END
           WHEN 'stale' THEN CASE WHEN g.file_recnum IS NULL
                                  THEN 'reprocessed upstream; the file''s RECNUM is unknown'
                                  ELSE 'file is RECNUM ' || g.file_recnum || ', JSOC has ' || g.recnum END
       END AS reason
FROM g LEFT JOIN f ON f.rid = g.file_rowid
ORDER BY g.series, g.record_key, g.segment;

-- name: diff_unknown_files
SELECT path, state, problem, size FROM local_files WHERE state NOT IN ('layout', 'empty') ORDER BY path;

-- name: diff_unknown_count
SELECT count(*) FROM local_files WHERE state NOT IN ('layout', 'empty');

-- name: diff_drop
DROP TABLE IF EXISTS diff_gaps;
