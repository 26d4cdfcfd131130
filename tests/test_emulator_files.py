"""Generated FITS files, the filenamefmt engine and url-tar archives (jsocmirror.emulator.files)."""

from __future__ import annotations

import io
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from jsocmirror.emulator import files
from jsocmirror.series import builtin_series

FIXTURES = Path(__file__).resolve().parents[1] / ".." / "shared" / "fixtures" / "headers"
REGISTRY = builtin_series()


def _record(series: str, recnum: int = 9252513, **values) -> files.FileRecord:
    sdef = REGISTRY.get(series)
    defaults = {
        "hmi.sharp_cea_720s": {"HARPNUM": 11465, "T_REC": "2024.06.28_00:00:00_TAI",
                               "DATE__OBS": "2024-06-27T23:58:46.20Z", "QUALITY": 0, "USFLUX": 1.99282158e21,
                               "NOAA_ARS": "13733", "T_OBS": "2024.06.28_00:00:08.212_TAI"},
        "hmi.M_45s": {"T_REC": "2012.01.01_01:01:30_TAI", "CAMERA": 2, "QUALITY": "0x00000000"},
        "aia.lev1_euv_12s": {"T_REC": "2013-03-10T12:00:01Z", "WAVELNTH": 171, "QUALITY": 0},
    }[series]
    return files.FileRecord(sdef, recnum, {**defaults, **values}, sunum=803708321, slot=8)


def _open(data: bytes):
    return fits.open(io.BytesIO(data), checksum=True)


def test_build_fits_as_is_is_rice_compressed_with_minimal_header():
    rec = _record("hmi.M_45s", 4000123)
    data = files.build_fits(rec, rec.series.segment("magnetogram"), protocol="as-is")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a checksum mismatch is a warning in astropy
        with _open(data) as hdul:
            assert len(hdul) == 2 and hdul[0].header["NAXIS"] == 0
            assert isinstance(hdul[1], fits.CompImageHDU)
            assert hdul[1].data.shape == (64, 64)
    with fits.open(io.BytesIO(data), disable_image_compression=True) as raw:
        hdr = raw[1].header
        assert hdr["ZCMPTYPE"] == "RICE_1" and hdr["ZBITPIX"] == 32
        assert hdr["ZTILE1"] == 64 and hdr["ZTILE2"] == 1  # row tiles, as JSOC writes them
        assert hdr["BSCALE"] == 0.1 and hdr["BZERO"] == 0 and hdr["BLANK"] == -2147483648
        assert "RECNUM" not in hdr and "T_REC" not in hdr  # SUMS files carry no keywords
        assert raw[1].verify_checksum() == 1 and raw[1].verify_datasum() == 1


def test_build_fits_aia_is_int16_with_blank():
    rec = _record("aia.lev1_euv_12s", 27842799)
    data = files.build_fits(rec, rec.series.segment("image"), protocol="fits")
    with fits.open(io.BytesIO(data), disable_image_compression=True) as raw:
        hdr = raw[1].header
        assert hdr["ZBITPIX"] == 16 and hdr["BLANK"] == -32768
        assert "BSCALE" not in hdr or hdr["BSCALE"] == 1
        assert hdr["T_REC"] == "2013-03-10T12:00:01.000"  # ISO keywords print without the Z in FITS
        assert hdr["WAVELNTH"] == 171


def test_build_fits_export_header_carries_keywords_and_drms_ids():
    rec = _record("hmi.sharp_cea_720s")
    data = files.build_fits(rec, rec.series.segment("magnetogram"), protocol="fits")
    with _open(data) as hdul:
        hdr = hdul[1].header
        assert hdr["HARPNUM"] == 11465
        assert hdr["T_REC"] == "2024.06.28_00:00:00.000_TAI"
        assert hdr["DATE-OBS"] == "2024-06-27T23:58:46.200"
        assert hdr["TRECEPOC"] == "1993.01.01_00:00:00.000_TAI"  # a constant from the definition
        assert "{T_REC_epoch}" in hdr.comments["TRECEPOC"]
        assert hdr["RECNUM"] == 9252513
        assert hdr["DRMS_ID"] == "hmi.sharp_cea_720s:9252513:magnetogram"
        assert hdr["PRIMARYK"] == "HARPNUM, T_REC"
        assert hdr["USFLUX"] == pytest.approx(1.99282158e21)
        assert "MAGNETOGRAM_BZERO" not in hdr and "CPARMSSG" not in hdr  # DRMS bookkeeping stays out
    with fits.open(io.BytesIO(data), disable_image_compression=True) as raw:
        card = raw[1].header.cards["NOAA_AR"]  # not set in the record: MISSING
        assert card.value is fits.card.UNDEFINED  # an empty value, as JSOC writes MISSING
        assert "(MISSING)" in card.comment
        assert raw[1].verify_checksum() == 1 and raw[1].verify_datasum() == 1


