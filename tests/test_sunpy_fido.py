"""sunpy's real Fido over mirrors built from the emulator: search, routing, fetch (no socket), fetch-missing."""

from __future__ import annotations

import os
import re
import socket
from contextlib import contextmanager
from pathlib import Path

import astropy.units as u
import pytest
from conftest import quick_emulator, sync_mirror
import pytest_socket
from sunpy.net import Fido
from sunpy.net import attrs as a
from sunpy.net.jsoc import JSOCClient

import jsocmirror
import jsocmirror.sunpy
from jsocmirror.catalog import Catalog
from jsocmirror.diff import layout_for_config, series_definitions
from jsocmirror.emulator import Emulator
from jsocmirror.errors import UsageError
from jsocmirror.publish import publish
from jsocmirror.scan import scan_tree
from jsocmirror.sunpy import MirrorClient, NotInMirror

from test_update import make_mirror, options
from jsocmirror.update import update_mirror

DOC = Path(__file__).resolve().parent.parent / "docs" / "sunpy.md"
HMI_WINDOW = a.Time("2024-06-30 21:00", "2024-07-01 00:00")  # the whole HMI window: 16 slots


@pytest.fixture(scope="module")
def emu():
    with quick_emulator() as emulator:
        yield emulator


@pytest.fixture(scope="module")
def mirror(tmp_path_factory, emu):
    """A mirror with every file of its two series (HMI 3 h, AIA 171 every minute for 15 min)."""
    config = make_mirror(tmp_path_factory.mktemp("fido") / "m", emu.url)
    summary = update_mirror(config, emu.url, options())
    assert summary.exit_code == 0, summary.render()
    return config


@pytest.fixture(autouse=True)
def _no_routing():
    yield
    jsocmirror.sunpy.stop_using()


@contextmanager
def no_network(allow_unix_socket: bool = True):
    """No socket but (by default) AF_UNIX: Fido.fetch starts parfive's event loop, whose self-pipe is
    a socketpair, even with nothing queued."""
    pytest_socket.disable_socket(allow_unix_socket=allow_unix_socket)
    try:
        yield
    finally:
        socket.socket = pytest_socket._true_socket
        socket.getaddrinfo = pytest_socket._true_getaddrinfo
        socket.gethostbyname = pytest_socket._true_gethostbyname


def rescan(config) -> None:
    """What `jsocmirror scan` does: inventory the data root, then publish for readers."""
    with Catalog(config.catalog_path) as catalog:
        scan_tree(catalog, config.data_root, layout_for_config(config, series_definitions(catalog)))
        publish(catalog, config)


def clients_for(*query) -> list[type]:
    return Fido._check_registered_widgets(*query)


def sql_keys(config, sql: str) -> list[str]:
    with jsocmirror.open(config.mirror_dir) as m:
        return [r[0] for r in m.sql(sql).fetchall()]


# -- search ----------------------------------------------------------------------------------------
def test_search_hmi_by_time_series_segment_keyword_and_sample(mirror):
    res = Fido.search(a.jsocmirror.Mirror(mirror.mirror_dir), HMI_WINDOW, a.jsoc.Series("hmi.M_720s"),
                      a.jsoc.Segment("magnetogram"), a.jsoc.Keyword("QUALITY") == 0, a.Sample(1 * u.hour))
    assert len(res) == 1 and isinstance(res[0].client, MirrorClient)
    table = res[0]
    # JSOC's [start-end@1h]: start 21:00 UTC is the 21:00:00_TAI slot, end 00:00 UTC the 00:00:00_TAI one
    assert list(table["T_REC"]) == ["2024.06.30_21:00:00_TAI", "2024.06.30_22:00:00_TAI",
                                    "2024.06.30_23:00:00_TAI", "2024.07.01_00:00:00_TAI"]
    assert set(table["state"]) == {"present"} and set(table["segment"]) == {"magnetogram"}
    assert list(table["QUALITY"]) == [0] * 4 and list(table["WAVELNTH"]) == [6173.0] * 4
    root = Path(mirror.data_root)
    for t_rec, path in zip(table["T_REC"], table["path"]):
        compact = t_rec.replace(".", "").replace(":", "")[:15] + "_TAI"
        assert path == str(root / "hmi.M_720s" / t_rec[:4] / t_rec[5:7] / t_rec[8:10] /
                           f"hmi.m_720s.{compact}.3.magnetogram.fits") and os.path.isfile(path)
    # the keywords are all there (hidden from the default display, shown by .show())
    assert {"DATE__OBS", "T_OBS", "CAMERA", "DATAMEAN", "_key", "_recnum"} <= set(table.colnames)
    assert table["DATE__OBS"][0].isot.startswith("2024-06-30T20:59")  # time keywords are astropy Time (UTC)
    shown = str(res)
    assert "MirrorClient" in shown and "present" in shown and "DATAMEAN" not in shown
    assert f"Source: jsocmirror mirror {mirror.mirror_dir} (local, no network)" in shown


