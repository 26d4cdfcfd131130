"""Retention on a real mirror of the emulator: keep, max_bytes, orphans, the trash, and the rules
that make deleting safe (no errors in the run, the guard, layout files only, dry runs)."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import quick_emulator
from test_update import HMI_START, options

from jsocmirror import config as cfg
from jsocmirror import retention
from jsocmirror.catalog import Catalog
from jsocmirror.cli import cli
from jsocmirror.update import update_mirror

#: The emulator's clock (2024.07.01_00:00:00_TAI) as the mirror's UTC "now".
NOW = datetime(2024, 7, 1, 0, 0, 0)
SERIES = "hmi.M_720s"


@pytest.fixture()
def emu():
    with quick_emulator() as emulator:
        yield emulator


def hmi_mirror(path: Path, url: str, data: str = cfg.DEFAULT_DATA_ROOT, **retention_settings) -> cfg.MirrorConfig:
    """One series, 16 records of hmi.M_720s straight from SUMS paths, downloaded once."""
    path.mkdir(parents=True, exist_ok=True)
    config = cfg.MirrorConfig(
        mirror_dir=path.resolve(), server=url, email="mirror@example.org", data=data,
        series=[cfg.SeriesConfig(series=SERIES, segments=["magnetogram"], start=HMI_START)],
        transfer=cfg.TransferConfig(max_connections=4, poll_interval=0.05),
        retention=cfg.RetentionConfig(**retention_settings),
    )
    cfg.save_config(config)
    with Catalog(config.catalog_path):
        pass
    Path(config.data_root).mkdir(parents=True, exist_ok=True)
    config = cfg.load_config(path)
    first = nightly(config, url)
    assert first.exit_code == 0 and first.files_downloaded == 16, first.render()
    return config


def nightly(config: cfg.MirrorConfig, url: str, now: datetime = NOW, **kw):
    with retention.clock(now):
        return update_mirror(config, url, options(**kw))


def with_entry(config: cfg.MirrorConfig, **changes) -> cfg.MirrorConfig:
    entry = replace(config.get_series(SERIES), **changes)
    cfg.save_config(cfg.with_series(config, entry))
    return cfg.load_config(config.mirror_dir)


def with_retention(config: cfg.MirrorConfig, **changes) -> cfg.MirrorConfig:
    cfg.save_config(replace(config, retention=replace(config.retention, **changes)))
    return cfg.load_config(config.mirror_dir)


def files_on_disk(root: str | Path) -> set[str]:
    root = Path(root)
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def inventory(config: cfg.MirrorConfig) -> dict[str, int]:
    with Catalog(config.catalog_path) as catalog:
        return dict(catalog.execute("SELECT path, size FROM local_files WHERE state = 'layout'").fetchall())


def record_times(config: cfg.MirrorConfig) -> dict[str, datetime]:
    """record key -> T_REC (UTC) of the HMI records."""
    with Catalog(config.catalog_path) as catalog:
        return dict(catalog.execute("SELECT _key, T_REC FROM kw_hmi_m_720s").fetchall())


def times_of_files(config: cfg.MirrorConfig) -> list[datetime]:
    times = record_times(config)
    with Catalog(config.catalog_path) as catalog:
        keys = [k for (k,) in catalog.execute("SELECT record_key FROM local_files WHERE state = 'layout'").fetchall()]
    return sorted(times[k] for k in keys)


def run_cli(*args: str):
    return CliRunner().invoke(cli, list(args))


# -- keep -------------------------------------------------------------------------------------------
def test_keep_drops_old_records_and_the_next_night_does_not_fetch_them_back(tmp_path, emu):
    config = hmi_mirror(tmp_path / "m", emu.url)
    before = files_on_disk(config.data_root)
    config = with_entry(config, keep="1h")
    config = with_retention(config, max_delete_fraction=1.0)
    horizon = NOW - timedelta(hours=1)
    old = sum(1 for t in times_of_files(config) if t < horizon)
    assert 0 < old < 16
    second = nightly(config, emu.url)
    assert second.exit_code == 0, second.render()
    assert second.retention["removed"][SERIES]["keep"]["files"] == old
    assert second.files_downloaded == 0 and "retention: removed" in second.render()
    after = files_on_disk(config.data_root)
    assert len(after) == 16 - old and after < before
    assert min(times_of_files(config)) >= horizon
    assert set(inventory(config)) == after  # the catalog claims no file that is gone
    # the next night: nothing of the dropped records comes back as a gap, nothing is fetched
    third = nightly(config, emu.url)
    assert third.exit_code == 0 and third.files_downloaded == 0 and third.planned_queries == 0, third.render()
    assert "missing" not in third.gaps and files_on_disk(config.data_root) == after
    assert third.retention["files"] == 0
    # and the readers' diff (what `status` shows) agrees
    with retention.clock(NOW):
        result = run_cli("status", "-m", str(config.mirror_dir), "--format", "json")
    assert result.exit_code == 0, result.output
    (status,) = [s for s in json.loads(result.output)["series"] if s["series"] == SERIES]
    assert status["counts"]["missing"] == 0 and status["counts"]["orphan"] == 0


# -- max_bytes --------------------------------------------------------------------------------------
def test_max_bytes_removes_the_oldest_records_down_to_the_quota(tmp_path, emu):
    config = hmi_mirror(tmp_path / "m", emu.url, max_delete_fraction=1.0)
    sizes = inventory(config)
    total = sum(sizes.values())
    quota = total * 6 // 16 + 1
    config = with_entry(config, max_bytes=str(quota))
    times = times_of_files(config)
    second = nightly(config, emu.url)
    assert second.exit_code == 0, second.render()
    left = inventory(config)
    assert sum(left.values()) <= quota < sum(left.values()) + max(sizes.values())  # down to, not below, the quota
    assert times_of_files(config) == times[-len(left):]  # the newest stayed, the oldest went
    assert second.retention["removed"][SERIES]["quota"]["files"] == 16 - len(left)
    with Catalog(config.catalog_path) as catalog:
        (horizon,), = catalog.execute("SELECT quota_before FROM retention_horizons WHERE series = $s",
                                      {"s": SERIES}).fetchall()
    assert horizon == times[-len(left)]
    third = nightly(config, emu.url)
    assert third.files_downloaded == 0 and "missing" not in third.gaps, third.render()
    assert inventory(config) == left
    # status shows the bytes against the quota
    result = run_cli("status", "-m", str(config.mirror_dir))
    assert result.exit_code == 0 and "of max_bytes" in result.output, result.output
    status = json.loads(run_cli("status", "-m", str(config.mirror_dir), "--format", "json").output)
    (hmi,) = [s for s in status["series"] if s["series"] == SERIES]
    assert hmi["quota"] == quota and hmi["counts"]["missing"] == 0  # the readers' diff keeps the horizon too


# -- orphans ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("policy", ["keep", "trash", "delete"])
def test_orphans_are_kept_trashed_or_deleted(tmp_path, emu, policy):
    config = hmi_mirror(tmp_path / "m", emu.url)
    config = with_entry(config, orphans=policy)
    key = sorted(record_times(config))[5]
    delete_upstream(emu, key)
    (path,) = [p for p in inventory(config) if p.startswith(f"{SERIES}/")
               and record_key_of(config, p) == key]
    second = nightly(config, emu.url)
    assert second.exit_code == 0 and second.files_downloaded == 1, second.render()  # the new slot
    trashed = Path(config.trash_root) / "2024-07-01" / path
    on_disk = files_on_disk(config.data_root)
    assert set(inventory(config)) == on_disk
    if policy == "keep":
        assert path in on_disk and not trashed.exists() and second.gaps.get("orphan") == 1
        assert second.retention == {}  # nothing configured to go: retention costs nothing
    else:
        assert path not in on_disk and len(on_disk) == 16
        assert second.retention["removed"][SERIES]["orphan"]["files"] == 1
        assert trashed.is_file() == (policy == "trash")
        assert (second.retention["trashed"], second.retention["deleted"]) == ((1, 0) if policy == "trash" else (0, 1))
    third = nightly(config, emu.url)
    assert third.files_downloaded == 0 and "missing" not in third.gaps


def test_a_trash_on_another_filesystem_keeps_the_orphan_and_says_why(tmp_path, emu):
    """Moving into a trash on another filesystem is a copy of every file (onto the catalog's disk,
    say): the orphan stays where it is, and the night's summary says why, even with -q."""
    import shutil

    other = Path("/dev/shm")
    if not other.is_dir() or os.stat(other).st_dev == os.stat(tmp_path).st_dev or not os.access(other, os.W_OK):
        pytest.skip("no second writable filesystem (/dev/shm) here")
    data = other / f"jsocmirror-test-{os.getpid()}-{tmp_path.name}"
    try:
        config = hmi_mirror(tmp_path / "m", emu.url, data=str(data), orphans="trash")
        key = sorted(record_times(config))[5]
        (path,) = [p for p in inventory(config) if record_key_of(config, p) == key]
        delete_upstream(emu, key)
        night = nightly(config, emu.url)
        assert night.exit_code == 0 and night.needs_a_person, night.render()
        assert "another filesystem" in night.retention["failures"][0]["reason"]
        assert (data / path).is_file() and not list(Path(config.trash_root).rglob("*.fits"))
    finally:
        shutil.rmtree(data, ignore_errors=True)


