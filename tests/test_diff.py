"""diff/status over a real catalog: every state, selections, views, Parquet export."""

from __future__ import annotations

import os

import duckdb
import pytest

from jsocmirror import drmstime
from jsocmirror.catalog import Catalog, keyword_table, quote_ident
from jsocmirror.config import config_from_dict
from jsocmirror.diff import diff_mirror, export_catalog, mirror_status, refresh_file_views, target_path
from jsocmirror.errors import ConfigError
from jsocmirror.layout import Layout
from jsocmirror.scan import record_landed_file, scan_tree
from jsocmirror.series import builtin_series

REGISTRY = builtin_series()
LAYOUT = Layout(REGISTRY)
T0 = drmstime.parse_time("2024.01.01_00:00:00_TAI")


def fill_keyword_table(catalog: Catalog, series: str, n: int, *, quality=None, online=None, prev=None, recnum=None,
                       start: float = T0, step: float = 720.0, camera: int = 3) -> list[str]:
    """Rows in kw_<slug> as sync writes them (columns per docs/architecture.md). Returns the keys."""
    sd = REGISTRY.get(series)
    catalog.ensure_keyword_table(sd)
    table = quote_ident(keyword_table(series))
    keys = []
    for i in range(n):
        t = start + step * i
        printed = drmstime.format_time(t, "TAI")
        key = f"[{printed}][{camera}]"
        keys.append(key)
        catalog.execute(
            f'INSERT INTO {table} (_key, "T_REC_index", "T_REC", "CAMERA", "QUALITY", "T_REC_str", _recnum, _online, '
            "_prev_recnum) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [key, sd.slotting("T_REC").index(t), drmstime.to_datetime_utc(t).replace(tzinfo=None), camera, (quality or {}).get(i, 0), printed,
             (recnum or {}).get(i, 100 + i), (online or {}).get(i, True), (prev or {}).get(i)],
        )
    return keys


def put(root, relpath, data=b"x"):
    path = os.path.join(root, relpath)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def m720(i, camera=3):
    return LAYOUT.relative_path("hmi.M_720s", [T0 + 720 * i, camera], "magnetogram")