def test_search_keyword_comparisons_match_the_catalog(mirror):
    median = sql_keys(mirror, "SELECT median(DATAMEAN) FROM hmi_m_720s")[0]
    res = Fido.search(a.jsocmirror.Mirror(mirror.mirror_dir), a.jsoc.Series("hmi.M_720s"),
                      a.jsoc.Keyword("DATAMEAN") > median, a.jsoc.Keyword("QUALITY") >= "0x0")
    expected = sql_keys(mirror, f"SELECT _key FROM hmi_m_720s WHERE DATAMEAN > {median!r} ORDER BY _key")
    assert 0 < len(res[0]) < 16 and list(res[0]["_key"]) == expected
    prime = Fido.search(a.jsocmirror.Mirror(mirror.mirror_dir), a.jsoc.Series("hmi.M_720s"),
                        a.jsoc.PrimeKey("T_REC", "2024.06.30_22:00:00_TAI"))
    assert list(prime[0]["T_REC"]) == ["2024.06.30_22:00:00_TAI"]
    two = Fido.search(a.jsocmirror.Mirror(mirror.mirror_dir), a.jsoc.Series("hmi.M_720s"),
                      a.jsoc.PrimeKey("T_REC", ["2024.06.30_23:00:00_TAI", "2024.06.30_22:00:00_TAI"]),
                      a.jsoc.PrimeKey("CAMERA", 3))
    assert list(two[0]["T_REC"]) == ["2024.06.30_22:00:00_TAI", "2024.06.30_23:00:00_TAI"]
    # HMI's WAVELNTH is a keyword (6173.0): one wavelength matches to the nearest angstrom, a range inclusive
    mm, hmi = a.jsocmirror.Mirror(mirror.mirror_dir), a.jsoc.Series("hmi.M_720s")
    assert len(Fido.search(mm, hmi, a.Wavelength(6173 * u.AA))[0]) == 16
    assert len(Fido.search(mm, hmi, a.Wavelength(617.3 * u.nm, 620 * u.nm))[0]) == 16
    assert len(Fido.search(mm, hmi, a.Wavelength(6174 * u.AA))[0]) == 0


def test_search_aia_wavelength_time_and_sample(mirror):
    mm = a.jsocmirror.Mirror(mirror.mirror_dir)
    res = Fido.search(mm, a.jsoc.Series("aia.lev1_euv_12s"), a.Wavelength(171 * u.AA),
                      a.Time("2024-06-30 23:50", "2024-06-30 23:55"))
    table = res[0]
    # AIA records print a second before their slot: 23:49:59Z is the 23:50:00 slot, as JSOC selects it
    assert list(table["T_REC"]) == [f"2024-06-30T23:{m}:59Z" for m in range(49, 55)]
    assert set(table["WAVELNTH"]) == {171} and set(table["segment"]) == {"image"}
    assert all(p.endswith(".171.image.fits") and os.path.isfile(p) for p in table["path"])
    sampled = Fido.search(mm, a.jsoc.Series("aia.lev1_euv_12s"), a.Time("2024-06-30 23:50", "2024-06-30 23:59"),
                          a.Sample(2 * u.min))
    assert list(sampled[0]["T_REC"]) == [f"2024-06-30T23:{m}:59Z" for m in (49, 51, 53, 55, 57)]
    # a wavelength the mirror does not keep: no rows (the mirror answers what it holds)
    assert len(Fido.search(mm, a.jsoc.Series("aia.lev1_euv_12s"), a.Wavelength(193 * u.AA))[0]) == 0
    # an OR gives one table per block
    both = Fido.search(mm, a.jsoc.Series("aia.lev1_euv_12s") & (a.Wavelength(171 * u.AA) | a.Wavelength(193 * u.AA)))
    assert [len(t) for t in both] == [15, 0]