def delete_upstream(emu, key: str) -> None:
    """JSOC deletes a record; a new slot moves the series' probe so the next sync looks again."""
    emu.world.delete(SERIES, key)
    emu.world.advance(720)


def record_key_of(config: cfg.MirrorConfig, path: str) -> str:
    with Catalog(config.catalog_path) as catalog:
        return catalog.execute("SELECT record_key FROM local_files WHERE path = $p", {"p": path}).fetchall()[0][0]


def test_trash_is_emptied_after_its_age_and_nothing_else_in_it_is_touched(tmp_path, emu):
    config = hmi_mirror(tmp_path / "m", emu.url, orphans="trash", trash_days=7)
    key = sorted(record_times(config))[3]
    delete_upstream(emu, key)
    assert nightly(config, emu.url).retention["trashed"] == 1
    trash = Path(config.trash_root)
    dated = trash / "2024-07-01"
    assert len(files_on_disk(dated)) == 1
    own = trash / "keep-me"  # the operator's own things in the trash are never removed
    own.mkdir()
    (own / "note.txt").write_text("mine")
    (trash / "2024-06-01.txt").write_text("not a dated folder")
    old_mtime = (NOW - timedelta(days=30)).timestamp()
    os.utime(own / "note.txt", (old_mtime, old_mtime))  # old files do not make a folder due: its date does
    with retention.clock(NOW):
        result = run_cli("prune", "-m", str(config.mirror_dir))
    assert result.exit_code == 0 and dated.exists(), result.output  # today's folder is young
    with retention.clock(NOW + timedelta(days=7)):  # a folder is due once its whole day is trash_days old
        assert run_cli("prune", "-m", str(config.mirror_dir)).exit_code == 0
    assert dated.exists()
    with retention.clock(NOW + timedelta(days=8, hours=1)):
        dry = run_cli("prune", "-m", str(config.mirror_dir), "--dry-run")
        assert dry.exit_code == 0 and "would be emptied" in dry.output and dated.exists(), dry.output
        result = run_cli("prune", "-m", str(config.mirror_dir))
    assert result.exit_code == 0 and "emptied 1 trash folders" in result.output, result.output
    assert not dated.exists() and (own / "note.txt").read_text() == "mine" and (trash / "2024-06-01.txt").exists()


