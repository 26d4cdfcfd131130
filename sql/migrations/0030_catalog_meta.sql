-- What wrote this catalog: its schema version (the highest migration applied), and the jsocmirror
-- and DuckDB versions of the last writing open, so an older jsocmirror can refuse it by name and a
-- DuckDB of another major version is noticed (docs/upgrading.md). One row per key; a value is
-- rewritten only when it changes, so an unchanged catalog publishes nothing new.
CREATE TABLE catalog_meta (
    key        VARCHAR PRIMARY KEY,  -- schema_version | jsocmirror_version | duckdb_version | storage_version
    value      VARCHAR NOT NULL,
    updated_at TIMESTAMP NOT NULL    -- UTC: when this value was last set
);