def test_search_errors_are_one_line(mirror, monkeypatch):
    mm = a.jsocmirror.Mirror(mirror.mirror_dir)
    cases = [
        ((mm, a.jsoc.Series("hmi.M_45s")), "does not keep hmi.M_45s (it keeps: hmi.M_720s, aia.lev1_euv_12s)"),
        ((mm, a.Time("2024-06-30", "2024-07-01")), "say which series"),
        ((mm, a.jsoc.Series("hmi.M_720s"), a.jsoc.Keyword("NOPE") == 1), "has no keyword 'NOPE'"),
        ((mm, a.jsoc.Series("hmi.M_720s"), a.jsoc.Segment("bitmap")), "no segment 'bitmap'"),
        ((mm, a.jsoc.Series("hmi.M_720s"), a.jsoc.Keyword("QUALITY") == "bad"), "QUALITY is a number keyword"),
        ((mm, a.jsoc.Series("hmi.M_720s"), a.jsoc.Keyword("QUALITY")), "needs a comparison"),
    ]
    for query, message in cases:
        with pytest.raises(UsageError, match=re.escape(message)) as info:
            Fido.search(*query)
        assert "\n" not in str(info.value)
    monkeypatch.delenv("JSOCMIRROR_MIRROR", raising=False)
    with pytest.raises(UsageError, match="which mirror"):
        Fido.search(a.jsocmirror.Mirror(), a.jsoc.Series("hmi.M_720s"))
    monkeypatch.setenv("JSOCMIRROR_MIRROR", str(mirror.mirror_dir))
    assert len(Fido.search(a.jsocmirror.Mirror(), a.jsoc.Series("hmi.M_720s"))[0]) == 16


def test_sample_takes_each_interval_first_slot_per_channel_and_skips_per_record_keys():
    """a.Sample on synthetic rows: a gap's interval takes its next slot; FSN (one per record) is no channel."""
    import duckdb

    from jsocmirror.series import builtin_series
    from jsocmirror.sunpy._query import SampleSql, parse_query

    registry = builtin_series()
    con = duckdb.connect()
    # hmi.sharp_720s: HARPs 1 and 2, slots 0..11 (12 min each), HARP 2 lacking slots 0 and 5
    rows = [(h, i, "magnetogram") for h in (1, 2) for i in range(12) if not (h == 2 and i in (0, 5))]
    rel = con.sql("SELECT * FROM (VALUES " + ", ".join(map(str, rows)) + ") AS t(HARPNUM, T_REC_index, segment)")
    sharp = registry.get("hmi.sharp_720s")
    sample = SampleSql(parse_query([a.Sample(1 * u.hour)]), sharp, sharp.keyword("T_REC"))
    unique = list(rel.query("r", sample.unique_check()).fetchall()[0])
    kept = sorted(rel.query("r", sample.select(unique)).fetchall())
    assert kept == [(1, 0, "magnetogram"), (1, 5, "magnetogram"), (1, 10, "magnetogram"),
                    (2, 1, "magnetogram"), (2, 6, "magnetogram"), (2, 10, "magnetogram")]
    # aia.lev1: 1 s slots, FSN unique per record; @12s keeps all records of each interval's first slot
    lev1 = registry.get("aia.lev1")
    rows = [(1000 + n, i, "image") for n, i in enumerate([0, 0, 5, 12, 13, 25, 30])]
    rel = con.sql("SELECT * FROM (VALUES " + ", ".join(map(str, rows)) + ") AS t(FSN, T_REC_index, segment)")
    sample = SampleSql(parse_query([a.Sample(12 * u.s)]), lev1, lev1.keyword("T_REC"))
    unique = list(rel.query("r", sample.unique_check()).fetchall()[0])
    assert unique == [True]
    assert sorted(r[1] for r in rel.query("r", sample.select(unique)).fetchall()) == [0, 0, 12, 25]