@pytest.fixture
def mirror(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    config = config_from_dict({"series": [{"series": "hmi.M_720s", "segments": ["magnetogram"]}]}, tmp_path)
    with Catalog(tmp_path / "catalog.duckdb") as catalog:
        yield config, catalog, str(root)


def test_diff_mirror_classifies_every_state(mirror):
    config, catalog, root = mirror
    from test_scan import fits_bytes

    fill_keyword_table(catalog, "hmi.M_720s", 10, quality={5: -2147483648, 9: -2147483648}, online={6: False},
                       prev={7: 90, 8: 95}, recnum={3: 300})
    def fits_for(i, recnum):
        return fits_bytes(t_rec=drmstime.format_time(T0 + 720 * i, "TAI"), recnum=recnum)

    put(root, m720(0), fits_for(0, 100))  # present
    put(root, m720(1), b"")  # corrupt: empty
    put(root, m720(3), fits_for(3, None))  # stale by the RECNUM recorded when it was fetched
    put(root, m720(7), fits_for(7, None))  # stale: reprocessed upstream, the file's RECNUM unknown
    put(root, m720(8), fits_for(8, 108))  # reprocessed, but the header shows it is the new version
    put(root, m720(9), fits_for(9, 109))  # QUALITY < 0 but we have a file: present
    put(root, LAYOUT.relative_path("hmi.M_720s", ["2023.06.01_00:00:00_TAI", 3], "magnetogram"))  # orphan
    put(root, LAYOUT.relative_path("hmi.M_45s", ["2023.06.01_00:00:00_TAI", 2], "magnetogram"))  # unconfigured
    put(root, "junk.txt")
    scan_tree(catalog, root, LAYOUT, verify=True)
    record_landed_file(catalog, root, m720(3), 299, LAYOUT)
    result = diff_mirror(catalog, config)
    assert result.counts["hmi.M_720s"] == {"present": 3, "missing": 2, "stale": 2, "corrupt": 1, "no_image": 1,
                                           "offline": 1, "orphan": 1}
    assert result.counts["hmi.M_45s"]["orphan"] == 1
    assert result.unknown_files == 1
    gaps = {(g.record_key, g.state) for g in result.gaps() if g.series == "hmi.M_720s"}
    key = lambda i: f"[{drmstime.format_time(T0 + 720 * i, 'TAI')}][3]"  # noqa: E731
    assert {(key(i), "missing") for i in (2, 4)} <= gaps
    assert (key(1), "corrupt") in gaps and (key(3), "stale") in gaps and (key(7), "stale") in gaps
    assert (key(5), "no_image") in gaps and (key(6), "offline") in gaps
    missing = list(result.gaps(["missing"]))
    assert [g.key_values for g in missing][0] == {"T_REC": drmstime.format_time(T0 + 720 * 2, "TAI"), "CAMERA": "3"}
    assert target_path(LAYOUT, missing[0]) == m720(2)
    stale = [g for g in result.gaps(["stale"]) if g.record_key == key(3)][0]
    assert (stale.recnum, stale.file_recnum) == (300, 299)


def test_diff_mirror_respects_selection_and_gone_records(mirror, tmp_path):
    _, catalog, root = mirror
    fill_keyword_table(catalog, "hmi.M_720s", 6)
    catalog.execute(f"UPDATE {keyword_table('hmi.M_720s')} SET _gone_at = now() WHERE _key = ?",
                    [f"[{drmstime.format_time(T0 + 720 * 5, 'TAI')}][3]"])
    put(root, m720(5))
    scan_tree(catalog, root, LAYOUT)
    config = config_from_dict({"series": [{"series": "hmi.M_720s", "segments": ["magnetogram"],
                                           "start": "2024.01.01_00:12:00_TAI", "end": "2024.01.01_00:36:00_TAI"}]},
                              tmp_path)
    result = diff_mirror(catalog, config)
    assert result.counts["hmi.M_720s"]["missing"] == 3  # slots 1, 2, 3
    assert result.counts["hmi.M_720s"]["orphan"] == 1  # the gone record's file


def test_diff_mirror_with_a_filter_and_unknown_states(mirror, tmp_path):
    _, catalog, root = mirror
    fill_keyword_table(catalog, "hmi.M_720s", 4, quality={0: 4, 1: 4})
    scan_tree(catalog, root, LAYOUT)
    config = config_from_dict({"series": [{"series": "hmi.M_720s", "segments": ["magnetogram"],
                                           "filter": "QUALITY = 0"}]}, tmp_path)
    assert diff_mirror(catalog, config).counts["hmi.M_720s"]["missing"] == 2
    with pytest.raises(ConfigError, match="state 'lost'"):
        list(diff_mirror(catalog, config).gaps(["lost"]))


def test_diff_mirror_unsynced_series_is_skipped(mirror):
    config, catalog, root = mirror
    scan_tree(catalog, root, LAYOUT)
    result = diff_mirror(catalog, config)
    assert result.skipped == ["hmi.M_720s"] and result.total() == 0


def test_mirror_status_coverage_per_day_and_month(mirror):
    config, catalog, root = mirror
    fill_keyword_table(catalog, "hmi.M_720s", 4, step=86400.0)
    put(root, LAYOUT.relative_path("hmi.M_720s", [T0, 3], "magnetogram"), b"abc")
    scan_tree(catalog, root, LAYOUT)
    statuses, _ = mirror_status(catalog, config, by="day")
    (st,) = statuses
    assert st.files == 1 and st.bytes == 3
    assert [(p, a, b) for p, a, b, _ in st.coverage] == [
        ("2024-01-01", 1, 1), ("2024-01-02", 0, 1), ("2024-01-03", 0, 1), ("2024-01-04", 0, 1)]
    statuses, _ = mirror_status(catalog, config, by="month")
    assert [(p, a, b) for p, a, b, _ in statuses[0].coverage] == [("2024-01", 1, 4)]
    with pytest.raises(ConfigError, match="'week'"):
        mirror_status(catalog, config, by="week")


def test_refresh_file_views_and_export_catalog_are_queryable_without_jsocmirror(mirror, tmp_path):
    config, catalog, root = mirror
    fill_keyword_table(catalog, "hmi.M_720s", 3, quality={1: 1024})
    for i in range(3):
        put(root, m720(i))
    scan_tree(catalog, root, LAYOUT)
    assert refresh_file_views(catalog, ["hmi.M_720s", "hmi.M_45s"]) == ["hmi_m_720s_files"]
    paths = [r[0] for r in catalog.execute("SELECT path FROM hmi_m_720s_files WHERE QUALITY = 0 ORDER BY path").fetchall()]
    assert paths == [m720(0), m720(2)]
    dest = tmp_path / "data" / "_catalog"
    written = export_catalog(catalog, str(dest))
    assert str(dest / "local_files.parquet") in written and not list(dest.glob(".*"))
    con = duckdb.connect()
    got = con.execute(
        f"SELECT f.path FROM '{dest}/kw_hmi_m_720s.parquet' k JOIN '{dest}/local_files.parquet' f "
        "ON f.record_key = k._key WHERE k.QUALITY = 0 ORDER BY 1").fetchall()
    assert [r[0] for r in got] == [m720(0), m720(2)]
    # the export under the data root is not part of the inventory
    assert scan_tree(catalog, root, LAYOUT, full=True).by_state == {"layout": 3}
