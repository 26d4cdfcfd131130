"""The catalog's keyword tables: schema from series definitions, chunk upserts, gone-marking, guards."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

import duckdb
import pyarrow as pa
import pytest

from jsocmirror.catalog import Catalog, keyword_columns, keyword_table, quote_ident, series_slug
from jsocmirror.errors import CatalogError, UsageError
from jsocmirror.series import Keyword, builtin_series
from jsocmirror.sync import Window

REG = builtin_series()
NOW = datetime(2024, 7, 1, 0, 0, 0)


def test_keyword_columns_map_drms_types():
    cols = {c.name: c for c in keyword_columns(REG.get("hmi.M_45s"))}
    names = list(cols)
    assert names[:2] == ["_key", "T_REC_index"]
    assert names[-7:] == ["_recnum", "_sunum", "_online", "_size", "_prev_recnum", "_gone_at", "_synced_at"]
    assert cols["T_REC"].sql_type == "TIMESTAMP" and cols["T_REC_str"].sql_type == "VARCHAR"
    assert cols["QUALITY"].sql_type == "INTEGER" and cols["CALVER64"].sql_type == "BIGINT"
    assert cols["DATAMEAN"].sql_type == "DOUBLE" and cols["INSTRUME"].sql_type == "VARCHAR"
    assert "T_REC_epoch" in cols and cols["T_REC_epoch"].sql_type == "TIMESTAMP"


def test_keyword_columns_subset_keeps_primekeys_and_quality():
    names = [c.name for c in keyword_columns(REG.get("hmi.sharp_720s"), ["USFLUX"])]
    keywords = {n for n in names if not n.startswith("_") and not n.endswith(("_str", "_index"))}
    assert keywords == {"HARPNUM", "QUALITY", "T_REC", "USFLUX"}
    assert "LAT_MIN" not in names


def test_quote_ident_and_slug():
    assert quote_ident('we"ird name') == '"we""ird name"'
    assert series_slug("hmi.M_720s") == "hmi_m_720s" and keyword_table("aia.lev1_euv_12s") == "kw_aia_lev1_euv_12s"
    with pytest.raises(CatalogError):
        quote_ident("a\x00b")


def test_ensure_keyword_table_creates_view_and_adds_new_keywords(tmp_path):
    sdef = REG.get("hmi.M_720s")
    with Catalog(tmp_path / "c.duckdb") as cat:
        cat.ensure_keyword_table(sdef)
        cat.ensure_keyword_table(sdef)  # idempotent
        grown = replace(sdef, keywords=sdef.keywords + (Keyword(name="NEW KW", type="double"),))
        cat.ensure_keyword_table(grown)
        cols = cat.table_columns("kw_hmi_m_720s")
        assert cols["NEW KW"] == "DOUBLE"
        assert cat.execute("SELECT count(*) FROM hmi_m_720s").fetchall() == [(0,)]
        view_cols = [d[0] for d in cat.execute("SELECT * FROM hmi_m_720s LIMIT 0").description]
        assert "_gone_at" not in view_cols and "NEW KW" in view_cols


def _chunk(keys, recnums, slots, harps):
    return pa.table({
        "_key": pa.array(keys), "HARPNUM": pa.array(harps, pa.int32()), "T_REC_index": pa.array(slots, pa.int64()),
        "_recnum": pa.array(recnums, pa.int64()), "_sunum": pa.array([1] * len(keys), pa.int64()),
        "_online": pa.array([True] * len(keys)), "_size": pa.array([10] * len(keys), pa.int64()),
    })


def _mini_catalog(tmp_path):
    """A catalog with a small hand-made series (two prime keys) to exercise apply_chunk directly."""
    from jsocmirror.catalog import Column

    cat = Catalog(tmp_path / "c.duckdb")
    cat.execute('CREATE TABLE kw_t_s (_key VARCHAR NOT NULL, "T_REC_index" BIGINT, "HARPNUM" INTEGER, _recnum BIGINT, '
                "_sunum BIGINT, _online BOOLEAN, _size BIGINT, _prev_recnum BIGINT, _gone_at TIMESTAMP, "
                "_synced_at TIMESTAMP)")
    cols = [Column("_key", "VARCHAR", "key"), Column("T_REC_index", "BIGINT", "slot", "T_REC"),
            Column("HARPNUM", "INTEGER", "keyword", "HARPNUM", "int")]
    return cat, cols


def test_apply_chunk_upserts_and_marks_gone_within_window_only(tmp_path):
    cat, cols = _mini_catalog(tmp_path)
    window = Window("T_REC_index", 0, 10, 0, 1, {"HARPNUM": [1, 2]})
    with cat:
        first = cat.apply_chunk("t.s", cols, _chunk(["[1][0]", "[2][0]", "[1][5]"], [10, 11, 12], [0, 0, 5], [1, 2, 1]),
                                window, NOW)
        assert first["new"] == 3
        # A row of another HARP in the same slots (outside the window's key list) must not be touched.
        cat.execute("INSERT INTO kw_t_s (_key, T_REC_index, HARPNUM, _recnum) VALUES ('[9][0]', 0, 9, 99)")
        # Next pass: [1][0] reprocessed (new recnum), [2][0] unchanged, [1][5] gone upstream.
        again = cat.apply_chunk("t.s", cols, _chunk(["[1][0]", "[2][0]"], [20, 11], [0, 0], [1, 2]), window, NOW)
        assert again == {"new": 0, "reprocessed": 1, "unchanged": 1, "restored": 0, "gone": 1}
        rows = {r[0]: r[1:] for r in cat.execute("SELECT _key, _recnum, _prev_recnum, _gone_at FROM kw_t_s").fetchall()}
        assert rows["[1][0]"] == (20, 10, None)
        assert rows["[2][0]"] == (11, None, None)
        assert rows["[1][5]"][2] == NOW  # marked, not deleted
        assert rows["[9][0]"] == (99, None, None)
        # It comes back: restored, not duplicated.
        back = cat.apply_chunk("t.s", cols, _chunk(["[1][0]", "[2][0]", "[1][5]"], [20, 11, 12], [0, 0, 5], [1, 2, 1]),
                               window, NOW)
        assert back["restored"] == 1 and back["gone"] == 0
        assert cat.execute("SELECT count(*), count(DISTINCT _key) FROM kw_t_s").fetchall() == [(4, 4)]


def test_apply_chunk_sampled_window_leaves_unsampled_slots(tmp_path):
    cat, cols = _mini_catalog(tmp_path)
    with cat:
        cat.apply_chunk("t.s", cols, _chunk(["[1][0]", "[1][1]", "[1][2]"], [1, 2, 3], [0, 1, 2], [1, 1, 1]),
                        Window("T_REC_index", 0, 3, 0, 1, {}), NOW)
        counts = cat.apply_chunk("t.s", cols, _chunk(["[1][0]", "[1][2]"], [1, 3], [0, 2], [1, 1]),
                                 Window("T_REC_index", 0, 3, 0, 2, {}), NOW)
        assert counts["gone"] == 0  # slot 1 is not in a every-2nd-slot window


def test_apply_chunk_rolls_back_on_error(tmp_path):
    cat, cols = _mini_catalog(tmp_path)
    with cat:
        bad = _chunk(["[1][0]"], [1], [0], [1]).drop_columns(["_size"])
        with pytest.raises(Exception):
            cat.apply_chunk("t.s", cols, bad, Window("T_REC_index", 0, 3, 0, 1, {}), NOW)
        assert cat.execute("SELECT count(*) FROM kw_t_s").fetchall() == [(0,)]
        cat.apply_chunk("t.s", cols, _chunk(["[1][0]"], [1], [0], [1]), Window("T_REC_index", 0, 3, 0, 1, {}), NOW)


def test_catalog_not_duckdb_is_one_line_error(tmp_path):
    path = tmp_path / "catalog.duckdb"
    path.write_bytes(b"this is not a database, it is a text file\n" * 100)
    with pytest.raises(CatalogError) as err:
        Catalog(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_catalog_from_newer_schema_is_refused_untouched(tmp_path):
    path = tmp_path / "catalog.duckdb"
    with Catalog(path):
        pass
    con = duckdb.connect(str(path))
    con.execute("INSERT INTO schema_migrations (number, name) VALUES (9999, '9999_future')")
    con.close()
    before = path.read_bytes()
    for kwargs in ({}, {"read_only": True}, {"migrate": False}):
        with pytest.raises(CatalogError, match="a jsocmirror newer than this one") as err:
            Catalog(path, **kwargs)
        assert err.value.exit_code == 2 and "\n" not in str(err.value)  # it names no version: none is recorded
    assert path.read_bytes() == before


def test_migration_0011_moves_checks_out_of_local_files(tmp_path):
    """A catalog written before file_checks existed keeps what it knew about each file."""
    from jsocmirror.catalog import migrations

    path = tmp_path / "catalog.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE schema_migrations (number INTEGER PRIMARY KEY, name VARCHAR NOT NULL,"
                " applied_at TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'))")
    for number, name, sql in migrations():
        if number < 11:
            con.execute(sql)
            con.execute("INSERT INTO schema_migrations (number, name) VALUES (?, ?)", [number, name])
    con.execute("""
        INSERT INTO local_files (path, dir, series, record_key, segment, size, mtime, state, scanned_at,
                                 verify_state, verify_problem, header_recnum, checksum, fetched_recnum, fetched_at)
        VALUES ('a/x.fits', 'a', 'hmi.M_45s', '[k1]', 'magnetogram', 10, 1.5, 'layout', now(),
                'ok', NULL, 41, 'ok', 40, now()),
               ('a/y.fits', 'a', 'hmi.M_45s', '[k2]', 'magnetogram', 10, 1.5, 'layout', now(),
                NULL, NULL, NULL, NULL, 50, now()),
               ('a/z.fits', 'a', 'hmi.M_45s', '[k3]', 'magnetogram', 10, 1.5, 'layout', now(),
                'truncated', 'ends at 4000 bytes', NULL, NULL, NULL, NULL),
               ('notes.txt', '', NULL, NULL, NULL, 1, 1.5, 'unknown', now(),
                NULL, NULL, NULL, NULL, NULL, NULL)""")
    con.close()
    with Catalog(path) as catalog:
        files = catalog.execute("SELECT path, state, verify_state, file_recnum FROM local_files ORDER BY path").fetchall()
        checks = catalog.execute("SELECT path, verify_state, verify_problem, header_recnum, checksum, fetched_recnum "
                                 "FROM file_checks ORDER BY path").fetchall()
        columns = catalog.table_columns("local_files")
    assert files == [("a/x.fits", "layout", "ok", 41), ("a/y.fits", "layout", None, 50),
                     ("a/z.fits", "layout", "truncated", None), ("notes.txt", "unknown", None, None)]
    assert checks == [("a/x.fits", "ok", None, 41, "ok", 40), ("a/y.fits", None, None, None, None, 50),
                      ("a/z.fits", "truncated", "ends at 4000 bytes", None, None, None)]
    assert "header_recnum" not in columns and "fetched_recnum" not in columns


def test_run_user_sql_read_only_refuses_writes(tmp_path):
    path = tmp_path / "catalog.duckdb"
    with Catalog(path):
        pass
    with Catalog(path, read_only=True) as cat:
        names, rows = cat.run_user_sql("SELECT count(*) AS n FROM series_defs")
        assert names == ["n"] and rows == [(0,)]
        with pytest.raises(UsageError, match="add --write"):
            cat.run_user_sql("DELETE FROM runs")
        with pytest.raises(UsageError, match="SQL error"):
            cat.run_user_sql("SELEC 1")


def test_unique_prime_keys_reports_only_keys_no_two_rows_share(tmp_path):
    with Catalog(tmp_path / "c.duckdb") as catalog:
        catalog.ensure_keyword_table(REG.get("aia.lev1"))
        catalog.ensure_keyword_table(REG.get("hmi.sharp_720s"))
        table = quote_ident(keyword_table("aia.lev1"))
        catalog.execute(f'INSERT INTO {table} (_key, "FSN") SELECT \'[\' || i || \']\', 1000 + i FROM range(50) t(i)')
        sharp = quote_ident(keyword_table("hmi.sharp_720s"))
        catalog.execute(f'INSERT INTO {sharp} (_key, "HARPNUM") SELECT \'[\' || i || \']\', 11000 + i % 3 FROM range(9) t(i)')
        candidates = {"aia.lev1": ["NO_SUCH_COLUMN", "FSN"], "hmi.sharp_720s": ["HARPNUM"],
                      "hmi.M_45s": ["CAMERA"]}  # no hmi.M_45s table: skipped
        assert catalog.unique_prime_keys(candidates) == (("aia.lev1", "FSN"),)
        catalog.execute(f'INSERT INTO {table} (_key, "FSN") VALUES (\'[dup]\', 1000)')  # a shared FSN
        assert catalog.unique_prime_keys(candidates) == ()
        catalog.execute(f"DELETE FROM {table} WHERE _key = '[dup]'")
        catalog.execute(f'INSERT INTO {table} (_key, "FSN") VALUES (\'[null]\', NULL)')  # a record without one
        assert catalog.unique_prime_keys(candidates) == ()