# -- routing ---------------------------------------------------------------------------------------
def test_routing_mirror_attr_use_and_plain_jsoc_queries(mirror):
    hmi = (a.Time("2024-06-30 21:00", "2024-06-30 22:00"), a.jsoc.Series("hmi.M_720s"))
    # importing jsocmirror.sunpy changes no query's routing: plain a.jsoc queries still go to JSOC
    assert clients_for(*hmi) == [JSOCClient]
    # a.jsocmirror.Mirror: the mirror alone (JSOC and the VSO decline an attr they do not know)
    assert clients_for(*hmi, a.jsocmirror.Mirror(mirror.mirror_dir)) == [MirrorClient]
    # use(): the series the mirror keeps go to the mirror instead of JSOC, the others stay with JSOC
    jsocmirror.sunpy.use(mirror.mirror_dir)
    assert clients_for(*hmi) == [MirrorClient]
    assert clients_for(*hmi, a.jsoc.Notify("me@example.org")) == [MirrorClient]  # JSOC's e-mail: ignored
    assert clients_for(hmi[0], a.jsoc.Series.hmi_m_720s) == [MirrorClient]  # sunpy's registered name: hmi.m_720s
    assert clients_for(a.Time("2024-06-30", "2024-07-01"), a.jsoc.Series("hmi.M_45s")) == [JSOCClient]
    assert clients_for(*hmi, a.jsoc.Protocol("fits")) == [JSOCClient]  # not something the mirror does
    with no_network(allow_unix_socket=False):  # a search opens no socket of any kind
        res = Fido.search(*hmi, a.jsoc.Segment("magnetogram"))
    assert len(res) == 1 and len(res[0]) == 6 and isinstance(res[0].client, MirrorClient)
    assert list(Fido.search(hmi[0], a.jsoc.Series.hmi_m_720s)[0]["T_REC"]) == list(res[0]["T_REC"])
    jsocmirror.sunpy.stop_using()
    assert clients_for(*hmi) == [JSOCClient]
    with jsocmirror.sunpy.use(mirror.mirror_dir):
        assert clients_for(*hmi) == [MirrorClient]
    assert clients_for(*hmi) == [JSOCClient]


# -- fetch -----------------------------------------------------------------------------------------
def test_fetch_returns_the_local_paths_without_any_socket(mirror, tmp_path):
    res = Fido.search(a.jsocmirror.Mirror(mirror.mirror_dir), a.jsoc.Series("aia.lev1_euv_12s"),
                      a.Wavelength(171 * u.AA))
    with no_network():
        files = Fido.fetch(res, path=tmp_path / "{file}", progress=False)
    assert list(files) == list(res[0]["path"]) and len(files) == 15 and not files.errors
    assert not list(tmp_path.iterdir())  # nothing copied, nothing downloaded
    with no_network(allow_unix_socket=False):  # the client itself creates no socket of any kind
        one = MirrorClient().fetch(res[0][3])  # a row, straight from the client
        assert list(MirrorClient().fetch(res[0])) == list(files)
    assert list(one) == [res[0]["path"][3]]


def test_missing_records_are_listed_and_fetch_missing_lands_them_in_the_layout(tmp_path):
    with Emulator(state_dir=None, seed=3) as emu:  # its own world: this test reprocesses a record
        emu.exports.config.timing.wait_hint = 0
        _missing_and_fetch_missing(tmp_path, emu)


