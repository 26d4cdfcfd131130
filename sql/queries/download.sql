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