def test_build_fits_same_version_same_bytes_new_version_new_bytes():
    rec = _record("hmi.M_45s", 4000123)
    seg = rec.series.segment("magnetogram")
    first = files.build_fits(rec, seg, protocol="fits")
    assert files.build_fits(rec, seg, protocol="fits") == first
    reprocessed = _record("hmi.M_45s", 4000999)  # same prime keys, new recnum
    assert files.build_fits(reprocessed, seg, protocol="fits") != first
    with fits.open(io.BytesIO(first)) as a, fits.open(io.BytesIO(files.build_fits(rec, seg, protocol="as-is"))) as b:
        np.testing.assert_array_equal(a[1].data, b[1].data)  # as-is and fits exports share the pixels


def test_build_fits_shape_is_configurable():
    rec = _record("hmi.M_45s", 4000123)
    data = files.build_fits(rec, rec.series.segment("magnetogram"), shape=(32, 48))
    with fits.open(io.BytesIO(data)) as hdul:
        assert hdul[1].data.shape == (32, 48)


def test_build_fits_checksum_detects_a_flipped_byte():
    rec = _record("hmi.M_45s", 4000123)
    data = bytearray(files.build_fits(rec, rec.series.segment("magnetogram")))
    data[-200] ^= 0xFF
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with fits.open(io.BytesIO(bytes(data)), checksum=True) as hdul:
            hdul[1].data
    assert any("verification failed" in str(w.message) for w in caught)


@pytest.mark.skipif(not (FIXTURES / "hmi_cea_sharp_magnetogram.header").exists(), reason="fixtures absent")
def test_build_fits_keyword_names_match_a_real_export_header():
    real = fits.Header.fromtextfile(str(FIXTURES / "hmi_cea_sharp_magnetogram.header"))
    rec = _record("hmi.sharp_cea_720s")
    with fits.open(io.BytesIO(files.build_fits(rec, rec.series.segment("magnetogram"), protocol="fits"))) as hdul:
        ours = set(hdul[1].header.keys())
    shared = {"T_REC", "TRECEPOC", "TRECSTEP", "TRECUNIT", "DATE-OBS", "HARPNUM", "RECNUM", "DRMS_ID", "PRIMARYK"}
    assert shared <= set(real.keys())
    assert shared <= ours
    assert real["BSCALE"] == 0.1 and real["BLANK"] == -2147483648


@pytest.mark.parametrize("name, expected", [
    ("DATE__OBS", "DATE-OBS"), ("T_REC_epoch", "TRECEPOC"), ("T_REC_step", "TRECSTEP"),
    ("LAT_FWTPOS", "LATFWTPO"), ("HARPNUM", "HARPNUM"), ("T_REC", "T_REC"), ("crpix1", "CRPIX1"),
])
def test_fits_name_maps_like_jsoc(name, expected):
    assert files.fits_name(name) == expected


def test_filename_template_server_default():
    rec = _record("hmi.M_45s", 4000123)
    name = files.FilenameTemplate.parse(None, rec.series).render(rec, rec.series.segment("magnetogram"))
    assert name == "hmi.M_45s.4000123.magnetogram.fits"


def test_filename_template_drms_generated_forms():
    hmi = _record("hmi.M_45s", 4000123)
    fmt = "hmi.m_45s.{T_REC:A}.{CAMERA}.{segment}"
    assert files.FilenameTemplate.parse(fmt, hmi.series).render(hmi, hmi.series.segment("magnetogram")) == \
        "hmi.m_45s.20120101_010130_TAI.2.magnetogram.fits"
    aia = _record("aia.lev1_euv_12s", 27842799)
    fmt = "aia.lev1_euv_12s.{T_REC:A}.{WAVELNTH}.{segment}"
    assert files.FilenameTemplate.parse(fmt, aia.series).render(aia, aia.series.segment("image")) == \
        "aia.lev1_euv_12s.2013-03-10T120001Z.171.image.fits"


