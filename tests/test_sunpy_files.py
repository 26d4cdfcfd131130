"""Files a scientist can open: a default mirror of every built-in series, each file through sunpy.map.Map.

One mirror (default transfer: url_quick, as-is, header fill) of small windows of the seven
built-in series is built from the emulator; every file it lands must open as its instrument's map
class with the WCS, date and observer of its record's row in the catalog, while its pixels stay
JSOC's: the data unit is byte-identical to the file the emulator serves, DATASUM is JSOC's and
verifies, and every card the fill added holds a value of the catalog row.
"""

from __future__ import annotations

import io
import json
import urllib.parse
import urllib.request
import warnings
from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.time import Time
from conftest import sync_mirror

from jsocmirror.net import NetPolicy
from jsocmirror import config as cfg
from jsocmirror import fitsheader
from jsocmirror.catalog import Catalog
from jsocmirror.download import FileTask, download_files, fill_header, fits_checksum_state
from jsocmirror.emulator import Emulator
from jsocmirror.errors import ConfigError
from jsocmirror.update import UpdateOptions, fetch_mirror, update_mirror

try:
    import sunpy.map as sunpy_map
    from sunpy.coordinates import frames
except ImportError:  # sunpy.map needs the sunpy[map] extra (matplotlib)
    sunpy_map = frames = None
needs_map = pytest.mark.skipif(sunpy_map is None, reason="sunpy.map is not importable (pip install 'sunpy[map]')")

EMAIL = "mirror@example.org"

# Small windows ending before the emulator's clock (2024.07.01_00:00:00_TAI = 23:59:23 UTC), so
# that every record exists with its file: 3-14 files per series, 67 in all.
SERIES = {
    "hmi.M_45s": dict(segments=["magnetogram"], start="2024.06.30_23:57:00_TAI", end="2024.06.30_23:58:30_TAI"),
    "hmi.M_720s": dict(segments=["magnetogram"], start="2024.06.30_23:00:00_TAI", end="2024.06.30_23:48:00_TAI"),
    "aia.lev1": dict(segments=["image_lev1"], start="2024-06-30T23:58:50Z", end="2024-06-30T23:59:00Z"),
    "aia.lev1_euv_12s": dict(segments=["image"], start="2024-06-30T23:58:00Z", end="2024-06-30T23:59:00Z",
                             keys={"WAVELNTH": [171, 193]}),
    "aia.lev1_uv_24s": dict(segments=["image"], start="2024-06-30T23:57:00Z", end="2024-06-30T23:59:00Z",
                            keys={"WAVELNTH": [1600, 1700]}),
    "hmi.sharp_720s": dict(segments=["magnetogram"], start="2024.06.30_23:36:00_TAI", end="2024.06.30_23:36:00_TAI"),
    "hmi.sharp_cea_720s": dict(segments=["magnetogram"], start="2024.06.30_23:36:00_TAI",
                               end="2024.06.30_23:36:00_TAI"),
}
MAP_CLASS = {"hmi": "HMIMap", "aia": "AIAMap"}


def _options(**kw) -> UpdateOptions:
    from jsocmirror.download import RetryPolicy
    from jsocmirror.stage import StagePolicy

    return UpdateOptions(retry_policy=RetryPolicy(attempts=3, backoff=0.01, max_backoff=0.05, net=NetPolicy(idle_timeout=10)),
                         stage_policy=StagePolicy(poll_interval=0.02, export_wait=3.0, busy_wait=0.02), **kw)


def _make_mirror(path: Path, url: str, series: dict, **transfer) -> cfg.MirrorConfig:
    path.mkdir(parents=True, exist_ok=True)
    config = cfg.MirrorConfig(mirror_dir=path, server=url, email=EMAIL,
                              series=[cfg.SeriesConfig(series=name, **kw) for name, kw in series.items()],
                              transfer=cfg.TransferConfig(max_connections=4, poll_interval=0.05, **transfer))
    cfg.save_config(config)
    return cfg.load_config(path)  # what the file says: the defaults are the shipped ones


