-- What --verify and the downloader learn about a file moves out of local_files into
-- file_checks. A first scan of a big root is mostly DuckDB storing the inventory, and every
-- column costs it, even one that is all NULL (~25 ms of CPU per column per million files):
-- local_files keeps only what a scan writes plus the two facts the diff reads for every file.
-- Its path column is stored uncompressed: compressing it cost ~0.14 s of CPU per million files
-- on every insert and merge, for ~55 MB per million files saved on disk.
CREATE TABLE file_checks (
    path           VARCHAR NOT NULL,   -- local_files.path (one row per file that has one)
    verify_state   VARCHAR,            -- NULL (not verified) | ok | not_fits | truncated | bad_checksum | bad_datasum | header_mismatch | unreadable
    verify_problem VARCHAR,
    verified_size  BIGINT,             -- size and mtime the verification saw
    verified_mtime DOUBLE,
    verified_at    TIMESTAMP,
    header_recnum  BIGINT,             -- RECNUM in the file's header, when it has one
    checksum       VARCHAR,            -- ok | bad | absent
    datasum        VARCHAR,            -- ok | bad | absent
    fetched_recnum BIGINT,             -- the RECNUM the downloader fetched this file for
    fetched_at     TIMESTAMP
);

INSERT INTO file_checks
SELECT path, verify_state, verify_problem, verified_size, verified_mtime, verified_at, header_recnum,
       checksum, datasum, fetched_recnum, fetched_at
FROM local_files
WHERE verify_state IS NOT NULL OR header_recnum IS NOT NULL OR fetched_recnum IS NOT NULL;

CREATE TABLE local_files_next (
    path         VARCHAR NOT NULL USING COMPRESSION uncompressed,  -- relative to the data root, '/'-separated
    dir          VARCHAR NOT NULL,   -- its directory ('' for the root itself)
    series       VARCHAR,            -- NULL unless the path is a layout path
    record_key   VARCHAR,            -- [v1][v2]... as recordset.record_key prints it
    segment      VARCHAR,
    size         BIGINT,             -- NULL after a names-only scan
    mtime        DOUBLE,             -- POSIX seconds; NULL after a names-only scan
    state        VARCHAR NOT NULL,   -- layout | unknown | near_miss | empty | unreadable | symlink_out | special
    problem      VARCHAR,            -- why the state is not 'layout'
    scanned_at   TIMESTAMP NOT NULL, -- UTC
    -- the diff's view of file_checks (kept equal to it by every statement that writes either):
    verify_state VARCHAR,            -- file_checks.verify_state
    file_recnum  BIGINT              -- the RECNUM the file holds: its header's, else the one it was fetched for
);

INSERT INTO local_files_next
SELECT path, dir, series, record_key, segment, size, mtime, state, problem, scanned_at,
       verify_state, coalesce(header_recnum, fetched_recnum)
FROM local_files;

DROP TABLE local_files;
ALTER TABLE local_files_next RENAME TO local_files;
