"""Bytes equal JSOC's or not under a final name (issue 16): the fill FITS prescribes is checked,
and a tar's failures are in the run's failure list."""

from __future__ import annotations

from pathlib import Path

import pytest

from test_update import mirror_files, options

from jsocmirror import config as cfg
from jsocmirror.catalog import Catalog
from jsocmirror.fitsheader import BLOCK, FitsSums, check_fits
from jsocmirror.update import update_mirror

UV_START = "2024.06.30_23:00:00_TAI"


def uv_mirror(path: Path, url: str) -> cfg.MirrorConfig:
    path.mkdir(parents=True, exist_ok=True)
    config = cfg.MirrorConfig(
        mirror_dir=path, server=url, email="mirror@example.org",
        series=[cfg.SeriesConfig(series="aia.lev1_uv_24s", segments=["image"], start=UV_START,
                                 keys={"WAVELNTH": [1600]})],
        transfer=cfg.TransferConfig(max_connections=2, method="url_quick", protocol="as-is", poll_interval=0.05),
    )
    cfg.save_config(config)
    with Catalog(config.catalog_path):
        pass
    Path(config.data_root).mkdir(parents=True, exist_ok=True)
    return cfg.load_config(path)


def test_flipped_fill_bytes_never_land_and_the_mirror_converges_to_clean_bytes(tmp_path, emulator):
    emulator.faults.update(corrupt_files=0.3, seed=7)
    hostile = uv_mirror(tmp_path / "hostile", emulator.url)
    night = update_mirror(hostile, emulator.url, options())
    emulator.faults.clear()
    assert night.failures and all("corrupt" in f["reason"] or "fill" in f["reason"] for f in night.failures)
    clean = uv_mirror(tmp_path / "clean", emulator.url)
    assert update_mirror(clean, emulator.url, options()).exit_code == 0
    reference = mirror_files(clean)
    landed = mirror_files(hostile)
    assert {p: b for p, b in landed.items() if reference.get(p) != b} == {}  # nothing wrong landed
    assert update_mirror(hostile, emulator.url, options()).exit_code == 0
    assert mirror_files(hostile) == reference


def _fits(data_bytes: int = 100) -> bytearray:
    header = (b"SIMPLE  =                    T".ljust(80) + b"BITPIX  =                    8".ljust(80)
              + b"NAXIS   =                    1".ljust(80) + f"NAXIS1  = {data_bytes:20d}".encode().ljust(80)
              + b"END".ljust(80)).ljust(BLOCK, b" ")
    data = bytes(range(256)) * (data_bytes // 256 + 1)
    return bytearray(header + data[:data_bytes].ljust(-(-data_bytes // BLOCK) * BLOCK, b"\0"))


def _streamed(raw: bytes, piece: int = 1000) -> str:
    sums = FitsSums()
    for i in range(0, len(raw), piece):
        sums.feed(raw[i:i + piece])
    return sums.finish()


def test_the_stream_check_refuses_bad_fill_in_header_data_and_trailing_blocks(tmp_path):
    good = _fits()
    assert _streamed(good) == "absent"
    cases = {"header fill": 5 * 80 + 7, "END card": 4 * 80 + 10, "data fill": BLOCK + 2000}
    for name, at in cases.items():
        bad = bytearray(good)
        bad[at] ^= 0x5A
        try:
            _streamed(bad)
        except ValueError as exc:
            assert "fill" in str(exc), name
        else:
            raise AssertionError(f"{name}: a flipped fill byte verified")
    trailing = good + bytes(BLOCK) + bytes(BLOCK)
    assert _streamed(trailing) == "absent"  # blank blocks after the last HDU, as some writers leave
    trailing[-5] = 1
    try:
        _streamed(trailing)
    except ValueError as exc:
        assert "after the last HDU" in str(exc)
    else:
        raise AssertionError("a byte in the trailing blank blocks verified")


def test_scan_verify_reports_bad_fill(tmp_path):
    good = _fits()
    bad = bytearray(good)
    bad[BLOCK + 2500] = 7
    for raw, fill in ((good, None), (bad, "HDU 0: the fill after the data is not zeros")):
        path = tmp_path / "x.fits"
        path.write_bytes(raw)
        with open(path, "rb") as handle:
            assert check_fits(handle).fill == fill


def _tar_mirror(path: Path, url: str) -> cfg.MirrorConfig:
    from test_update import make_mirror

    config = make_mirror(path, url, aia_method="url-tar", aia_protocol="fits")
    config.series = [entry for entry in config.series if entry.series == "aia.lev1_euv_12s"]
    cfg.save_config(config)
    return cfg.load_config(path)


def _cut_tar(body: bytes, path: str) -> bytes:
    return body[: len(body) // 2]  # announced as sent: only the archive itself is short


@pytest.mark.parametrize("action, arg", [("short", 5000), ("body", _cut_tar)], ids=["short-body", "cut-archive"])
def test_every_record_of_a_failed_tar_is_in_the_failure_list_then_converges(tmp_path, emulator, action, arg):
    from tests.hostile import HostileProxy
    from test_update import temp_files

    clean = _tar_mirror(tmp_path / "clean", emulator.url)
    assert update_mirror(clean, emulator.url, options()).exit_code == 0
    reference = mirror_files(clean)
    with HostileProxy(emulator.url) as proxy:
        config = _tar_mirror(tmp_path / "m", proxy.url)
        proxy.add(".tar", action, arg)
        night = update_mirror(config, proxy.url, options())
        landed = mirror_files(config)
        failed = {f["record_key"] for f in night.failures}
        assert night.exit_code == 1 and failed
        assert len(landed) + len(failed) == len(reference), (sorted(landed), sorted(failed))
        assert all(reference[p] == b for p, b in landed.items()) and not temp_files(config)
        proxy.clear()
        assert update_mirror(config, proxy.url, options()).exit_code == 0
    assert mirror_files(config) == reference
