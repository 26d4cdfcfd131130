"""Sync exactness: after a sync the catalog holds exactly what drms.Client.query returns.

Every test talks to the real emulator over loopback HTTP and compares against the unmodified
drms client asking for the same record set (written by hand here, not by the code under test).
drms is asked with ``convert_numeric=False`` (its hex conversion needs object columns, which
pandas 3 no longer makes, so it turns hex QUALITY into NaN); the documented mapping (docs/sql.md)
is applied here to JSOC's strings: times -> UTC TIMESTAMP (MISSING -> NULL); ints -> integers
with hex read as DRMS's signed value; floats -> DOUBLE with NaN -> NULL; strings unchanged.
"""

from __future__ import annotations

import math
from pathlib import Path

import drms
import pytest

from jsocmirror import drmstime
from jsocmirror.catalog import Catalog, keyword_table
from jsocmirror.config import MirrorConfig, SeriesConfig, SyncConfig, save_config, with_series
from jsocmirror.emulator import Emulator
from jsocmirror.jsoc import JsocClient
from jsocmirror.series import SeriesDef
from jsocmirror.sync import parse_times, rows_to_arrow, struct_definition, sync

SPECIALS = "*recnum*,*sunum*,*size*,*online*"
_INT_BITS = {"char": 8, "short": 16, "int": 32, "longlong": 64}


def drms_client(url: str) -> drms.Client:
    return drms.Client(drms.ServerConfig(
        name="EMU", cgi_baseurl=url + "cgi-bin/ajax/", cgi_show_series="show_series", cgi_jsoc_info="jsoc_info",
        cgi_jsoc_fetch="jsoc_fetch", cgi_check_address="checkAddress.sh", cgi_show_series_wrapper="showextseries",
        show_series_wrapper_dbhost="hmidb2", http_download_baseurl=url))


def make_mirror(tmp_path: Path, url: str, entries: list[SeriesConfig], chunk_records: int = 300,
                recheck: str = "2h") -> MirrorConfig:
    config = MirrorConfig(mirror_dir=tmp_path, server=url, email="x@example.com",
                          sync=SyncConfig(recheck=recheck, chunk_records=chunk_records))
    for entry in entries:
        config = with_series(config, entry)
    tmp_path.mkdir(parents=True, exist_ok=True)
    save_config(config)
    return config


def run_sync(config: MirrorConfig, url: str, series=None):
    with Catalog(config.catalog_path) as catalog:
        return sync(config, catalog, JsocClient(url), series)


def expected_value(raw, drms_type: str):
    """What the catalog must hold for one value drms returned (the documented mapping)."""
    if drms_type == "time":
        t = drmstime.parse_time(raw) if isinstance(raw, str) and raw else None
        return None if t is None or drmstime.is_missing(t) else drmstime.to_datetime_utc(t).replace(tzinfo=None)
    if drms_type in _INT_BITS:
        if raw is None or raw == "":
            return None
        text, bits = str(raw).strip(), _INT_BITS[drms_type]
        try:
            value = int(text, 16) if text.lower().startswith("0x") else int(text)
        except ValueError:
            return None  # documented: a non-integer value of an int keyword is NULL
        if text.lower().startswith("0x") and bits < 64 and value >= 2 ** (bits - 1):
            value -= 2 ** bits  # the bits of a signed DRMS int printed as hex
        return value
    if drms_type in ("float", "double"):
        try:
            value = float(raw)
        except (TypeError, ValueError):
            return None
        return None if math.isnan(value) else value
    return raw


