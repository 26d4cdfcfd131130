-- The inventory of the data root (scan.py). One row per file found, whatever it is: layout
-- files carry their series/record_key/segment; anything else is kept, with its state, so it
-- can be reported (never deleted). No PRIMARY KEY (MERGE on path keeps it unique, and big
-- inserts stay fast).
CREATE TABLE local_files (
    path           VARCHAR NOT NULL,   -- relative to the data root, '/'-separated
    dir            VARCHAR NOT NULL,   -- its directory ('' for the root itself)
    series         VARCHAR,            -- NULL unless the path is a layout path
    record_key     VARCHAR,            -- [v1][v2]... as recordset.record_key prints it
    segment        VARCHAR,
    size           BIGINT,             -- NULL after a names-only scan
    mtime          DOUBLE,             -- POSIX seconds; NULL after a names-only scan
    state          VARCHAR NOT NULL,   -- layout | unknown | near_miss | empty | unreadable | symlink_out | special
    problem        VARCHAR,            -- why the state is not 'layout'
    scanned_at     TIMESTAMP NOT NULL, -- UTC
    verify_state   VARCHAR,            -- NULL (not verified) | ok | not_fits | truncated | bad_checksum | bad_datasum | header_mismatch | unreadable
    verify_problem VARCHAR,
    verified_size  BIGINT,             -- size and mtime the verification saw (a change forgets it)
    verified_mtime DOUBLE,
    verified_at    TIMESTAMP,
    header_recnum  BIGINT,             -- RECNUM in the file's header, when it has one
    checksum       VARCHAR,            -- ok | bad | absent
    datasum        VARCHAR,            -- ok | bad | absent
    fetched_recnum BIGINT,             -- the RECNUM the downloader fetched this file for (record_landed_file)
    fetched_at     TIMESTAMP
);

-- Directories seen by the last scan, with their mtime: an unchanged directory is not listed
-- again (its files cannot have been added, removed or renamed).
CREATE TABLE scan_dirs (
    dir        VARCHAR NOT NULL,
    mtime_ns   BIGINT,                 -- NULL on object stores (no directory mtimes)
    state      VARCHAR NOT NULL,       -- ok | unreadable | symlink (not followed)
    scanned_at TIMESTAMP NOT NULL
);

-- Which root the inventory describes; scanning another root starts a fresh inventory.
CREATE TABLE scan_state (
    root        VARCHAR NOT NULL,
    scanned_at  TIMESTAMP NOT NULL,
    verified_at TIMESTAMP,
    summary     JSON
);