@pytest.fixture(scope="module")
def emu():
    with Emulator(state_dir=None, seed=5) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def mirror(emu, tmp_path_factory):
    config = _make_mirror(tmp_path_factory.mktemp("sunpy") / "m", emu.url, SERIES)
    assert config.transfer.header_fill and all(config.header_fill_for(e) for e in config.series)
    summary = update_mirror(config, emu.url, _options())
    assert summary.exit_code == 0, summary.render()
    return config, summary


def _files(config: cfg.MirrorConfig, series: str) -> list[tuple[str, str, str, dict]]:
    """(path, record key, segment, catalog row) of every landed file of a series."""
    with Catalog(config.catalog_path) as catalog:
        files = catalog.execute("SELECT path, record_key, segment FROM local_files WHERE series = $s "
                                "AND state = 'layout' ORDER BY path", {"s": series}).fetchall()
        slug = series.lower().replace(".", "_")
        cursor = catalog.execute(f"SELECT * FROM {slug}")
        names = [d[0] for d in cursor.description]
        rows = {row[0]: dict(zip(names, row)) for row in cursor.fetchall()}
    return [(path, key, seg, rows[key]) for path, key, seg in files]


def _jsoc_file(emu, series: str, key: str, segment: str) -> bytes:
    """The file as JSOC serves it, from the SUMS path rs_list gives (what url_quick fetches)."""
    query = urllib.parse.urlencode({"op": "rs_list", "ds": f"{series}{key}", "seg": segment, "key": "*recnum*"})
    with urllib.request.urlopen(f"{emu.url}cgi-bin/ajax/jsoc_info?{query}") as reply:
        path = json.loads(reply.read())["segments"][0]["values"][0]
    with urllib.request.urlopen(emu.url + path.lstrip("/")) as reply:
        return reply.read()


def _utc(value) -> Time:
    return Time(value, scale="utc")


