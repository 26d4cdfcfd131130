"""The nightly job's rotating re-verification on the emulator: damaged files are found and
refetched the same night, the rotation covers every file within its cycle, the time budget
stops a night early and the next night carries on where it stopped."""

from __future__ import annotations

import math
import os
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from conftest import quick_emulator
from test_update import make_mirror, options

from jsocmirror import config as cfg
from jsocmirror import diff as diff_mod
from jsocmirror.catalog import Catalog
from jsocmirror.errors import ConfigError
from jsocmirror.fitsheader import check_fits
from jsocmirror.scan import verify_rotation
from jsocmirror.update import fetch_mirror, update_mirror

NIGHT0 = datetime(2026, 1, 1, 2, 0, 0)  # the fake clock's first night (UTC, naive like the catalog)


@pytest.fixture()
def emu():
    with quick_emulator() as emulator:
        yield emulator


def landed_mirror(tmp_path: Path, emu, **verify) -> cfg.MirrorConfig:
    """A mirror whose first night landed every file (stamped NIGHT0), with ``[verify]`` settings."""
    config = make_mirror(tmp_path / "m", emu.url)
    for name, value in verify.items():
        setattr(config.verify, name, value)
    first = update_mirror(config, emu.url, options(clock=lambda: NIGHT0))
    assert first.exit_code == 0 and first.files_downloaded > 20, first.render()
    return config


def fits_files(config: cfg.MirrorConfig) -> list[Path]:
    return sorted(Path(config.data_root).rglob("*.fits"))


def sound(path: Path) -> bool:
    with open(path, "rb") as f:
        check = check_fits(f)
    return check.problem is None and check.datasum == "ok" and check.checksum == "ok"


def night(config, emu, n: int):
    return update_mirror(config, emu.url, options(sync=False, clock=lambda: NIGHT0 + timedelta(days=n)))


def test_landed_files_count_as_verified_at_landing(tmp_path, emu):
    config = landed_mirror(tmp_path, emu)
    with Catalog(config.catalog_path) as catalog:
        rows = catalog.execute("SELECT c.verify_state, c.verified_at, c.verified_size = f.size, c.checksum "
                               "FROM local_files f JOIN file_checks c USING (path) WHERE f.state = 'layout'").fetchall()
    assert len(rows) == len(fits_files(config))
    assert set(rows) == {("ok", NIGHT0, True, "ok")}


def test_a_flipped_byte_is_found_refetched_and_good_again(tmp_path, emu):
    config = landed_mirror(tmp_path, emu, cycle_days=1)  # every file is read every night
    victim = fits_files(config)[3]
    good = victim.read_bytes()
    stat = victim.stat()
    with open(victim, "r+b") as f:  # bit rot: one data byte, the size and the mtime unchanged
        f.seek(11520 + 100)
        byte = f.read(1)
        f.seek(11520 + 100)
        f.write(bytes([byte[0] ^ 0x10]))
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert not sound(victim)
    summary = night(config, emu, 1)
    assert summary.exit_code == 0, summary.render()
    assert summary.verify["damaged"] == 1 and summary.verify["files"] == len(fits_files(config))
    assert summary.gaps == {"corrupt": 1} and summary.files_downloaded == 1
    assert any("damaged on disk (bad_datasum" in note["reason"] for note in summary.notes)
    assert victim.read_bytes() == good and sound(victim)
    again = night(config, emu, 2)
    assert again.verify["damaged"] == 0 and not again.gaps and again.files_downloaded == 0
    assert "1 damaged" in summary.render() and "every file verified since" in summary.render()


