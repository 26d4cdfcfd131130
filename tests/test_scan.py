"""scan: local and memory roots, incremental re-scans, damage of every kind, --verify."""

from __future__ import annotations

import io
import os

import fsspec
import numpy as np
import pytest
from astropy.io import fits
from hypothesis import given, settings, strategies as st

from jsocmirror.catalog import Catalog
from jsocmirror.layout import Layout
from jsocmirror.scan import record_landed_file, scan_tree, verify_file
from jsocmirror.series import builtin_series

REGISTRY = builtin_series()
LAYOUT = Layout(REGISTRY)


def fits_bytes(series="hmi.M_720s", t_rec="2024.01.01_00:00:00.000_TAI", camera=3, recnum=100, segment="magnetogram",
               checksum=True) -> bytes:
    """A small file shaped like a JSOC export: empty primary HDU, RICE image HDU with the keywords."""
    comp = fits.CompImageHDU(np.arange(64, dtype=np.int32).reshape(8, 8), compression_type="RICE_1")
    comp.header["T_REC"] = t_rec
    comp.header["CAMERA"] = camera
    if recnum is not None:  # as-is files from SUMS carry no RECNUM
        comp.header["RECNUM"] = recnum
        comp.header["DRMS_ID"] = f"{series}:{recnum}:{segment}"
    out = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), comp]).writeto(out, checksum=checksum)
    return out.getvalue()


def put(root, relpath: str, data: bytes = b"x") -> str:
    path = os.path.join(root, relpath)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return path


def m720(minute: int, camera: int = 3) -> str:
    return LAYOUT.relative_path("hmi.M_720s", [f"2024.01.01_00:{minute:02d}:00_TAI", camera], "magnetogram")


@pytest.fixture
def catalog(tmp_path):
    with Catalog(tmp_path / "catalog.duckdb") as cat:
        yield cat


@pytest.fixture
def root(tmp_path):
    path = tmp_path / "data"
    path.mkdir()
    return str(path)


def rows(catalog):
    return {r[0]: r[1:] for r in catalog.execute(
        "SELECT path, series, record_key, segment, size, state FROM local_files").fetchall()}


def test_scan_tree_inventories_layout_files_and_reports_the_rest(catalog, root, tmp_path):
    put(root, m720(0))
    put(root, m720(12), b"")  # zero bytes
    put(root, "hmi.M_720s/2024/01/01/hmi.m_720s.20240101_000000_TAI.03.magnetogram.fits")  # near miss
    put(root, "hmi.M_720s/2024/01/02/hmi.m_720s.20240101_000000_TAI.3.magnetogram.fits")  # wrong day dir
    put(root, "README.txt")
    put(root, "hmi.M_720s/2024/01/01/x.fits.part")  # a download in progress
    outside = tmp_path / "secret.fits"
    outside.write_bytes(b"secret")
    os.symlink(outside, os.path.join(root, "hmi.M_720s", "link.fits"))
    os.symlink(os.path.join(root, "nowhere"), os.path.join(root, "broken.fits"))
    os.mkfifo(os.path.join(root, "pipe.fits"))
    before = sorted(os.listdir(root))
    result = scan_tree(catalog, root, LAYOUT)
    got = rows(catalog)
    assert got[m720(0)] == ("hmi.M_720s", "[2024.01.01_00:00:00_TAI][3]", "magnetogram", 1, "layout")
    assert got[m720(12)][-1] == "empty"
    assert got["hmi.M_720s/2024/01/01/hmi.m_720s.20240101_000000_TAI.03.magnetogram.fits"][-1] == "near_miss"
    assert got["hmi.M_720s/2024/01/02/hmi.m_720s.20240101_000000_TAI.3.magnetogram.fits"][-1] == "near_miss"
    assert got["README.txt"][-1] == "unknown"
    assert got["hmi.M_720s/link.fits"][-1] == "symlink_out"
    assert got["broken.fits"][-1] == "unreadable"
    assert got["pipe.fits"][-1] == "special"
    assert not any(p.endswith(".part") for p in got)
    assert result.by_state == {"layout": 1, "empty": 1, "near_miss": 2, "unknown": 1, "symlink_out": 1,
                               "special": 1, "unreadable": 1}
    assert sorted(os.listdir(root)) == before and outside.read_bytes() == b"secret"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads everything")
