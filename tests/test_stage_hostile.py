"""Exports under a stuck or lying JSOC: no wait without end, no answer kept on trust (issue 16).

Each test is a few nights of the real nightly job against the emulator (through tests/hostile.py's
proxy where the server must lie), asserting the night ends in bounded time, the bad answer is not
kept, and the following clean nights converge to what a clean run lands.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import quick_emulator
from hostile import HostileProxy, rewrite
from test_update import landed_state, make_mirror, mirror_files, options, temp_files, wanted_state

from jsocmirror import config as cfg
from jsocmirror.catalog import Catalog
from jsocmirror.series import builtin_series
from jsocmirror.stage import check_export_reply
from jsocmirror.update import fetch_mirror, update_mirror

AIA = "aia.lev1_euv_12s"


def _statuses(config) -> list[str]:
    with Catalog(config.catalog_path) as catalog:
        return [row[0] for row in catalog.execute("SELECT status FROM export_requests ORDER BY id").fetchall()]


def _config_waits(config, **transfer) -> None:
    """The mirror's own [transfer] settings drive the governor (no StagePolicy from the test)."""
    for name, value in transfer.items():
        setattr(config.transfer, name, value)


def _own_policy(**kw):
    return options(stage_policy=None, **kw)


# -- a stuck export ------------------------------------------------------------------------------
def test_stuck_export_night_ends_within_export_wait_and_is_abandoned_later(tmp_path):
    with quick_emulator() as emu:
        config = make_mirror(tmp_path / "m", emu.url)
        _config_waits(config, export_wait=2.0, poll_interval=0.1)
        emu.faults.stuck_exports = 1.0
        started = time.monotonic()
        first = update_mirror(config, emu.url, _own_policy())
        first_seconds = time.monotonic() - started
        emu.faults.stuck_exports = 0.0
        aia = [f for f in first.failures if f["series"] == AIA]
        assert first.exit_code == 1 and aia and {f["kind"] for f in aia} == {"pending"}
        assert all("export_wait" in f["reason"] for f in aia)
        assert first_seconds < 30, first_seconds
        asked = len(emu.exports.store.all())

        # the next night resumes the same request, waits export_wait again, and asks nothing new
        started = time.monotonic()
        second = update_mirror(config, emu.url, _own_policy())
        assert time.monotonic() - started < 30
        assert second.exit_code == 1 and second.exports_resumed == 1 and len(emu.exports.store.all()) == asked
        assert _statuses(config) == ["pending"]

        # days later: JSOC has expired the stuck request; ours is past export_max_hours (48 h)
        emu.world.advance(8 * 86400)
        with Catalog(config.catalog_path) as catalog:
            catalog.execute("UPDATE export_requests SET submitted_at = submitted_at - INTERVAL 3 DAY")
        third = fetch_mirror(config, emu.url, _own_policy())
        assert third.exit_code == 0, third.failures[:3]
        assert third.exports_abandoned == 1 and third.exports_submitted == 1
        assert _statuses(config)[0] == "abandoned" and _statuses(config)[-1] == "downloaded"
        assert landed_state(config) == wanted_state(config)


def test_busy_email_is_waited_on_within_export_wait_only(tmp_path):
    """Status 7 (another export pending for the email) is retried politely, but only for export_wait."""
    with quick_emulator() as emu:
        config = make_mirror(tmp_path / "m", emu.url)
        _config_waits(config, export_wait=1.5, poll_interval=0.1)
        emu.faults.status7 = 1.0
        started = time.monotonic()
        night = update_mirror(config, emu.url, _own_policy())
        assert time.monotonic() - started < 30
        aia = [f for f in night.failures if f["series"] == AIA]
        assert night.exit_code == 1 and aia and all("status 7" in f["reason"] for f in aia)


# -- hostile export answers ----------------------------------------------------------------------
def _each_file(value):
    def edit(reply: dict) -> None:
        for item in reply.get("data") or ():
            item["filename"] = value
    return edit