def assert_catalog_matches_drms(config: MirrorConfig, url: str, series: str, ds: str) -> int:
    """Compare every current row and column of the catalog with drms.Client.query(ds). Returns rows."""
    client = drms_client(url)
    frame = client.query(ds, key="**ALL**," + SPECIALS, convert_numeric=False)
    struct = JsocClient(url).series_struct(series)
    sdef, _, _ = struct_definition(struct, series)
    types = {kw.name: kw.type for kw in sdef.visible_keywords}
    with Catalog(config.catalog_path, read_only=True) as catalog:
        cur = catalog.execute(f'SELECT * FROM "{keyword_table(series)}" WHERE _gone_at IS NULL ORDER BY _key')
        names = [d[0] for d in cur.description]
        rows = {r[0]: dict(zip(names, r)) for r in cur.fetchall()}
    expected_keys = {}
    for i in range(len(frame)):
        key = "".join(f"[{frame[pk].iloc[i] if types[pk] == 'time' else int(frame[pk].iloc[i])}]" for pk in sdef.primekeys)
        expected_keys[key] = i
    assert sorted(rows) == sorted(expected_keys), f"{series}: catalog keys differ from drms for {ds}"
    for key, i in expected_keys.items():
        row = rows[key]
        for name, drms_type in types.items():
            want = expected_value(frame[name].iloc[i], drms_type)
            assert row[name] == want, f"{series} {key} {name}: catalog {row[name]!r} != drms {want!r}"
        assert row["_recnum"] == int(frame["*recnum*"].iloc[i])
        assert row["_sunum"] == int(frame["*sunum*"].iloc[i])
        assert row["_size"] == int(frame["*size*"].iloc[i])
        assert row["_online"] == (str(frame["*online*"].iloc[i]).upper() in ("Y", "1"))
        for pk in sdef.primekeys:
            if types[pk] == "time":
                assert row[f"{pk}_str"] == frame[pk].iloc[i]
    return len(rows)


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    with Emulator(state_dir=None, seed=0) as emulator:
        yield emulator


# Each case: config entry, the hand-written record set drms is asked for, minimum expected rows.
CASES = [
    pytest.param(SeriesConfig("hmi.M_45s", start="2024.06.30_12:00:00_TAI", end="2024.06.30_14:00:00_TAI"),
                 "hmi.M_45s[2024.06.30_12:00:00_TAI-2024.06.30_14:00:00_TAI]", 150, id="M_45s-window"),
    pytest.param(SeriesConfig("hmi.M_720s", start="2024.06.27_00:00:00_TAI", end="2024.06.29_00:00:00_TAI",
                              filter="QUALITY = 0"),
                 "hmi.M_720s[2024.06.27_00:00:00_TAI-2024.06.29_00:00:00_TAI][? QUALITY = 0 ?]", 100, id="M_720s-filter"),
    pytest.param(SeriesConfig("hmi.sharp_720s", start="2024.06.28_00:00:00_TAI", end="2024.06.29_12:00:00_TAI",
                              keys={"HARPNUM": [11355, 11358, 11362]}),
                 "hmi.sharp_720s[11355,11358,11362][2024.06.28_00:00:00_TAI-2024.06.29_12:00:00_TAI]", 50, id="sharp-harps"),
    pytest.param(SeriesConfig("hmi.sharp_cea_720s", start="2024.06.28_00:00:00_TAI", end="2024.06.29_00:00:00_TAI",
                              keys={"HARPNUM": [11355, 11358]}, cadence="1h"),
                 "hmi.sharp_cea_720s[11355,11358][2024.06.28_00:00:00_TAI-2024.06.29_00:00:00_TAI@1h]", 10,
                 id="sharp_cea-cadence"),
    pytest.param(SeriesConfig("aia.lev1", start="2024.06.30_12:00:00_TAI", end="2024.06.30_12:06:00_TAI"),
                 "aia.lev1[2024.06.30_12:00:00_TAI-2024.06.30_12:06:00_TAI]", 200, id="aia.lev1-window"),
    pytest.param(SeriesConfig("aia.lev1_euv_12s", start="2024-06-30T10:00:00Z", end="2024-06-30T11:30:00Z",
                              keys={"WAVELNTH": [171, 193]}, cadence="1m"),
                 "aia.lev1_euv_12s[2024-06-30T10:00:00Z-2024-06-30T11:30:00Z@1m][171,193]", 150, id="euv-waves-cadence"),
    pytest.param(SeriesConfig("aia.lev1_uv_24s", start="2024.06.30_12:00:00_TAI", end="2024.06.30_13:00:00_TAI",
                              keys={"WAVELNTH": [1600]}, filter="QUALITY >= 0"),
                 "aia.lev1_uv_24s[2024.06.30_12:00:00_TAI-2024.06.30_13:00:00_TAI][1600][? QUALITY >= 0 ?]", 100,
                 id="uv-wave-filter"),
]


@pytest.mark.parametrize("entry, ds, minimum", CASES)
def test_sync_matches_drms_query(tmp_path, emu, entry, ds, minimum):
    config = make_mirror(tmp_path, emu.url, [entry], chunk_records=100)
    result = run_sync(config, emu.url)
    summary = result.series[0]
    rows = assert_catalog_matches_drms(config, emu.url, entry.series, ds)
    assert rows >= minimum
    if rows > 200:
        assert summary.chunks >= 2, "the window should span several chunks at chunk_records=100"
    assert summary.new == rows and summary.records == rows