def _missing_and_fetch_missing(tmp_path, emu):
    config = make_mirror(tmp_path / "m", emu.url)
    summary = update_mirror(config, emu.url, options(series=["hmi.M_720s"]))  # AIA's window stays a gap
    assert summary.exit_code == 0, summary.render()
    hmi = Fido.search(a.jsocmirror.Mirror(config.mirror_dir), a.jsoc.Series("hmi.M_720s"), HMI_WINDOW)[0]
    gone, stale = Path(hmi["path"][2]), Path(hmi["path"][7])
    gone.unlink()
    Path(hmi["path"][5]).unlink()
    emu.world.reprocess("hmi.M_720s", str(hmi["_key"][7]))
    sync_mirror(config, emu.url)  # sync both series, download nothing
    with Catalog(config.catalog_path) as catalog:  # and one record JSOC has no image for
        catalog.execute("UPDATE kw_hmi_m_720s SET QUALITY = -2147483648, _synced_at = now() WHERE _key = $k",
                        {"k": str(hmi["_key"][5])})
    rescan(config)
    res = Fido.search(a.jsocmirror.Mirror(config.mirror_dir), a.jsoc.Series("hmi.M_720s"), HMI_WINDOW)
    states = list(res[0]["state"])
    assert (states[2], states[5], states[7]) == ("missing", "no_image", "stale") and states.count("present") == 13
    assert res[0]["path"].mask[2] and res[0]["path"].mask[5] and res[0]["path"][7] == str(stale)
    present = [p for p, s in zip(res[0]["path"], states) if s == "present"]
    with no_network():
        files = Fido.fetch(res, progress=False)
    assert list(files) == present
    assert [e.url for e in files.errors] == [f"hmi.M_720s{res[0]['_key'][i]}{{magnetogram}}" for i in (2, 7)]
    assert all(isinstance(e.exception, NotInMirror) for e in files.errors)
    assert ": missing in the mirror" in str(files.errors[0].exception)
    assert ": stale in the mirror" in str(files.errors[1].exception)
    # AIA: every record missing; fetch just the sampled ones through the mirror's own stage/download
    aia = Fido.search(a.jsocmirror.Mirror(config.mirror_dir), a.jsoc.Series("aia.lev1_euv_12s"), a.Sample(5 * u.min))
    assert aia[0]["state"].tolist() == ["missing"] * 3  # docs/sunpy.md's pycon session, step by step
    assert aia[0]["_key"][0] == "[2024-06-30T23:44:59Z][171]"  # the first record anchors a.Sample without a.Time
    assert repr(Fido.fetch(aia, progress=False).errors[0].exception) == (
        f"NotInMirror('aia.lev1_euv_12s[2024-06-30T23:44:59Z][171]{{image}}: missing in the mirror "
        f"{config.mirror_dir} (Fido.fetch(..., fetch_missing=True) fetches it)')")
    exports, stale_bytes = len(emu.exports.store.all()), stale.read_bytes()
    files = Fido.fetch(res, aia, fetch_missing=True, progress=False)
    assert not files.errors and len(files) == 15 + 3
    assert len(emu.exports.store.all()) == exports + 1  # AIA through one export, as the nightly job does it
    assert gone.is_file() and str(gone) in files and stale.read_bytes() != stale_bytes  # the new version
    after = Fido.search(a.jsocmirror.Mirror(config.mirror_dir), a.jsoc.Series("aia.lev1_euv_12s"))[0]
    fetched = {k for k, s in zip(after["_key"], after["state"]) if s == "present"}
    assert fetched == set(aia[0]["_key"])  # exactly the result's records, nothing else
    assert Fido.search(a.jsocmirror.Mirror(config.mirror_dir), a.jsoc.Series("aia.lev1_euv_12s"),
                       a.Sample(5 * u.min))[0]["state"].tolist() == ["present"] * 3
    assert all(Path(p).is_relative_to(Path(config.data_root) / "aia.lev1_euv_12s")
               for p in after["path"][~after["path"].mask])
    again = Fido.search(a.jsocmirror.Mirror(config.mirror_dir), a.jsoc.Series("hmi.M_720s"), HMI_WINDOW)[0]
    assert list(again["state"]).count("present") == 15 and again["state"][5] == "no_image"
    assert not [p for p in Path(config.data_root).rglob("*") if p.name.startswith(".")]  # no temporaries left
    # a record the server cannot deliver: fetch_missing says why, the file stays missing
    lost = Path(again["path"][9])
    lost.unlink()
    rescan(config)
    emu.faults.mark_missing("hmi.M_720s", int(again["_recnum"][9]))
    res = Fido.search(a.jsocmirror.Mirror(config.mirror_dir), a.jsoc.Series("hmi.M_720s"), HMI_WINDOW)
    files = Fido.fetch(res, fetch_missing=True, progress=False)
    assert len(files) == 14 and [e.url for e in files.errors] == [f"hmi.M_720s{again['_key'][9]}{{magnetogram}}"]
    message = str(files.errors[0].exception)
    assert ": missing in the mirror" in message and "the mirror's fetch failed: " in message and "404" in message
    assert "\n" not in message
    assert not lost.exists()


# -- docs/sunpy.md -----------------------------------------------------------------------------------
def test_docs_python_blocks_run(mirror, monkeypatch, tmp_path):
    """Every ```python block of docs/sunpy.md runs, in order, against a mirror at /data/sdo's place."""
    text = DOC.read_text(encoding="utf-8")
    blocks = list(re.finditer(r"```python\n(.*?)```", text, re.S))
    assert len(blocks) >= 4
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        line = text.count("\n", 0, block.start(1))  # so a traceback names the doc's own line
        code = "\n" * line + block.group(1).replace('"/data/sdo"', repr(str(mirror.mirror_dir)))
        with no_network():
            exec(compile(code, str(DOC), "exec"), namespace)  # noqa: S102 - our own docs