def test_scan_tree_unreadable_directory_is_reported_not_fatal(catalog, root):
    put(root, m720(0))
    locked = os.path.join(root, "hmi.M_720s", "2024", "02")
    put(root, os.path.join("hmi.M_720s", "2024", "02", "x.fits"))
    os.chmod(locked, 0)
    try:
        result = scan_tree(catalog, root, LAYOUT)
    finally:
        os.chmod(locked, 0o755)
    assert result.by_state["unreadable"] == 1 and result.by_state["layout"] == 1


def test_scan_tree_rescan_lists_only_changed_directories(catalog, root):
    for minute in (0, 12, 24):
        put(root, m720(minute))
    put(root, LAYOUT.relative_path("hmi.M_720s", ["2024.01.02_00:00:00_TAI", 3], "magnetogram"))
    first = scan_tree(catalog, root, LAYOUT)
    assert first.by_state == {"layout": 4}
    again = scan_tree(catalog, root, LAYOUT)
    assert again.dirs_listed == 0 and again.by_state == {"layout": 4}
    os.remove(os.path.join(root, m720(12)))
    put(root, m720(36))
    third = scan_tree(catalog, root, LAYOUT)
    assert third.dirs_listed == 1  # only 2024/01/01
    assert (third.added, third.removed) == (1, 1)
    assert set(rows(catalog)) == {m720(0), m720(24), m720(36),
                                  LAYOUT.relative_path("hmi.M_720s", ["2024.01.02_00:00:00_TAI", 3], "magnetogram")}
    import shutil

    shutil.rmtree(os.path.join(root, "hmi.M_720s", "2024", "01", "02"))
    fourth = scan_tree(catalog, root, LAYOUT)
    assert fourth.by_state == {"layout": 3} and fourth.removed == 1


def test_scan_tree_verify_classifies_damage(catalog, root):
    good = fits_bytes()
    put(root, m720(0), good)
    bad_sum = bytearray(fits_bytes(t_rec="2024.01.01_00:12:00.000_TAI", recnum=101))
    bad_sum[-200] ^= 0xFF
    put(root, m720(12), bytes(bad_sum))
    put(root, m720(24), fits_bytes(t_rec="2024.01.01_00:24:00.000_TAI")[:4000])  # truncated
    put(root, m720(36), b"this is not FITS at all" * 200)
    put(root, m720(48), fits_bytes(t_rec="2024.01.01_05:00:00.000_TAI"))  # header says another record
    put(root, m720(48, camera=2), fits_bytes(t_rec="2024.01.01_00:48:00.000_TAI", camera=2, segment="field"))
    result = scan_tree(catalog, root, LAYOUT, verify=True)
    states = dict(catalog.execute("SELECT path, verify_state FROM local_files").fetchall())
    assert states[m720(0)] == "ok"
    assert states[m720(12)] == "bad_datasum"
    assert states[m720(24)] == "truncated"
    assert states[m720(36)] == "not_fits"
    assert states[m720(48)] == "header_mismatch"
    assert states[m720(48, camera=2)] == "header_mismatch"
    assert result.verified == 6
    recnum = catalog.execute("SELECT header_recnum, checksum, datasum FROM file_checks WHERE path = ?", [m720(0)]).fetchall()
    assert recnum == [(100, "ok", "ok")]
    # nothing changed: nothing re-read; a changed file is re-read
    assert scan_tree(catalog, root, LAYOUT, verify=True).verified == 0
    put(root, m720(12), fits_bytes(t_rec="2024.01.01_00:12:00.000_TAI", recnum=150))
    assert scan_tree(catalog, root, LAYOUT, verify=True).verified == 1
    assert catalog.execute("SELECT verify_state, file_recnum FROM local_files WHERE path = ?", [m720(12)]).fetchall() == [("ok", 150)]
    assert catalog.execute("SELECT verify_state, header_recnum FROM file_checks WHERE path = ?", [m720(12)]).fetchall() == [("ok", 150)]