def test_sync_open_end_reaches_newest_record(tmp_path, emu):
    entry = SeriesConfig("hmi.M_720s", start="2024.06.29_00:00:00_TAI")
    config = make_mirror(tmp_path, emu.url, [entry])
    run_sync(config, emu.url)
    head = drmstime.format_time(emu.world.now, "TAI")
    rows = assert_catalog_matches_drms(config, emu.url, "hmi.M_720s", f"hmi.M_720s[2024.06.29_00:00:00_TAI-{head}]")
    assert rows >= 2 * 24 * 5 - 5


def test_sync_second_run_is_skipped_by_probe(tmp_path, emu):
    config = make_mirror(tmp_path, emu.url, [SeriesConfig("hmi.M_720s", start="2024.06.29_00:00:00_TAI")])
    run_sync(config, emu.url)
    again = run_sync(config, emu.url)
    assert again.series[0].skipped
    assert again.requests == 1  # series_struct only
    assert again.series[0].new == 0 and again.series[0].records > 0


def test_sync_world_changes_new_reprocessed_deleted(tmp_path):
    with Emulator(state_dir=None, seed=3) as emu:
        entries = [
            SeriesConfig("hmi.M_720s", start="2024.06.25_00:00:00_TAI"),
            SeriesConfig("aia.lev1_euv_12s", start="2024.06.30_20:00:00_TAI", keys={"WAVELNTH": [171]}, cadence="1m"),
        ]
        config = make_mirror(tmp_path, emu.url, entries, chunk_records=400, recheck="6h")
        run_sync(config, emu.url)
        # Deep in the past (outside the re-check window): one reprocessed, one deleted record each.
        old_m = "[2024.06.26_00:00:00_TAI][3]"
        gone_m = "[2024.06.26_01:00:00_TAI][3]"
        emu.world.reprocess("hmi.M_720s", old_m)
        emu.world.delete("hmi.M_720s", gone_m)
        with Catalog(config.catalog_path, read_only=True) as catalog:
            before = dict(catalog.execute("SELECT _key, _recnum FROM kw_hmi_m_720s").fetchall())
            aia_keys = [k for (k,) in catalog.execute("SELECT _key FROM kw_aia_lev1_euv_12s ORDER BY _key LIMIT 3").fetchall()]
        emu.world.reprocess("aia.lev1_euv_12s", aia_keys[1])
        emu.world.delete("aia.lev1_euv_12s", aia_keys[2])
        report = emu.world.next_night()
        result = run_sync(config, emu.url)
        head = drmstime.format_time(emu.world.now, "TAI")
        assert_catalog_matches_drms(config, emu.url, "hmi.M_720s", f"hmi.M_720s[2024.06.25_00:00:00_TAI-{head}]")
        assert_catalog_matches_drms(config, emu.url, "aia.lev1_euv_12s",
                                    f"aia.lev1_euv_12s[2024.06.30_20:00:00_TAI-{head}@1m][171]")
        m = {s.series: s for s in result.series}
        assert m["hmi.M_720s"].deep_scanned and m["hmi.M_720s"].new >= 100
        assert m["hmi.M_720s"].recnums_compared  # a deletion: the count differed, so every RECNUM was compared
        assert m["hmi.M_720s"].reprocessed >= 1 and m["hmi.M_720s"].gone >= 1
        with Catalog(config.catalog_path, read_only=True) as catalog:
            row = catalog.execute("SELECT _recnum, _prev_recnum, _gone_at FROM kw_hmi_m_720s WHERE _key = ?",
                                  [old_m]).fetchall()[0]
            assert row[1] == before[old_m] and row[0] > before[old_m] and row[2] is None
            gone = catalog.execute("SELECT _gone_at FROM kw_hmi_m_720s WHERE _key = ?", [gone_m]).fetchall()[0][0]
            assert gone is not None  # marked, not dropped
            deleted_tonight = [k for k in report["hmi.M_720s"]["deleted"] if k >= "[2024.06.25"]
            for key in deleted_tonight:
                marked = catalog.execute("SELECT _gone_at FROM kw_hmi_m_720s WHERE _key = ?", [key]).fetchall()
                assert not marked or marked[0][0] is not None
            assert catalog.execute("SELECT count(*) FROM kw_aia_lev1_euv_12s WHERE _key = ? AND _gone_at IS NOT NULL",
                                   [aia_keys[2]]).fetchall()[0][0] == 1
            assert catalog.execute("SELECT count(*) FROM hmi_m_720s WHERE _key = ?", [gone_m]).fetchall()[0][0] == 0