def test_filename_template_printf_and_index():
    rec = _record("hmi.M_45s", 42)
    tpl = files.FilenameTemplate.parse("{#:%03d}.{recnum:%08lld}.{T_REC:TAI}.{segment}", rec.series)
    assert tpl.render(rec, rec.series.segment("magnetogram"), 7) == \
        "007.00000042.2012.01.01_01:01:30_TAI.magnetogram.fits"


@pytest.mark.parametrize("fmt", ["{seriesname", "x}.{segment}", "{}", "{NOSUCHKEY}.{segment}", "../{segment}",
                                 "a/b.{segment}", "{recnum:%q}", "{T_REC:Q}"])
def test_filename_template_rejects_malformed(fmt):
    rec = _record("hmi.M_45s", 42)
    with pytest.raises(files.FilenameFormatError, match="filenamefmt"):
        files.FilenameTemplate.parse(fmt, rec.series).render(rec, rec.series.segment("magnetogram"))


def test_filename_template_values_never_make_paths():
    rec = _record("hmi.sharp_cea_720s", NOAA_ARS="../../etc/passwd")
    name = files.FilenameTemplate.parse("{NOAA_ARS}.{segment}", rec.series).render(rec, rec.series.segment("bitmap"))
    assert "/" not in name and ".." not in name


def test_build_tar_round_trips_members():
    blob = files.build_tar([("a.fits", b"x" * 3000), ("index.json", b"{}")], mtime=1_700_000_000)
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        assert tar.getnames() == ["a.fits", "index.json"]
        assert tar.extractfile("a.fits").read() == b"x" * 3000
    assert files.build_tar([("a.fits", b"x")], mtime=5) == files.build_tar([("a.fits", b"x")], mtime=5)


def test_file_cache_evicts_least_recently_used():
    cache = files.FileCache(max_bytes=250)
    made = []
    for key in ("a", "b", "a", "c"):
        cache.get(key, lambda key=key: made.append(key) or key.encode() * 100)
    assert made == ["a", "b", "c"]  # "a" came from the cache the second time
    cache.get("b", lambda: made.append("b2") or b"b" * 100)
    assert made[-1] == "b2"  # "b" was evicted as least recently used when "c" came in


def test_file_cache_resize_evicts_down_to_the_new_bound_and_zero_keeps_nothing():
    cache = files.FileCache(max_bytes=1000)
    made = []
    for key in ("a", "b", "c"):
        cache.get(key, lambda key=key: made.append(key) or key.encode() * 100)
    cache.resize(150)  # room for one: the most recently used stays
    cache.get("c", lambda: made.append("c2") or b"c" * 100)
    cache.get("a", lambda: made.append("a2") or b"a" * 100)
    assert made == ["a", "b", "c", "a2"]
    cache.resize(0)
    cache.get("a", lambda: made.append("a3") or b"a" * 100)
    cache.get("a", lambda: made.append("a4") or b"a" * 100)
    assert made[-2:] == ["a3", "a4"]


@pytest.mark.parametrize("series", [s.name for s in REGISTRY])
def test_build_fits_every_builtin_series_without_warnings(series):
    """Real world values (long comments, long strings) make clean cards: no astropy warning at all."""
    from jsocmirror.emulator import Emulator, exports

    emu = Emulator(seed=0)  # not started: only its world is used
    sdef = REGISTRY.get(series)
    ds = f"{series}[][2024.06.30_00:00:00_TAI]" if sdef.primekeys[0] != "T_REC" else \
        f"{series}[2024.06.30_00:00:00_TAI/1m]"
    selection = exports.select(emu, ds)
    assert selection.records, ds
    rec = exports.record_version(emu, series, selection.records[0].recnum)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for segment in sdef.segments[:3]:
            data = files.build_fits(rec, segment, protocol="fits")
            with fits.open(io.BytesIO(data), checksum=True) as hdul:
                assert hdul[1].header["RECNUM"] == rec.recnum