# -- the rules ---------------------------------------------------------------------------------------
def test_a_run_with_a_failed_file_deletes_nothing(tmp_path, emu):
    config = hmi_mirror(tmp_path / "m", emu.url, orphans="delete")
    keys = sorted(record_times(config))
    delete_upstream(emu, keys[2])  # an orphan that would be deleted
    missing = sorted(inventory(config))[8]
    os.unlink(Path(config.data_root) / missing)  # a gap the night refetches, and JSOC answers 404
    with Catalog(config.catalog_path) as catalog:
        recnum = catalog.execute("SELECT k._recnum FROM kw_hmi_m_720s AS k JOIN local_files AS f "
                                 "ON f.record_key = k._key WHERE f.path = $p", {"p": missing}).fetchall()[0][0]
    emu.faults.mark_missing(SERIES, recnum)
    before = files_on_disk(config.data_root)
    summary = nightly(config, emu.url)
    assert summary.exit_code == 1 and summary.failures, summary.render()
    assert "nothing removed: the run had errors" in summary.render()
    assert files_on_disk(config.data_root) - before == {max(files_on_disk(config.data_root))}  # the new slot landed
    assert before <= files_on_disk(config.data_root) and summary.gaps.get("orphan") == 1


def test_the_guard_stops_a_mass_deletion_by_a_catalog_that_lost_its_rows(tmp_path, emu):
    config = hmi_mirror(tmp_path / "m", emu.url, orphans="delete")
    with Catalog(config.catalog_path) as catalog:  # most of the series' rows vanish from the catalog
        catalog.execute("DELETE FROM kw_hmi_m_720s WHERE _key IN (SELECT _key FROM kw_hmi_m_720s ORDER BY _key "
                        "LIMIT 12)")
    before = files_on_disk(config.data_root)
    with retention.clock(NOW):
        result = run_cli("prune", "-m", str(config.mirror_dir))
    assert result.exit_code == 1, result.output
    assert "REFUSED" in result.output and "max_delete_fraction" in result.output and "--force" in result.output
    assert files_on_disk(config.data_root) == before and set(inventory(config)) == before
    with retention.clock(NOW):
        forced = run_cli("prune", "-m", str(config.mirror_dir), "--dry-run", "--force", "--list")
    assert forced.exit_code == 0 and forced.output.count("orphan  delete") == 12, forced.output
    assert files_on_disk(config.data_root) == before