def test_verify_file_matches_astropy_on_the_real_export_fixture():
    fixture = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "fixtures", "headers", "aia_171_cutout.fits")
    if not os.path.exists(fixture):
        pytest.skip("shared fixtures absent")
    parsed = LAYOUT.parse(LAYOUT.relative_path("aia.lev1_euv_12s", ["2013-03-10T12:00:01Z", 171], "image"))
    with open(fixture, "rb") as f:
        outcome = verify_file(f, parsed, LAYOUT)
    with fits.open(fixture, checksum=True) as hdul:  # astropy agrees the sums are right
        assert hdul[1].header["RECNUM"] == 49010523
    # a processed (_mod) export's RECNUM is not this series' RECNUM
    assert (outcome.verify_state, outcome.checksum, outcome.datasum, outcome.header_recnum) == ("ok", "ok", "ok", None)


def test_record_landed_file_survives_rescan_until_the_file_changes(catalog, root):
    put(root, m720(0), fits_bytes())
    record_landed_file(catalog, root, m720(0), 100, LAYOUT)

    def known():
        return catalog.execute("SELECT f.file_recnum, c.fetched_recnum FROM local_files f "
                               "LEFT JOIN file_checks c USING (path)").fetchall()

    scan_tree(catalog, root, LAYOUT)
    assert known() == [(100, 100)]
    scan_tree(catalog, root, LAYOUT, full=True)
    assert known() == [(100, 100)]
    put(root, m720(0), fits_bytes() + b"\0" * 2880)
    scan_tree(catalog, root, LAYOUT, full=True)
    assert known() == [(None, None)]
    assert catalog.execute("SELECT count(*) FROM file_checks").fetchall() == [(0,)]


def test_a_vanished_file_takes_its_checks_along(catalog, root):
    """A file removed and another written under its name must not inherit the old one's RECNUM
    or verification."""
    put(root, m720(0), fits_bytes())
    put(root, m720(12), fits_bytes(t_rec="2024.01.01_00:12:00.000_TAI"))
    scan_tree(catalog, root, LAYOUT, verify=True)
    record_landed_file(catalog, root, m720(12), 7, LAYOUT)
    assert catalog.execute("SELECT count(*) FROM file_checks").fetchall() == [(2,)]
    os.remove(os.path.join(root, m720(0)))
    os.remove(os.path.join(root, m720(12)))
    assert scan_tree(catalog, root, LAYOUT).removed == 2
    assert catalog.execute("SELECT count(*) FROM file_checks").fetchall() == [(0,)]
    put(root, m720(12), fits_bytes(t_rec="2024.01.01_00:12:00.000_TAI"))
    scan_tree(catalog, root, LAYOUT)
    assert catalog.execute("SELECT verify_state, file_recnum FROM local_files").fetchall() == [(None, None)]
    assert catalog.execute("SELECT count(*) FROM file_checks").fetchall() == [(0,)]
    assert scan_tree(catalog, root, LAYOUT, verify=True).verified == 1  # the new file is read, not trusted


def test_scan_tree_memory_filesystem(catalog):
    fs = fsspec.filesystem("memory")
    fs.rm("/h5scan", recursive=True) if fs.exists("/h5scan") else None
    fs.pipe("/h5scan/" + m720(0), fits_bytes())
    fs.pipe("/h5scan/" + m720(12), b"")
    fs.pipe("/h5scan/notes.txt", b"n")
    result = scan_tree(catalog, "memory://h5scan", LAYOUT, verify=True)
    assert result.by_state == {"layout": 1, "empty": 1, "unknown": 1}
    assert catalog.execute("SELECT verify_state FROM local_files WHERE path = ?", [m720(0)]).fetchall() == [("ok",)]
    fs.rm("/h5scan/" + m720(0))
    assert scan_tree(catalog, "memory://h5scan", LAYOUT).by_state == {"empty": 1, "unknown": 1}
    fs.rm("/h5scan", recursive=True)