def _set(field, value):
    def edit(reply: dict) -> None:
        if reply.get("data"):
            reply[field] = value
    return edit


HOSTILE_ANSWERS = {
    "climbing": _each_file("../../evil.fits"),
    "absolute": _each_file("/tmp/evil.fits"),
    "backslash": _each_file("a\\..\\evil.fits"),
    "overlong": _each_file("x" * 300 + ".fits"),
    "nul": _each_file("evil\x00.fits"),
    "host_port_dir": _set("dir", "/SUM1/127.0.0.2:8080/S00000"),
    "count_disagrees": _set("count", "0"),
    "absurd_size": _set("size", "1e30"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_ANSWERS))
def test_hostile_export_answer_is_refused_then_clean_nights_converge(tmp_path, name):
    with quick_emulator() as emu, HostileProxy(emu.url) as proxy:
        clean = make_mirror(tmp_path / "clean", emu.url, email="clean@example.org")
        assert update_mirror(clean, emu.url, options()).exit_code == 0
        reference = mirror_files(clean)

        config = make_mirror(tmp_path / "m", proxy.url)
        proxy.add("op=exp_status", "json", rewrite(HOSTILE_ANSWERS[name]))  # every answer of the night
        night = update_mirror(config, proxy.url, options())
        proxy.clear()
        aia = [f for f in night.failures if f["series"] == AIA]
        assert night.exit_code == 1 and night.exports_refused >= 1
        assert aia and all("reply refused" in f["reason"] for f in aia), aia[:2]
        assert "refused" in _statuses(config) and "done" not in _statuses(config)
        with Catalog(config.catalog_path) as catalog:  # nothing of the bad answer was stored
            stored = catalog.execute("SELECT count(*) FROM export_requests WHERE result IS NOT NULL").fetchall()
        assert stored == [(0,)]
        assert not list(tmp_path.rglob("evil*")) and not Path("/tmp/evil.fits").exists()

        again = update_mirror(config, proxy.url, options())
        assert again.exit_code == 0, again.failures[:3]
        assert mirror_files(config) == reference and not temp_files(config)


def test_stored_answer_is_checked_again_before_reuse(tmp_path):
    """A catalog from before the checks may hold a bad stored answer: it is refused, not re-used."""
    with quick_emulator() as emu, HostileProxy(emu.url) as proxy:
        config = make_mirror(tmp_path / "m", proxy.url)
        proxy.add("/SUM", "status", 503)  # the export finishes, its files cannot be fetched tonight
        first = update_mirror(config, proxy.url, options())
        proxy.clear()
        assert first.exit_code == 1 and _statuses(config)[-1] == "done"
        with Catalog(config.catalog_path) as catalog:  # as an older jsocmirror would have kept it
            result = json.loads(catalog.execute("SELECT result FROM export_requests").fetchall()[0][0])
            for item in result["data"]:
                item["filename"] = "../../evil.fits"
            catalog.execute("UPDATE export_requests SET result = $r, requestid = ''", {"r": json.dumps(result)})
        second = update_mirror(config, proxy.url, options())
        assert second.exports_refused == 1 and not list(tmp_path.rglob("evil*"))
        third = update_mirror(config, proxy.url, options())
        assert third.exit_code == 0 and landed_state(config) == wanted_state(config)