def _open_map(path: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a header sunpy or astropy.wcs has to repair is not good enough
        return sunpy_map.Map(str(path))


def _assert_wcs(m, row: dict) -> None:
    unit = u.Unit(str(row["CUNIT1"]).replace("degree", "deg"))
    assert list(m.wcs.wcs.ctype) == [row["CTYPE1"], row["CTYPE2"]]
    assert m.spatial_units == (unit, unit)
    assert u.allclose(u.Quantity(m.scale), [row["CDELT1"], row["CDELT2"]] * unit / u.pix)
    assert u.allclose(u.Quantity(m.reference_pixel), ([row["CRPIX1"], row["CRPIX2"]] - np.ones(2)) * u.pix)
    ref = m.reference_coordinate.spherical
    assert u.isclose(ref.lon.wrap_at(360 * u.deg if row["CRVAL1"] > 180 else 180 * u.deg), row["CRVAL1"] * unit)
    assert u.isclose(ref.lat, row["CRVAL2"] * unit, atol=1e-9 * unit)
    angle = np.radians(row["CROTA2"])
    assert np.allclose(m.rotation_matrix, [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])


def _assert_time_and_observer(m, row: dict, aia: bool) -> None:
    assert abs((m.date - _utc(row["DATE__OBS"])).to_value(u.s)) < 1e-3
    assert abs((m.reference_date - _utc(row["T_OBS"])).to_value(u.s)) < 1e-3
    obstime = _utc(row["T_OBS"])
    if aia:  # AIA headers give Stonyhurst coordinates
        expected = SkyCoord(row["HGLN_OBS"] * u.deg, row["HGLT_OBS"] * u.deg, row["DSUN_OBS"] * u.m,
                            frame=frames.HeliographicStonyhurst, obstime=obstime)
    else:  # HMI series have only Carrington ones
        carrington = frames.HeliographicCarrington(row["CRLN_OBS"] * u.deg, row["CRLT_OBS"] * u.deg,
                                                   row["DSUN_OBS"] * u.m, obstime=obstime, observer="self")
        expected = SkyCoord(carrington).heliographic_stonyhurst
    observer = m.observer_coordinate
    assert u.isclose(observer.lon, expected.lon, atol=1e-7 * u.deg)
    assert u.isclose(observer.lat, expected.lat, atol=1e-7 * u.deg)
    assert u.isclose(observer.radius, row["DSUN_OBS"] * u.m, atol=1 * u.m)
    assert u.isclose(m.dsun, row["DSUN_OBS"] * u.m, atol=1 * u.m)
    assert u.isclose(m.rsun_obs, row["RSUN_OBS"] * u.arcsec)
    assert u.isclose(m.rsun_meters, row["RSUN_REF"] * u.m)


def _assert_instrument(m, row: dict, aia: bool) -> None:
    assert m.meta["telescop"] == row["TELESCOP"] and m.observatory == "SDO"
    assert m.meta["instrume"] == row["INSTRUME"] and m.detector == ("AIA" if aia else "HMI")
    if aia:
        assert m.wavelength == row["WAVELNTH"] * u.angstrom and m.waveunit == u.Unit(row["WAVEUNIT"])


def _data_unit(raw: bytes) -> tuple[bytes, bytes, fits.Header]:
    """(bytes before the image HDU, the image HDU's data unit, its header) of a FITS file's bytes."""
    check = fitsheader.check_fits(io.BytesIO(raw), sums=False)
    start = sum(len(h.header_bytes) + -(-h.data_size // 2880) * 2880 for h in check.hdus[:-1])
    data_start = start + len(check.hdus[-1].header_bytes)
    header = fits.Header.fromstring(check.hdus[-1].header_bytes.decode("ascii"))
    return raw[:start], raw[data_start:], header


def _assert_jsoc_pixels(m, local: Path, jsoc: bytes) -> None:
    mine = local.read_bytes()
    prefix, data, header = _data_unit(mine)
    jsoc_prefix, jsoc_data, jsoc_header = _data_unit(jsoc)
    assert data == jsoc_data and prefix == jsoc_prefix  # only the image header differs
    assert header["DATASUM"] == jsoc_header["DATASUM"]  # JSOC's, untouched...
    assert fits_checksum_state(local) == "ok"  # ...and it verifies, with the recomputed CHECKSUM
    assert header["CHECKSUM"] != jsoc_header["CHECKSUM"]
    for card in jsoc_header.cards:  # JSOC's own cards all stay
        if card.keyword != "CHECKSUM":
            assert header[card.keyword] == card.value, card.keyword
    with fits.open(io.BytesIO(jsoc)) as hdul:
        pixels = hdul[-1].data.astype(float)
    assert np.array_equal(np.asarray(m.data, dtype=float), pixels, equal_nan=True)


def _assert_only_catalog_values(local: Path, jsoc: bytes, row: dict) -> None:
    """Every card the fill added holds its catalog keyword's value (none is made up)."""
    _p, _d, header = _data_unit(local.read_bytes())
    _p, _d, jsoc_header = _data_unit(jsoc)
    by_fits_name = {name.upper().replace("DATE__OBS", "DATE-OBS"): name for name in row}
    added = [card for card in header.cards if card.keyword not in jsoc_header]
    assert len(added) > 20
    for card in added:
        name = by_fits_name[card.keyword]
        expected = row.get(f"{name}_str") or row[name]  # time prime keys as JSOC prints them
        if hasattr(expected, "strftime"):
            assert abs((_utc(card.value) - _utc(expected)).to_value(u.s)) < 1e-3, card.keyword
        elif isinstance(expected, float):
            assert card.value == pytest.approx(expected, rel=1e-12), card.keyword
        elif card.keyword.startswith("CUNIT"):
            assert u.Unit(card.value) == u.Unit(str(expected).replace("degree", "deg")), card.keyword
        else:
            assert card.value == expected, card.keyword


@needs_map
@pytest.mark.parametrize("series", list(SERIES))
def test_every_file_of_a_default_mirror_opens_as_a_map_of_its_catalog_row(mirror, emu, series):
    config, _summary = mirror
    files = _files(config, series)
    assert len(files) >= 3
    aia = series.startswith("aia")
    for path, key, segment, row in files:
        local = Path(config.data_root) / path
        m = _open_map(local)
        assert type(m).__name__ == MAP_CLASS[series[:3]], path
        _assert_wcs(m, row)
        _assert_time_and_observer(m, row, aia)
        _assert_instrument(m, row, aia)
        jsoc = _jsoc_file(emu, series, key, segment)
        _assert_jsoc_pixels(m, local, jsoc)
        _assert_only_catalog_values(local, jsoc, row)


@needs_map
def test_sharp_cea_patches_are_carrington_maps_and_sharp_cutouts_helioprojective(mirror):
    config, _summary = mirror
    cea = _open_map(Path(config.data_root) / _files(config, "hmi.sharp_cea_720s")[0][0])
    cut = _open_map(Path(config.data_root) / _files(config, "hmi.sharp_720s")[0][0])
    assert isinstance(cea.coordinate_frame, frames.HeliographicCarrington) and cea.spatial_units[0] == u.deg
    assert isinstance(cut.coordinate_frame, frames.Helioprojective) and cut.spatial_units[0] == u.arcsec


def test_filled_files_verify_in_a_scan_and_the_next_night_fetches_nothing(mirror, emu):
    from jsocmirror import diff as diff_mod
    from jsocmirror.scan import scan_tree

    config, first = mirror
    with Catalog(config.catalog_path) as catalog:
        layout = diff_mod.layout_for_config(config, diff_mod.series_definitions(catalog))
        result = scan_tree(catalog, config.data_root, layout, verify=True)
    assert result.by_verify_state == {"ok": first.files_downloaded}
    again = update_mirror(config, emu.url, _options())
    assert again.exit_code == 0 and again.files_downloaded == 0, again.render()
    assert not {k: v for k, v in again.gaps.items() if k in ("missing", "stale", "corrupt")}


@needs_map
def test_header_fill_false_for_a_series_keeps_jsoc_bytes(emu, tmp_path):
    series = {"hmi.M_45s": dict(SERIES["hmi.M_45s"], header_fill=False)}
    config = _make_mirror(tmp_path / "m", emu.url, series)
    assert not config.header_fill_for(config.series[0])
    summary = update_mirror(config, emu.url, _options())
    assert summary.exit_code == 0 and summary.files_downloaded >= 2, summary.render()
    for path, key, segment, _row in _files(config, "hmi.M_45s"):
        local = Path(config.data_root) / path
        assert local.read_bytes() == _jsoc_file(emu, "hmi.M_45s", key, segment)
        with pytest.raises(Exception, match="units"):  # what scientists met before the fill was the default
            _open_map(local)


def test_fits_exports_are_never_filled(tmp_path):
    config = cfg.config_from_dict({"series": [{"series": "hmi.M_45s", "protocol": "fits"},
                                              {"series": "hmi.M_720s", "method": "url", "header_fill": True}]},
                                  tmp_path)
    assert not config.header_fill_for(config.series[0])  # a fits export has JSOC's full header already
    assert config.header_fill_for(config.series[1])  # url + as-is: the stored files, minimal headers


@pytest.mark.parametrize("raw, bad", [({"transfer": {"header_fill": "yes"}}, "'yes'"),
                                      ({"series": [{"series": "hmi.M_45s", "header_fill": 1}]}, "1")])
def test_a_header_fill_that_is_not_a_boolean_is_refused_in_one_line(tmp_path, raw, bad):
    with pytest.raises(ConfigError) as err:
        cfg.config_from_dict(raw, tmp_path)
    message = str(err.value)
    assert "header_fill" in message and bad in message and "true or false" in message and "\n" not in message


def test_the_per_series_setting_survives_a_save(tmp_path):
    config = cfg.config_from_dict({"series": [{"series": "hmi.M_45s", "header_fill": False}]}, tmp_path)
    cfg.save_config(config)
    assert cfg.load_config(tmp_path).series[0].header_fill is False


def test_fill_of_an_uncompressed_image_keeps_its_data_and_datasum(tmp_path):
    """A plain (not tile-compressed) image keeps its header in the primary HDU: that one is filled."""
    image = np.arange(64 * 32, dtype=np.int16).reshape(32, 64)
    path = tmp_path / "plain.fits"
    fits.PrimaryHDU(image).writeto(path, checksum=True)
    before = path.read_bytes()
    assert fill_header(path, {"CTYPE1": "HPLN-TAN", "CUNIT1": "degree", "CDELT1": 0.6, "NAXIS1": 7,
                              "DATE__OBS": "2024-06-30T00:00:00.000", "IMG_TYPE": "MISSING", "R_SUN": float("nan")})
    assert _data_unit(path.read_bytes())[1] == _data_unit(before)[1] and fits_checksum_state(path) == "ok"
    header = fits.getheader(path)
    assert header["CUNIT1"] == "deg" and header["DATE-OBS"] == "2024-06-30T00:00:00.000" and header["NAXIS1"] == 64
    assert "IMG_TYPE" not in header and "R_SUN" not in header  # MISSING values stay out
    assert header["DATASUM"] == fits.getheader(io.BytesIO(before))["DATASUM"]


def test_keywords_that_cannot_be_cards_leave_the_file_as_jsoc_sent_it(emu, tmp_path):
    """A value no FITS card can hold is left out; with nothing left to write, the file stays JSOC's."""
    query = urllib.parse.urlencode({"op": "rs_list", "ds": "hmi.M_45s[2024.06.30_23:57:00_TAI]", "seg": "magnetogram"})
    with urllib.request.urlopen(f"{emu.url}cgi-bin/ajax/jsoc_info?{query}") as reply:
        sums_path = json.loads(reply.read())["segments"][0]["values"][0]
    task = FileTask(url=emu.url + sums_path.lstrip("/"), dest="a/m.fits", series="hmi.M_45s", record_key="[x][2]",
                    segment="magnetogram", header={"CDELT1": object()})
    results = download_files([task], tmp_path)
    assert not results.errors and (tmp_path / "a/m.fits").read_bytes() == _jsoc_file(
        emu, "hmi.M_45s", "[2024.06.30_23:57:00_TAI][2]", "magnetogram")


@needs_map
def test_url_tar_members_are_filled_too(tmp_path):
    with Emulator(state_dir=None, seed=5) as emulator:
        emulator.exports.config.timing.wait_hint = 0
        series = {"hmi.sharp_cea_720s": dict(SERIES["hmi.sharp_cea_720s"], method="url-tar")}
        config = _make_mirror(tmp_path / "m", emulator.url, series)
        summary = update_mirror(config, emulator.url, _options())
        assert summary.exit_code == 0 and summary.exports_submitted == 1, summary.render()
        files = _files(config, "hmi.sharp_cea_720s")
        assert files
        for path, _key, _segment, row in files:
            m = _open_map(Path(config.data_root) / path)
            assert type(m).__name__ == "HMIMap"
            _assert_wcs(m, row)


@needs_map
def test_a_record_reprocessed_after_the_sync_lands_with_jsoc_header(tmp_path):
    """The catalog's keywords describe the RECNUM it synced: a newer version JSOC serves is not given them."""
    with Emulator(state_dir=None, seed=5) as emulator:
        config = _make_mirror(tmp_path / "m", emulator.url, {"hmi.M_45s": SERIES["hmi.M_45s"]})
        sync_mirror(config, emulator.url)
        synced = update_mirror(config, emulator.url, _options(dry_run=True, sync=False))
        assert synced.gaps["missing"] >= 2
        keys = sorted(_catalog_keys(config, "hmi.M_45s"))
        emulator.world.reprocess("hmi.M_45s", keys[0])
        summary = fetch_mirror(config, emulator.url, _options())  # no sync: the catalog has the old RECNUM
        assert summary.exit_code == 0, summary.render()
        by_key = {key: Path(config.data_root) / path for path, key, _s, _r in _files(config, "hmi.M_45s")}
        assert by_key[keys[0]].read_bytes() == _jsoc_file(emulator, "hmi.M_45s", keys[0], "magnetogram")
        assert type(_open_map(by_key[keys[1]])).__name__ == "HMIMap"  # the others are filled as usual


def _catalog_keys(config: cfg.MirrorConfig, series: str) -> list[str]:
    with Catalog(config.catalog_path) as catalog:
        return [k for (k,) in catalog.execute(f"SELECT _key FROM {series.lower().replace('.', '_')}").fetchall()]
