-- The diff (diff.py): every wanted (record, segment) against the inventory.
-- diff_wanted is a temp view diff.py builds from the configured series (one SELECT per series
-- over its keyword table: series, record_key, segment, recnum, quality, online, prev_recnum, day);
-- diff_scope is a registered one-column table of the series in scope.

-- name: diff_build_gaps
-- One FULL JOIN classifies both sides: wanted rows without a file (missing / no_image / offline),
-- rows with a file (present / stale / corrupt) and files nothing wants (orphan). Only the rows
-- that are not 'present' are kept: the gap set is small even when the mirror is not.
CREATE OR REPLACE TEMP TABLE diff_gaps AS
SELECT * FROM (
    SELECT
        coalesce(w.series, f.series) AS series,
        coalesce(w.record_key, f.record_key) AS record_key,
        coalesce(w.segment, f.segment) AS segment,
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
    FROM diff_wanted AS w
    FULL OUTER JOIN (
        SELECT series, record_key, segment, path, size, state, verify_state, verify_problem,
               coalesce(header_recnum, fetched_recnum) AS file_recnum
        FROM local_files
        WHERE state IN ('layout', 'empty') AND series IN (SELECT series FROM diff_scope)
    ) AS f
    ON w.series = f.series AND w.record_key = f.record_key AND w.segment = f.segment
) WHERE state <> 'present';

-- name: diff_wanted_counts
SELECT series, day, count(*) FROM diff_wanted GROUP BY ALL;

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