def test_scan_tree_first_scan_in_chunks_matches_one_batch(tmp_path, root, monkeypatch):
    """A first scan inserts from a writer thread in row-group chunks; the inventory is the same."""
    from jsocmirror import scan as scan_mod

    for minute in range(0, 60, 12):
        for camera in (2, 3):
            put(root, m720(minute, camera))
    put(root, "hmi.M_720s/2024/01/02/hmi.m_720s.20240101_000000_TAI.3.magnetogram.fits")  # wrong day dir
    put(root, "notes.txt")
    with Catalog(tmp_path / "one.duckdb") as one:
        scan_tree(one, root, LAYOUT)
        expected = rows(one)
    monkeypatch.setattr(scan_mod, "SINK_CHUNK", 2)
    monkeypatch.setattr(scan_mod, "ROW_GROUP", 3)
    with Catalog(tmp_path / "chunked.duckdb") as chunked:
        result = scan_tree(chunked, root, LAYOUT)
        assert rows(chunked) == expected and len(expected) == 12
        assert result.added == 12 and result.by_state == {"layout": 10, "near_miss": 1, "unknown": 1}
        put(root, m720(59, 2), b"")
        again = scan_tree(chunked, root, LAYOUT)  # not a first scan: merged, as before
        assert again.added == 1 and rows(chunked)[m720(59, 2)][-1] == "empty"


def _messy_tree(root: str) -> None:
    """Layout files of several templates and every kind of name the fast matcher must hand back."""
    for minute in range(0, 60, 12):
        put(root, m720(minute))
        put(root, LAYOUT.relative_path("aia.lev1_euv_12s", [f"2024-01-01T10:{minute:02d}:11Z", 171], "image"))
        put(root, LAYOUT.relative_path("hmi.sharp_cea_720s", [11465, f"2024.06.28_00:{minute:02d}:00_TAI"],
                                       "magnetogram"))
    day = "hmi.M_720s/2024/01/01/"
    put(root, day + "hmi.m_720s.20240101_000000_TAI.03.magnetogram.fits")  # near miss (leading zero)
    put(root, day + "hmi.m_720s.20240102_000000_TAI.3.magnetogram.fits")  # another day's name in this day
    put(root, day + "hmi.m_720s.20240101_001200_TAI.3.bogus.fits")  # no such segment
    put(root, day + "hmi.m_720s.20240101_002400_TAI.3.magnetogram.fits.part")  # a download in progress
    put(root, day + ".hidden.fits")
    put(root, day + "notes.txt")
    put(root, day + "hmi.m_720s.20240101_\u0664\u0668\u0660\u0660_TAI.3.magnetogram.fits")  # non-ASCII digits
    os.symlink(os.path.join(root, m720(0)), os.path.join(root, day + "hmi.m_720s.20240101_003600_TAI.2.magnetogram.fits"))
    newline_day = "hmi.M_720s/2024/01/02/"
    put(root, newline_day + "hmi.m_720s.20240102_000000_TAI.3.magnetogram.fits")
    put(root, newline_day + "odd\nname.fits")  # a newline: this directory is matched the slow way