def test_dry_run_lists_what_would_go_and_deletes_nothing(tmp_path, emu):
    config = hmi_mirror(tmp_path / "m", emu.url, max_delete_fraction=1.0)
    config = with_entry(config, keep="1h")
    before, rows = files_on_disk(config.data_root), inventory(config)
    # a file deleted by hand since the last scan: the dry run scans (into temporary tables) as
    # the real run does, so it lists what the real run would remove, not the stale inventory
    gone = sorted(before)[0]
    (Path(config.data_root) / gone).unlink()
    before.discard(gone)
    catalog_bytes = config.catalog_path.read_bytes()
    with retention.clock(NOW):
        result = run_cli("prune", "-m", str(config.mirror_dir), "--dry-run", "--list")
    assert result.exit_code == 0, result.output
    assert config.catalog_path.read_bytes() == catalog_bytes and gone not in result.output
    old = sum(1 for t in times_of_files(config) if t < NOW - timedelta(hours=1)) - 1  # less the one deleted
    assert f"keep    {old} files" in result.output and "would go" in result.output
    assert result.output.count("keep    delete") == old
    summary = nightly(config, emu.url, dry_run=True)
    assert summary.retention["dry_run"] and summary.retention["files"] == old
    assert "would remove" in summary.render()
    assert files_on_disk(config.data_root) == before and inventory(config) == rows
    with Catalog(config.catalog_path) as catalog:
        assert catalog.execute("SELECT count(*) FROM retention_horizons").fetchall() == [(0,)]


def test_files_outside_the_layout_are_never_touched(tmp_path, emu):
    config = hmi_mirror(tmp_path / "m", emu.url, orphans="delete", max_delete_fraction=1.0)
    root = Path(config.data_root)
    strays = [root / "notes.txt", root / SERIES / "README", root / SERIES / "2024" / "copy.fits"]
    for stray in strays:
        stray.parent.mkdir(parents=True, exist_ok=True)
        stray.write_bytes(b"operator's file")
    outside = tmp_path / "outside.fits"
    outside.write_bytes(b"x")
    (root / "link.fits").symlink_to(outside)
    config = with_entry(config, keep="1h", max_bytes="1 B")  # every record wants to go
    with retention.clock(NOW):
        result = run_cli("prune", "-m", str(config.mirror_dir), "--force")
    assert result.exit_code == 0, result.output
    assert all(s.read_bytes() == b"operator's file" for s in strays)
    assert outside.exists() and (root / "link.fits").is_symlink()
    layout_left = set(inventory(config))
    assert len(layout_left) >= 1  # the newest record's files stay even under a tiny quota
    assert files_on_disk(root) == layout_left | {str(s.relative_to(root)) for s in strays} | {"link.fits"}