def test_export_whose_files_keep_failing_is_replaced(tmp_path):
    with quick_emulator() as emu, HostileProxy(emu.url) as proxy:
        config = make_mirror(tmp_path / "m", proxy.url)
        proxy.add("/D9", "status", 404)  # export storage units (D9000000000 and up): every file 404s
        first = update_mirror(config, proxy.url, options())
        assert first.exit_code == 1 and _statuses(config) == ["done"]
        with Catalog(config.catalog_path) as catalog:
            folder = json.loads(catalog.execute("SELECT result FROM export_requests").fetchall()[0][0])["dir"]
        proxy.clear()
        proxy.add(folder + "/", "status", 404)  # that one export's files stay gone
        for night in (2, 3):
            again = update_mirror(config, proxy.url, options())
            assert again.exit_code == 1 and again.exports_resumed == 1 and again.exports_submitted == 0
        with Catalog(config.catalog_path) as catalog:
            assert catalog.execute("SELECT file_failures FROM export_requests").fetchall() == [(3,)]
        emu.world.advance(25 * 3600)  # past JSOC's 24 h re-use of an identical request
        fourth = fetch_mirror(config, proxy.url, options())
        assert fourth.exit_code == 0, fourth.failures[:3]
        assert fourth.exports_discarded == 1 and fourth.exports_submitted == 1
        assert _statuses(config) == ["discarded", "downloaded"]
        assert landed_state(config) == wanted_state(config)


# -- the run's deadline --------------------------------------------------------------------------
def test_max_hours_stops_the_run_with_one_line_and_exit_1(tmp_path):
    with quick_emulator() as emu:
        config = make_mirror(tmp_path / "m", emu.url)
        config.transfer.export_wait = 600.0  # a stuck export would hold the night for 10 minutes...
        config.run.max_hours = 0.002  # ...but the run may take 7.2 s
        cfg.save_config(config)
        emu.faults.stuck_exports = 1.0
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "jsocmirror", "-q", "update", "-m", str(config.mirror_dir)],
                              capture_output=True, text=True, timeout=120, env=dict(os.environ, NO_COLOR="1"))
        seconds = time.monotonic() - started
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1, proc.stderr
    assert len(lines) == 1 and "max_hours = 0.002" in lines[0] and "Traceback" not in proc.stderr, proc.stderr
    assert seconds < 30, seconds
    with Catalog(config.catalog_path) as catalog:
        runs = catalog.execute("SELECT command, status FROM runs ORDER BY started_at").fetchall()
        assert runs[0] == ("update", "deadline"), runs
        assert catalog.execute("SELECT status FROM export_requests").fetchall() == [("pending",)]


def test_max_hours_is_validated(tmp_path):
    raw = {"run": {"max_hours": 0}}
    with pytest.raises(cfg.ConfigError, match=r"\[run\] max_hours 0 must be a number from 0.001 to 168 hours"):
        cfg.config_from_dict(raw, tmp_path)
    with pytest.raises(cfg.ConfigError, match=r"\[transfer\] export_wait 'soon' must be a number"):
        cfg.config_from_dict({"transfer": {"export_wait": "soon"}}, tmp_path)
    assert cfg.config_from_dict({"run": {"max_hours": 6}}, tmp_path).run.max_hours == 6


# -- the checks themselves -----------------------------------------------------------------------
def test_real_export_answers_pass_the_checks(fixtures_dir):
    definitions = builtin_series()
    folder = fixtures_dir / "protocol"
    files = sorted(folder.glob("*exp_status*status0*.json")) + sorted(folder.glob("*url_quick*status0*.json"))
    assert files
    for path in files:
        recorded = json.loads(path.read_text())
        reply = recorded.get("response", recorded)
        series = reply["data"][0]["record"].split("[")[0]
        assert check_export_reply(reply, definitions.get(series)) is None, path.name


@pytest.mark.parametrize("name", sorted(HOSTILE_ANSWERS))
def test_each_hostile_answer_is_named(name):
    definition = builtin_series().get("hmi.M_45s")
    reply = {"status": "0", "count": "1", "size": "15", "dir": "/SUM66/D1278070722/S00000",
             "data": [{"record": "hmi.M_45s[2012.01.01_01:01:30_TAI][2]",
                       "filename": "hmi.m_45s.20120101_010130_TAI.2.magnetogram.fits"}]}
    assert check_export_reply(reply, definition) is None
    HOSTILE_ANSWERS[name](reply)
    problem = check_export_reply(reply, definition)
    assert problem is not None and len(problem.splitlines()) == 1