def test_sync_selection_change_resyncs(tmp_path, emu):
    entry = SeriesConfig("aia.lev1_uv_24s", start="2024.06.30_12:00:00_TAI", end="2024.06.30_12:30:00_TAI",
                         keys={"WAVELNTH": [1600]})
    config = make_mirror(tmp_path, emu.url, [entry])
    run_sync(config, emu.url)
    entry.keys = {"WAVELNTH": [1600, 1700]}
    config = make_mirror(tmp_path, emu.url, [entry])
    result = run_sync(config, emu.url)
    assert not result.series[0].skipped
    assert_catalog_matches_drms(config, emu.url, "aia.lev1_uv_24s",
                                "aia.lev1_uv_24s[2024.06.30_12:00:00_TAI-2024.06.30_12:30:00_TAI][1600,1700]")


def test_sync_keyword_subset_keeps_prime_keys_and_quality(tmp_path, emu):
    entry = SeriesConfig("hmi.M_720s", start="2024.06.29_00:00:00_TAI", end="2024.06.29_06:00:00_TAI",
                         keywords=["DATAMEAN", "T_OBS"])
    config = make_mirror(tmp_path, emu.url, [entry])
    run_sync(config, emu.url)
    with Catalog(config.catalog_path, read_only=True) as catalog:
        cols = set(catalog.table_columns("kw_hmi_m_720s"))
        n = catalog.execute("SELECT count(*) FROM hmi_m_720s WHERE DATAMEAN IS NOT NULL").fetchall()[0][0]
    assert {"T_REC", "CAMERA", "QUALITY", "DATAMEAN", "T_OBS", "T_REC_str", "T_REC_index"} <= cols
    assert "DATAMEDN" not in cols and n == 31


def test_parse_times_matches_drmstime():
    import pyarrow as pa

    texts = ["2012.01.01_00:00:45_TAI", "2014-01-01T00:00:01Z", "2014-01-01T00:00:01.25Z", "2016.12.31_23:59:60_UTC",
             "2010.05.01_00:00:00_UTC", "-4712.01.01_11:59:28_TAI", "2024.06.30_12:00:07.5_TAI", None, "garbage"]
    tai, ok = parse_times(pa.array(texts, type=pa.string()))
    for text, t, valid in zip(texts, tai, ok):
        if text in (None, "garbage") or text.startswith("-4712"):
            assert not valid
        else:
            assert valid and t == pytest.approx(drmstime.parse_time(text), abs=1e-6), text


def test_rows_to_arrow_hex_and_missing_values():
    sdef = SeriesDef.from_struct({
        "primekeys": ["T_REC"], "segments": [], "links": [],
        "keywords": [
            {"name": "T_REC", "type": "time", "recscope": "ts_eq", "units": "TAI"},
            {"name": "T_REC_epoch", "type": "time", "recscope": "constant", "defval": "1993.01.01_00:00:00_TAI", "units": "TAI"},
            {"name": "T_REC_step", "type": "float", "recscope": "constant", "defval": "720", "units": "secs"},
            {"name": "QUALITY", "type": "int"}, {"name": "X", "type": "float"}, {"name": "S", "type": "short"},
        ]}, name="t.s")
    from jsocmirror.catalog import keyword_columns

    cols = keyword_columns(sdef)
    table = rows_to_arrow({
        "T_REC": ["2024.06.30_00:00:00_TAI", "2024.06.30_00:12:00_TAI"],
        "T_REC_epoch": ["1993.01.01_00:00:00_TAI"] * 2, "T_REC_step": ["720", "720"],
        "QUALITY": ["0x80000000", "0x00000400"], "X": ["nan", "1.5"], "S": ["-32768", "12"],
        "*recnum*": [5, 6], "*sunum*": [7, 8], "*size*": ["10", "20"], "*online*": ["Y", "N"],
    }, cols, sdef)
    d = table.to_pydict()
    assert d["QUALITY"] == [-2147483648, 1024]
    assert d["X"] == [None, 1.5]
    assert d["S"] == [-32768, 12]
    assert d["_key"] == ["[2024.06.30_00:00:00_TAI]", "[2024.06.30_00:12:00_TAI]"]
    assert d["T_REC_index"][1] - d["T_REC_index"][0] == 1
    assert d["_online"] == [True, False] and d["_recnum"] == [5, 6]


