-- Queries of the catalog's own versions (catalog.py, upgrade.py; docs/upgrading.md).

-- name: catalog_meta_exists
SELECT count(*) > 0 FROM information_schema.tables WHERE table_name = 'catalog_meta';

-- name: catalog_meta_get
SELECT key, value FROM catalog_meta ORDER BY key;

-- name: catalog_meta_put
INSERT INTO catalog_meta (key, value, updated_at) VALUES ($key, $value, (now() AT TIME ZONE 'UTC'))
ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at;

-- name: storage_version
-- The file format DuckDB keeps this catalog in (v1.0.0+, v2.0.0+): fixed when the file was made.
SELECT tags['storage_version'] FROM duckdb_databases() WHERE database_name = current_database();
