"""The nightly job end to end on the emulator: nights, dry runs, the lock, exit codes, every fault switch."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from conftest import hold_lock, quick_emulator, sync_mirror
from click.testing import CliRunner

from jsocmirror.net import NetPolicy
from jsocmirror import config as cfg
from jsocmirror.catalog import Catalog
from jsocmirror.cli import cli
from jsocmirror.download import RetryPolicy
from jsocmirror.errors import LockedError
from jsocmirror.stage import StagePolicy
from jsocmirror.update import UpdateOptions, update_mirror

EMAIL = "mirror@example.org"
FAST_RETRY = RetryPolicy(attempts=4, backoff=0.01, max_backoff=0.05, net=NetPolicy(idle_timeout=10))
FAST_STAGE = StagePolicy(poll_interval=0.02, export_wait=3.0, busy_wait=0.02, max_busy_wait=0.1, busy_retries=40)
HMI_START = "2024.06.30_21:00:00_TAI"  # 3 hours of hmi.M_720s up to the emulator's "now": 16 slots
AIA_START = "2024-06-30T23:45:00Z"  # 15 minutes of aia.lev1_euv_12s 171, every minute


def make_mirror(path: Path, url: str, *, email: str = EMAIL, aia_method: str = "url", aia_protocol: str = "fits",
                connections: int = 4) -> cfg.MirrorConfig:
    """A tiny two-series mirror: HMI by direct SUMS paths (url_quick/as-is), AIA through exports."""
    path.mkdir(parents=True, exist_ok=True)
    config = cfg.MirrorConfig(
        mirror_dir=path, server=url, email=email,
        series=[
            cfg.SeriesConfig(series="hmi.M_720s", segments=["magnetogram"], start=HMI_START),
            cfg.SeriesConfig(series="aia.lev1_euv_12s", segments=["image"], start=AIA_START, cadence="1m",
                             keys={"WAVELNTH": [171]}, method=aia_method, protocol=aia_protocol),
        ],
        transfer=cfg.TransferConfig(max_connections=connections, method="url_quick", protocol="as-is",
                                    poll_interval=0.05),
    )
    cfg.save_config(config)
    with Catalog(config.catalog_path):
        pass
    Path(config.data_root).mkdir(parents=True, exist_ok=True)
    return cfg.load_config(path)


def options(**kw) -> UpdateOptions:
    kw.setdefault("retry_policy", FAST_RETRY)
    kw.setdefault("stage_policy", FAST_STAGE)
    return UpdateOptions(**kw)


def mirror_files(config: cfg.MirrorConfig) -> dict[str, bytes]:
    root = Path(config.data_root)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def temp_files(config: cfg.MirrorConfig) -> list[str]:
    root = Path(config.data_root)
    return [str(p) for p in root.rglob("*") if p.is_file() and (p.name.startswith(".") or ".part" in p.name)]


def wanted_state(config: cfg.MirrorConfig) -> dict[tuple[str, str], int]:
    """(series, record key) -> RECNUM of every record the catalog wants with an image."""
    with Catalog(config.catalog_path) as catalog:
        out = {}
        for series, table in (("hmi.M_720s", "hmi_m_720s"), ("aia.lev1_euv_12s", "aia_lev1_euv_12s")):
            if not catalog.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = $t",
                                   {"t": table}).fetchall()[0][0]:
                continue
            for key, recnum in catalog.execute(f"SELECT _key, _recnum FROM {table} WHERE QUALITY >= 0").fetchall():
                out[(series, key)] = recnum
        return out


def landed_state(config: cfg.MirrorConfig) -> dict[tuple[str, str], int]:
    with Catalog(config.catalog_path) as catalog:
        rows = catalog.execute("SELECT f.series, f.record_key, c.fetched_recnum FROM local_files AS f "
                               "LEFT JOIN file_checks AS c USING (path) WHERE f.state = 'layout'").fetchall()
    return {(s, k): r for s, k, r in rows}


@pytest.fixture()
def emu():
    with quick_emulator() as emulator:
        yield emulator


def test_update_mirror_follows_a_night_of_new_reprocessed_and_deleted_records(tmp_path, emu):
    config = make_mirror(tmp_path / "m", emu.url)
    first = update_mirror(config, emu.url, options())
    assert first.exit_code == 0 and not first.failures, first.render()
    assert first.exports_submitted == 1 and first.listings == 1
    assert landed_state(config) == wanted_state(config)
    assert not temp_files(config)
    # the night: a day of new records, two reprocessed and one deleted inside the HMI window
    keys = sorted(k for s, k in wanted_state(config) if s == "hmi.M_720s")
    emu.world.next_night(seconds=3600)  # a short "night" keeps the test small: 1 h of new records
    emu.world.reprocess("hmi.M_720s", keys[1])
    emu.world.reprocess("hmi.M_720s", keys[3])
    emu.world.delete("hmi.M_720s", keys[5])
    before = mirror_files(config)
    second = update_mirror(config, emu.url, options())
    assert second.exit_code == 0, second.render()
    assert second.gaps.get("stale") == 2
    new_records = second.gaps["missing"]
    assert second.files_downloaded == new_records + 2  # exactly the change, nothing else
    assert landed_state(config).items() >= wanted_state(config).items()
    after = mirror_files(config)
    changed = {p for p in before if before[p] != after.get(p)}
    assert len(changed) == 2  # the two reprocessed files were replaced, nothing else touched
    assert len(after) == len(before) + new_records  # the deleted record's file stays (orphan, never deleted)
    # an update right after a successful one stages and downloads nothing
    requests = len(emu.exports.store.all())
    mtimes = {p: os.stat(Path(config.data_root) / p).st_mtime_ns for p in after}
    third = update_mirror(config, emu.url, options())
    assert third.exit_code == 0 and third.files_downloaded == 0 and third.planned_queries == 0
    assert third.exports_submitted == 0 and third.listings == 0 and len(emu.exports.store.all()) == requests
    assert {p: os.stat(Path(config.data_root) / p).st_mtime_ns for p in after} == mtimes
    # the nightly job alone leaves the mirror queryable through the <slug>_files views
    with Catalog(config.catalog_path) as catalog:
        viewed = catalog.execute("SELECT count(*), count(file_recnum) FROM hmi_m_720s_files "
                                 "WHERE state = 'layout'").fetchall()
    assert viewed == [(len([k for s, k in landed_state(config) if s == "hmi.M_720s"]),) * 2]


def test_update_dry_run_prints_the_plan_and_changes_nothing(tmp_path, emu):
    config = make_mirror(tmp_path / "m", emu.url)
    assert CliRunner().invoke(cli, ["sync", "-m", str(config.mirror_dir)]).exit_code == 0
    logs = sorted((config.mirror_dir / "logs").glob("*"))
    result = CliRunner().invoke(cli, ["update", "-m", str(config.mirror_dir), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "(dry run)" in result.output and "hmi.M_720s[2024.06.30_21:00:00_TAI-" in result.output
    assert "{magnetogram}" in result.output and "[171]{image}" in result.output
    assert mirror_files(config) == {} and len(emu.exports.store.all()) == 0
    assert sorted((config.mirror_dir / "logs").glob("*")) == logs  # a dry run leaves no log file either


def test_update_json_summary_and_exit_code_on_missing_server_files(tmp_path, emu):
    config = make_mirror(tmp_path / "m", emu.url)
    sync_mirror(config, emu.url)  # so we can name records (a dry run writes nothing, not even its sync)
    hmi = sorted(k for s, k in wanted_state(config) if s == "hmi.M_720s")
    with Catalog(config.catalog_path) as catalog:
        recnum = catalog.execute("SELECT _recnum FROM hmi_m_720s WHERE _key = $k", {"k": hmi[2]}).fetchall()[0][0]
    emu.faults.mark_missing("hmi.M_720s", recnum)
    result = CliRunner().invoke(cli, ["fetch", "-m", str(config.mirror_dir), "--json"])
    assert result.exit_code == 1, result.output
    summary = json.loads(result.output[result.output.index("{"):])
    assert [(f["series"], f["record_key"], f["segment"]) for f in summary["failures"]] == [
        ("hmi.M_720s", hmi[2], "magnetogram")]
    assert "404" in summary["failures"][0]["reason"] and summary["exit_code"] == 1
    assert not temp_files(config)
    assert ("hmi.M_720s", hmi[2]) not in landed_state(config)


def test_update_lock_refuses_a_second_run_or_waits(tmp_path, emu):
    config = make_mirror(tmp_path / "m", emu.url)
    runner = CliRunner()
    holder = hold_lock(config.mirror_dir, 30)
    try:
        with pytest.raises(LockedError, match="another jsocmirror run"):
            update_mirror(config, emu.url, options())
        result = runner.invoke(cli, ["update", "-m", str(config.mirror_dir)])
        assert result.exit_code == 3 and "another jsocmirror run" in result.output
        result = runner.invoke(cli, ["update", "-m", str(config.mirror_dir), "--json", "--wait", "1"])
        assert result.exit_code == 3, result.output
        error = json.loads(result.stdout)  # the wait is announced on stderr
        assert error["code"] == 3 and error["error"] == "locked" and "waited 1 s" in error["message"]
    finally:
        holder.kill()
        holder.wait()
    holder = hold_lock(config.mirror_dir, 1.5)
    started = time.monotonic()
    result = runner.invoke(cli, ["fetch", "-m", str(config.mirror_dir), "--wait"])
    holder.wait()
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started >= 0.5
    log = max((config.mirror_dir / "logs").glob("fetch-*.log")).read_text()
    assert "waiting up to 3600 s" in log and "test-holder" in log


def test_update_usage_errors_exit_2(tmp_path, emu):
    config = make_mirror(tmp_path / "m", emu.url)
    result = CliRunner().invoke(cli, ["update", "-m", str(config.mirror_dir), "hmi.nope"])
    assert result.exit_code == 2 and "hmi.nope" in result.output
    result = CliRunner().invoke(cli, ["fetch", "-m", str(tmp_path / "not-a-mirror")])
    assert result.exit_code == 2 and "not a jsocmirror mirror" in result.output


# -- every fault switch leaves the mirror correct ------------------------------------------------------
TRANSIENT = [
    ("http_503", {"http_503": 0.3, "endpoints": "files"}),
    ("http_500", {"http_500": 0.2}),
    ("reset_mid_body", {"reset_mid_body": 0.4}),
    ("truncate_body", {"truncate_body": 0.4}),
    ("wrong_length", {"wrong_length": 0.3}),
    ("slow", {"slow": 0.05}),
    ("status7", {"status7": 0.5}),
]


@pytest.mark.parametrize("name,switches", TRANSIENT, ids=[t[0] for t in TRANSIENT])
def test_update_converges_under_transient_fault(tmp_path, emu, name, switches):
    config = make_mirror(tmp_path / "m", emu.url)
    emu.faults.update(**switches)
    summary = update_mirror(config, emu.url, options(stage_policy=StagePolicy(
        poll_interval=0.02, export_wait=3.0, busy_wait=0.02, max_busy_wait=0.05, busy_retries=60, call_retries=6)))
    fired = sum(emu.faults.counts.values())
    emu.faults.clear()
    assert fired > 0, f"fault {name} never fired"
    if summary.failures:  # a retry budget may run out under a heavy fault; the next run must finish
        summary = update_mirror(config, emu.url, options())
    assert summary.exit_code == 0, summary.render()
    assert landed_state(config) == wanted_state(config)
    assert not temp_files(config)


def test_update_reports_corrupt_files_precisely_and_recovers(tmp_path, emu):
    config = make_mirror(tmp_path / "m", emu.url)
    emu.faults.corrupt_files = 0.25  # fixed per file: the same files are always broken
    summary = update_mirror(config, emu.url, options())
    emu.faults.corrupt_files = 0.0
    broken = {(f["series"], f["record_key"]) for f in summary.failures}
    assert broken and all("corrupt" in f["reason"] for f in summary.failures)
    landed = landed_state(config)
    assert not broken & set(landed) and set(landed) | broken == set(wanted_state(config))
    assert not temp_files(config)
    again = update_mirror(config, emu.url, options())
    assert again.exit_code == 0 and again.files_downloaded == len(broken)
    assert landed_state(config) == wanted_state(config)


def test_update_stuck_export_is_reported_then_resumed(tmp_path, emu):
    config = make_mirror(tmp_path / "m", emu.url)
    emu.faults.stuck_exports = 1.0
    summary = update_mirror(config, emu.url, options(stage_policy=StagePolicy(poll_interval=0.02,
                                                                              export_wait=0.3)))
    emu.faults.stuck_exports = 0.0
    pending = {(f["series"], f["record_key"]) for f in summary.failures}
    assert summary.exit_code == 1 and {f["kind"] for f in summary.failures} == {"pending"}
    assert pending == {k for k in wanted_state(config) if k[0] == "aia.lev1_euv_12s"}
    for request in emu.exports.store.all():  # JSOC gets unstuck overnight
        request.stuck = False
    n_requests = len(emu.exports.store.all())
    again = update_mirror(config, emu.url, options())
    assert again.exit_code == 0 and again.exports_resumed == 1 and again.exports_submitted == 0
    assert len(emu.exports.store.all()) == n_requests
    assert landed_state(config) == wanted_state(config)


def test_update_header_fill_writes_catalog_keywords_into_as_is_files(tmp_path, emu):
    from astropy.io import fits

    from jsocmirror.download import fits_checksum_state

    config = make_mirror(tmp_path / "m", emu.url)
    config.transfer.header_fill = True
    summary = update_mirror(config, emu.url, options())
    assert summary.exit_code == 0, summary.render()
    with Catalog(config.catalog_path) as catalog:
        key, t_rec, quality = catalog.execute(
            "SELECT _key, T_REC_str, QUALITY FROM hmi_m_720s ORDER BY _key LIMIT 1").fetchall()[0]
        path = catalog.execute("SELECT path FROM local_files WHERE record_key = $k", {"k": key}).fetchall()[0][0]
    file = Path(config.data_root) / path
    assert fits_checksum_state(file) == "ok"  # DATASUM untouched, CHECKSUM recomputed
    with fits.open(file, disable_image_compression=True) as hdul:
        assert hdul[1].header["T_REC"] == t_rec and hdul[1].header["QUALITY"] == quality


def test_update_include_offline_stages_tape_records_through_an_export(tmp_path, emu):
    config = make_mirror(tmp_path / "m", emu.url)
    config.series = config.series[:1]
    config.series[0].start, config.series[0].end = "2020.06.30_00:00:00_TAI", "2020.06.30_01:00:00_TAI"
    summary = update_mirror(config, emu.url, options())
    offline = summary.gaps.get("offline", 0)
    assert offline > 0 and summary.files_downloaded == 0 and summary.exit_code == 0  # on tape: left alone
    summary = update_mirror(config, emu.url, options(include_offline=True))
    assert summary.exit_code == 0, summary.render()
    assert summary.files_downloaded == offline and summary.exports_submitted >= 1  # JSOC staged them for us
    assert landed_state(config) == wanted_state(config)


def test_update_aia_lev1_gaps_go_in_one_query_by_fsn(tmp_path, emu):
    """aia.lev1 has one FSN per record: the catalog shows it, so scattered gaps across many time
    slots are asked for in one query listing FSNs, not one query per slot."""
    config = cfg.MirrorConfig(
        mirror_dir=tmp_path, server=emu.url, email=EMAIL,
        series=[cfg.SeriesConfig(series="aia.lev1", segments=["image_lev1"], start="2024-06-30T23:57:00Z")],
        transfer=cfg.TransferConfig(max_connections=4, method="url_quick", protocol="as-is", poll_interval=0.05))
    cfg.save_config(config)
    Path(config.data_root).mkdir(parents=True)
    config = cfg.load_config(tmp_path)
    first = update_mirror(config, emu.url, options())
    assert first.exit_code == 0 and first.planned_queries == 1, first.render()
    files = sorted(p for p in Path(config.data_root).rglob("*.fits"))
    assert len(files) == first.files_downloaded > 60
    for path in files[::3]:  # scattered over every slot and wavelength
        path.unlink()
    again = update_mirror(config, emu.url, options())
    assert again.exit_code == 0 and again.planned_queries == 1, again.render()
    assert again.files_downloaded == len(files[::3])
    assert sorted(p for p in Path(config.data_root).rglob("*.fits")) == files
