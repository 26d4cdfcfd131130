-- The readers' copy (publish.py): what a generation is made of.

-- name: publish_tables
-- Every table of the catalog, each published as Parquet parts.
SELECT table_name FROM information_schema.tables
WHERE table_schema = 'main' AND table_type = 'BASE TABLE' ORDER BY table_name;

-- name: publish_views
-- The writer's own views (hmi_m_720s, hmi_m_720s_files), recreated in the views file.
SELECT view_name, sql FROM duckdb_views()
WHERE NOT internal AND NOT temporary AND schema_name = 'main' AND database_name = current_database()
ORDER BY view_name;

-- name: publication_generation
-- The generation a readers' views file belongs to.
SELECT generation, published_at FROM jsocmirror_publication;