def test_names_only_scan_classifies_exactly_like_the_full_scan(tmp_path, root):
    """--names-only matches whole directories in Arrow off the walking thread; the result must be
    the full scan's, name for name (sizes and mtimes aside), on a first scan and on a re-scan."""
    _messy_tree(root)
    with Catalog(tmp_path / "full.duckdb") as full, Catalog(tmp_path / "names.duckdb") as names:
        for round_ in range(2):
            expected = scan_tree(full, root, LAYOUT)
            got = scan_tree(names, root, LAYOUT, stat=False)
            want_rows = {p: r[:3] + r[4:] for p, r in rows(full).items()}
            got_rows = {p: r[:3] + r[4:] for p, r in rows(names).items()}
            assert got_rows == want_rows, f"round {round_}"
            assert got.by_state == expected.by_state and got.skipped_temp == expected.skipped_temp
            assert got_rows[m720(0)] == ("hmi.M_720s", "[2024.01.01_00:00:00_TAI][3]", "magnetogram", "layout")
            # a re-scan with changes: new files in a listed directory and a new directory
            put(root, m720(48, camera=2))
            put(root, LAYOUT.relative_path("aia.lev1_euv_12s", ["2024-01-02T00:00:11Z", 193], "image"))
            put(root, "hmi.M_720s/2024/01/03/hmi.m_720s.20240101_000000_TAI.3.magnetogram.fits")


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(sorted(REGISTRY.names())), st.integers(0, 10**6), st.integers(-(2**31), 2**31 - 1),
       st.text(max_size=3).filter(lambda s: "\n" not in s))
def test_arrow_matching_agrees_with_the_walks_matcher(series, seconds, number, noise):
    """The parser thread's Arrow matching (scan._match_deferred) keeps exactly the names, record
    keys and segments the walk's own matcher would, and hands every other name to the fallback."""
    from jsocmirror import drmstime
    from jsocmirror.layout import directory_matcher
    from jsocmirror.scan import _Batch, _match_deferred

    sd = REGISTRY.get(series)
    values = [drmstime.parse_time("2010.05.01_00:00:00_TAI") + seconds if kw.is_time else number
              for kw in sd.primekey_keywords]
    path = LAYOUT.relative_path(series, values, sd.segments[0].name)
    dirpath, name = path.rsplit("/", 1)
    matcher = directory_matcher(LAYOUT.template(series), dirpath)
    if matcher is None:
        return
    names = sorted({name, name.replace(".fits", ".fit"), noise + name, name[:-5] + noise + ".fits", "x" + noise})
    matched, keys, segs, left = matcher.match(names)
    handed_back: list[str] = []
    table = _match_deferred([(dirpath, series, matcher, "\n".join(names), len(names))],
                            _Batch(fallback=lambda rel, rejected, into: handed_back.extend(rejected) or 0))
    got = {p.rsplit("/", 1)[1]: (k, s) for p, k, s in zip(table["path"].to_pylist(), table["record_key"].to_pylist(),
                                                          table["segment"].to_pylist())}
    assert got == dict(zip(matched, zip(keys, segs)))
    assert sorted(handed_back) == sorted(left)
    assert set(table["dir"].to_pylist()) <= {dirpath} and set(table["series"].to_pylist()) <= {series}


def test_a_failure_in_the_first_scans_threads_surfaces_and_leaves_no_thread_behind(tmp_path, root, monkeypatch):
    """An error while matching (parser thread) or inserting (writer thread) must reach the caller
    as itself, with both threads stopped; the next scan then inventories everything."""
    import threading

    from jsocmirror import scan as scan_mod

    for minute in range(0, 60, 12):
        put(root, m720(minute))
    for target in ("_match_deferred", "_insert"):
        def broken(*args, **kwargs):
            raise RuntimeError(f"injected failure in {target}")

        owner = scan_mod._FirstScanWriter if target == "_insert" else scan_mod
        with monkeypatch.context() as patch:
            patch.setattr(owner, target, broken)
            with Catalog(tmp_path / f"{target}.duckdb") as catalog:
                with pytest.raises(RuntimeError, match=f"injected failure in {target}"):
                    scan_tree(catalog, root, LAYOUT, stat=False)
        assert not [t for t in threading.enumerate() if t.name.startswith("jsocmirror-scan")]
        with Catalog(tmp_path / f"{target}.duckdb") as catalog:
            result = scan_tree(catalog, root, LAYOUT, stat=False)
            assert result.by_state == {"layout": 5} and len(rows(catalog)) == 5