@pytest.mark.parametrize("texts", [
    ["2024.06.30_00:00:00_TAI", "2012.01.01_00:00:45_TAI", "1999.12.31_23:59:59_TAI"],
    ["2024-06-30T00:11:21.05Z", "2014-01-01T00:00:01.25Z", "2016-12-31T23:59:59.99Z"],
    ["2015.06.30_23:59:59_UTC", "2015.07.01_00:00:00_UTC", "1980.02.29_12:00:00_UTC"],
])
def test_parse_times_uniform_columns_take_the_positional_path(texts):
    import pyarrow as pa

    from jsocmirror.sync import _fixed_width_times

    fast = _fixed_width_times(pa.array(texts))
    assert fast is not None
    for text, value in zip(texts, fast):
        assert value == pytest.approx(drmstime.parse_time(text), abs=1e-6), text


def test_sync_full_catches_a_deep_deletion_the_probe_cannot_see(tmp_path):
    with Emulator(state_dir=None, seed=5) as emu:
        entry = SeriesConfig("hmi.M_720s", start="2024.06.20_00:00:00_TAI", end="2024.06.22_00:00:00_TAI")
        config = make_mirror(tmp_path, emu.url, [entry], chunk_records=200)
        run_sync(config, emu.url)
        victim = "[2024.06.21_00:00:00_TAI][3]"
        emu.world.delete("hmi.M_720s", victim)
        quick = run_sync(config, emu.url)
        with Catalog(config.catalog_path) as catalog:
            full = sync(config, catalog, JsocClient(emu.url), full=True)
            gone = catalog.execute("SELECT _gone_at FROM kw_hmi_m_720s WHERE _key = ?", [victim]).fetchall()[0][0]
        assert full.series[0].deep_scanned and not full.series[0].skipped
        assert gone is not None
        assert quick.series[0].gone + full.series[0].gone == 1
        assert_catalog_matches_drms(config, emu.url, "hmi.M_720s",
                                    "hmi.M_720s[2024.06.20_00:00:00_TAI-2024.06.22_00:00:00_TAI]")


def test_sync_deep_reprocessing_found_without_scanning_every_recnum(tmp_path):
    with Emulator(state_dir=None, seed=7) as emu:
        entry = SeriesConfig("hmi.M_45s", start="2024.06.29_00:00:00_TAI")
        config = make_mirror(tmp_path, emu.url, [entry], chunk_records=1000, recheck="1h")
        run_sync(config, emu.url)
        key = "[2024.06.29_03:00:00_TAI][2]"
        emu.world.reprocess("hmi.M_45s", key)
        emu.world.advance(3600)
        again = run_sync(config, emu.url)
        s = again.series[0]
        assert s.deep_scanned and not s.recnums_compared
        assert s.reprocessed == 1 and s.new >= 79
        assert s.requests <= 8, s  # probe, head, head chunks, one RECNUM range, one re-fetch, one count
        head = drmstime.format_time(emu.world.now, "TAI")
        assert_catalog_matches_drms(config, emu.url, "hmi.M_45s", f"hmi.M_45s[2024.06.29_00:00:00_TAI-{head}]")


@pytest.mark.parametrize("body, expected", [
    (b'{"keywords":[{"name":"A","values":["x\\"y","z"]},{"name":"*recnum*","values":[1,22]}],'
     b'"segments":[],"links":[],"count":2,"runtime":0.1,"status":0}', {"A": ['x"y', "z"], "*recnum*": ["1", "22"]}),
    (b'{"keywords":[{"name":"NOAA_ARS","values":["12087,12092","",","]},{"name":"Q","values":["0x00000400","1","-2"]}],'
     b'"segments":[],"links":[],"count":3,"runtime":0.1,"status":0}',
     {"NOAA_ARS": ["12087,12092", "", ","], "Q": ["0x00000400", "1", "-2"]}),
    (b'{"keywords":[{"name":"T","values":["caf\xc3\xa9","\xc3\xa0"]}],"count":2,"runtime":0,"status":0}',
     {"T": ["caf\u00e9", "\u00e0"]}),
    (b'{"keywords":[{"name":"T","values":["caf\xe9","x"]}],"count":2,"runtime":0,"status":0}',  # latin-1
     {"T": ["caf\u00e9", "x"]}),
    (b'{"keywords":[{"name":"A","values":["{x","}{","{name"]},{"name":"B","values":[1,2,3]}],'
     b'"count":3,"runtime":0,"status":0}', {"A": ["{x", "}{", "{name"], "B": ["1", "2", "3"]}),
    (b'{"keywords":[{"name":"W","values":["ab","c,","ef"]},{"name":"E","values":["","",""]}],'
     b'"count":3,"runtime":0,"status":0}', {"W": ["ab", "c,", "ef"], "E": ["", "", ""]}),  # one width
    (b'{"count":0,"runtime":0.01,"status":0}', {}),
    (b'{"keywords": [{"name": "A", "values": ["1", "2"]}], "count": 2, "status": 0}', {"A": ["1", "2"]}),
])
def test_rs_list_arrays_decodes_every_shape(body, expected):
    from jsocmirror.jsoc import rs_list_arrays

    columns, count = rs_list_arrays(body, "t.s[]")
    assert {name: values.to_pylist() for name, values in columns.items()} == expected
    assert count == len(next(iter(expected.values()))) if expected else count == 0