@pytest.mark.parametrize("line, message", [
    ('keep = "90 parsecs"', "keep '90 parsecs' is not a duration: use a positive number and s, m, h, d or w"),
    ('max_bytes = "-1"', "max_bytes '-1' is not a size"),
    ('max_bytes = "2 XB"', "max_bytes '2 XB' is not a size: use a positive number of bytes or a number with B, kB"),
    ('orphans = "burn"', "orphans 'burn' is not accepted; use one of: keep, trash, delete"),
])
def test_bad_retention_values_exit_2_with_one_line_and_change_nothing(tmp_path, emu, line, message):
    config = hmi_mirror(tmp_path / "m", emu.url)
    text = config.config_path.read_text()
    config.config_path.write_text(text.replace('start = "', f'{line}\nstart = "', 1))
    bad = config.config_path.read_text()
    before = files_on_disk(config.data_root)
    for args in (["prune"], ["prune", "--dry-run"], ["update"]):
        result = run_cli(*args, "-m", str(config.mirror_dir))
        assert result.exit_code == 2, result.output
        assert message in result.output and result.output.count("\n") == 1, result.output
    assert files_on_disk(config.data_root) == before and config.config_path.read_text() == bad


# -- units ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, size", [
    ("2 TB", 2 * 10**12), ("500 GiB", 500 * 2**30), ("10GB", 10**10), ("1e12", 10**12), (12345, 12345),
    ("1.5 kB", 1500), ("7", 7),
])
def test_parse_size(text, size):
    assert cfg.parse_size(text) == size


@pytest.mark.parametrize("text", ["-1", "0", "2 XB", "", "lots", True, None, "1e400"])
def test_parse_size_refuses(text):
    with pytest.raises(ValueError, match="is not a size: .*KiB, MiB, GiB, TiB, PiB"):
        cfg.parse_size(text)


def test_parse_age_takes_weeks_and_drms_durations():
    assert cfg.parse_age("2w") == 14 * 86400 and cfg.parse_age("90d") == 90 * 86400 and cfg.parse_age("12h") == 43200
    with pytest.raises(ValueError, match="not a duration"):
        cfg.parse_age("90")  # a bare number would be seconds to DRMS: too easy to mean days


def test_trash_is_refused_for_an_object_storage_root(tmp_path):
    config = cfg.MirrorConfig(mirror_dir=tmp_path, data="s3://bucket/sdo",
                              series=[cfg.SeriesConfig(SERIES, orphans="trash")])
    with pytest.raises(cfg.ConfigError, match="needs a local data root"):
        cfg.validate_config(config)
    cfg.validate_config(replace(config, series=[cfg.SeriesConfig(SERIES, orphans="delete")]))
    with pytest.raises(cfg.ConfigError, match="overlaps the data root"):
        cfg.validate_config(cfg.MirrorConfig(mirror_dir=tmp_path, retention=cfg.RetentionConfig(trash="data/trash")))
    with pytest.raises(cfg.ConfigError, match="must be a directory inside the mirror"):
        cfg.validate_config(cfg.MirrorConfig(mirror_dir=tmp_path / "m", retention=cfg.RetentionConfig(trash="../t")))


def test_keep_and_orphans_delete_through_fsspec_on_an_object_root(tmp_path, emu):
    import fsspec

    path = tmp_path / "m"
    path.mkdir()
    root = f"memory://retention-{os.getpid()}-{id(path)}"
    config = cfg.MirrorConfig(
        mirror_dir=path.resolve(), server=emu.url, email="mirror@example.org", data=root,
        series=[cfg.SeriesConfig(series=SERIES, segments=["magnetogram"], start=HMI_START)],
        transfer=cfg.TransferConfig(max_connections=2, poll_interval=0.05),
        retention=cfg.RetentionConfig(max_delete_fraction=1.0, orphans="delete"))
    cfg.save_config(config)
    fs, base = fsspec.core.url_to_fs(root)
    fs.makedirs(base, exist_ok=True)
    first = nightly(cfg.load_config(path), emu.url)
    assert first.files_downloaded == 16, first.render()
    fs.pipe(f"{base}/notes.txt", b"operator's")
    config = with_entry(cfg.load_config(path), keep="1h")
    second = nightly(config, emu.url)
    assert second.exit_code == 0, second.render()
    removed = second.retention["removed"][SERIES]["keep"]["files"]
    left = {p.removeprefix(base.rstrip("/") + "/") for p in fs.find(base)}
    assert removed > 0 and len(left) == 16 - removed + 1 and "notes.txt" in left
    assert set(inventory(config)) == left - {"notes.txt"}
    with pytest.raises(cfg.ConfigError, match="needs a local data root"):
        with_retention(config, orphans="trash")