def test_a_truncated_file_is_found_and_refetched(tmp_path, emu):
    config = landed_mirror(tmp_path, emu, cycle_days=1)
    victim = fits_files(config)[-2]
    good = victim.read_bytes()
    with open(victim, "r+b") as f:
        f.truncate(len(good) // 2)
    summary = night(config, emu, 1)
    assert summary.exit_code == 0, summary.render()
    assert summary.verify["damaged"] == 1 and summary.gaps == {"corrupt": 1} and summary.files_downloaded == 1
    assert any("truncated" in note["reason"] for note in summary.notes)
    assert victim.read_bytes() == good


def test_thirty_nights_of_the_rotation_cover_every_file(tmp_path, emu):
    """The default cycle: each night reads 1/30 of the mirror, oldest verification first, so no
    file goes more than 30 nights without a re-read (over 60 nights, two whole cycles)."""
    config = landed_mirror(tmp_path, emu)
    paths = {str(p.relative_to(config.data_root)) for p in fits_files(config)}
    share = math.ceil(len(paths) / 30)
    last = dict.fromkeys(paths, 0)
    with Catalog(config.catalog_path) as catalog:
        layout = diff_mod.layout_for_config(config, diff_mod.series_definitions(catalog))
        for n in range(1, 61):
            now = NIGHT0 + timedelta(days=n)
            result = verify_rotation(catalog, config.data_root, layout, cycle_days=30, now=now)
            assert result.files == result.due == share and result.damaged == 0
            read = {p for (p,) in catalog.execute("SELECT path FROM file_checks WHERE verified_at = $t",
                                                  {"t": now}).fetchall()}
            assert len(read) == share
            for path in read:
                assert n - last[path] <= 30, f"{path} waited {n - last[path]} nights"
                last[path] = n
            if n == 30:
                assert all(last.values()), "some file was not re-read in the first 30 nights"
                assert result.covered_since > NIGHT0
    assert all(60 - night_read < 30 for night_read in last.values())


def test_the_time_budget_stops_early_and_the_next_night_carries_on(tmp_path, emu):
    config = landed_mirror(tmp_path, emu)
    clock = iter(range(10**6))  # a fake timer: one second passes per look at it
    with Catalog(config.catalog_path) as catalog:
        layout = diff_mod.layout_for_config(config, diff_mod.series_definitions(catalog))
        first = verify_rotation(catalog, config.data_root, layout, cycle_days=1, budget_seconds=3.5,
                                now=NIGHT0 + timedelta(days=1), timer=lambda: float(next(clock)))
        assert first.files == 4 and first.left == first.due - 4 > 0
        order = [p for (p,) in catalog.execute("SELECT path FROM file_checks ORDER BY path").fetchall()]
        read1 = _read_at(catalog, NIGHT0 + timedelta(days=1))
        assert read1 == order[:4]  # equally old: in path order
        second = verify_rotation(catalog, config.data_root, layout, cycle_days=1, budget_seconds=3.5,
                                 now=NIGHT0 + timedelta(days=2), timer=lambda: float(next(clock)))
        assert second.files == 4
        assert _read_at(catalog, NIGHT0 + timedelta(days=2)) == order[4:8]  # where the first night stopped
        assert first.covered_since == NIGHT0 and second.covered_since == NIGHT0


def _read_at(catalog: Catalog, when: datetime) -> list[str]:
    return [p for (p,) in catalog.execute("SELECT path FROM file_checks WHERE verified_at = $t ORDER BY path",
                                          {"t": when}).fetchall()]


def test_update_with_a_tiny_budget_reads_one_file_a_night_and_moves_on(tmp_path, emu):
    config = landed_mirror(tmp_path, emu, cycle_days=1, budget_seconds=1e-9)
    seen = []
    for n in (1, 2, 3):
        summary = night(config, emu, n)
        assert summary.verify["files"] == 1 and summary.verify["left"] == summary.verify["due"] - 1
        assert "left for the next night" in summary.render()
        with Catalog(config.catalog_path) as catalog:
            seen += _read_at(catalog, NIGHT0 + timedelta(days=n))
    assert len(set(seen)) == 3


def test_changed_files_are_read_first_and_verification_can_be_off(tmp_path, emu):
    config = landed_mirror(tmp_path, emu)
    victim = fits_files(config)[5]
    victim.write_bytes(victim.read_bytes()[:-2880])  # rewritten, and its directory listed again
    os.utime(victim.parent)  # (as a copy in by hand would: a new name changes the directory's mtime)
    summary = night(config, emu, 1)
    share = math.ceil((len(fits_files(config)) - 1) / 30)
    assert summary.verify["due"] == 1 + share and summary.verify["damaged"] == 1
    assert summary.files_downloaded == 1 and sound(victim)
    assert fetch_mirror(config, emu.url, options()).verify == {}  # the nightly job's, not a fetch's
    config.verify.enabled = False
    quiet = night(config, emu, 2)
    assert quiet.verify == {} and "verify:" not in quiet.render() and "verify" not in quiet.timings


@pytest.mark.parametrize("section,message", [
    ({"cycle_days": 0}, "cycle_days 0 must be an integer from 1 to 3650"),
    ({"cycle_days": "30"}, "cycle_days '30' must be an integer"),
    ({"budget_seconds": -1}, "budget_seconds -1 must be a number of seconds in (0, 86400]"),
    ({"enabled": "yes"}, "enabled 'yes' must be true or false"),
    ({"cycles": 3}, "unknown key 'cycles' in [verify]"),
])
def test_bad_verify_settings_are_one_line_errors(tmp_path, section, message):
    with pytest.raises(ConfigError) as info:
        cfg.config_from_dict({"verify": section}, tmp_path)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_verify_settings_round_trip_through_the_file(tmp_path):
    config = cfg.MirrorConfig(mirror_dir=tmp_path, verify=cfg.VerifyConfig(cycle_days=7, budget_seconds=120.0))
    cfg.save_config(config)
    assert "[verify]" in config.config_path.read_text()
    assert cfg.load_config(tmp_path).verify == cfg.VerifyConfig(enabled=True, cycle_days=7, budget_seconds=120.0)