def test_rs_list_arrays_error_reply_raises():
    from jsocmirror.errors import JsocError
    from jsocmirror.jsoc import rs_list_arrays

    with pytest.raises(JsocError, match="bad record set"):
        rs_list_arrays(b'{"status":1,"error":"bad record set"}', "x")


def test_sync_jsoc_failure_mid_run_rolls_back_then_resumes(tmp_path):
    from jsocmirror.errors import JsocError

    with Emulator(state_dir=None, seed=2) as emu:
        start, end = "2024.06.28_00:00:00_TAI", "2024.06.28_12:00:00_TAI"
        config = make_mirror(tmp_path, emu.url, [SeriesConfig("hmi.M_45s", start=start, end=end)], chunk_records=100)
        emu.faults.endpoints = "rs_list"
        emu.faults.http_500 = 0.2
        with Catalog(config.catalog_path) as catalog:
            with pytest.raises(JsocError, match="HTTP 500"):
                for _ in range(5):  # the seeded faults hit within a few runs
                    sync(config, catalog, JsocClient(emu.url, retries=0))
            lo, watermark = catalog.q("sync_state_get", series="hmi.M_45s").fetchall()[0][2:4]
            beyond = catalog.execute("SELECT count(*) FROM kw_hmi_m_45s WHERE T_REC_index >= ?", [watermark]).fetchall()
            status = catalog.execute("SELECT status FROM runs ORDER BY started_at DESC LIMIT 1").fetchall()[0][0]
        assert beyond == [(0,)], "rows past the watermark: an uncommitted batch was kept"
        assert status == "failed"
        emu.faults.http_500 = 0.0
        run_sync(config, emu.url)
        assert_catalog_matches_drms(config, emu.url, "hmi.M_45s", f"hmi.M_45s[{start}-{end}]")


class _InterruptedCatalog(Catalog):
    """A catalog whose ``stop_at``-th named query raises KeyboardInterrupt (a Ctrl-C or kill there)."""

    stop_at = 0

    def q(self, name, **params):
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls == self.stop_at:
            raise KeyboardInterrupt(f"interrupted before {name}")
        return super().q(name, **params)


def test_sync_interrupted_before_any_statement_then_resumes_exactly(tmp_path, emu):
    """Stop the first sync before each of its catalog statements in turn; the next sync must be exact.

    Regression: the baseline state used to be written as three statements (reset, finish, begin),
    and a kill between the last two left a "complete" state over an empty table, so every later
    run skipped the series by its unchanged probe.
    """
    start, end = "2024.06.30_20:00:00_TAI", "2024.06.30_23:00:00_TAI"
    ds = f"hmi.M_720s[{start}-{end}]"
    entry = SeriesConfig("hmi.M_720s", start=start, end=end)
    counting = make_mirror(tmp_path / "count", emu.url, [entry])
    with _InterruptedCatalog(counting.catalog_path) as catalog:
        sync(counting, catalog, JsocClient(emu.url))
        statements = catalog.calls
    assert statements >= 4
    for stop_at in range(1, statements + 1):
        config = make_mirror(tmp_path / f"stop{stop_at}", emu.url, [entry])
        with _InterruptedCatalog(config.catalog_path) as catalog:
            catalog.stop_at = stop_at
            with pytest.raises(KeyboardInterrupt):
                sync(config, catalog, JsocClient(emu.url))
        run_sync(config, emu.url)
        assert assert_catalog_matches_drms(config, emu.url, "hmi.M_720s", ds) == 16, f"stopped at statement {stop_at}"
