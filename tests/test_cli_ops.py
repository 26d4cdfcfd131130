"""Cron-grade operation: exit codes, --json answers (errors included), -q, run logs, locks that cannot wedge.

The CLI runs in real subprocesses here where what reaches stdout and stderr matters (cron mails
whatever a job prints), against a real emulator over loopback.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import hold_lock
from test_update import make_mirror, wanted_state

from jsocmirror.catalog import Catalog
from jsocmirror.cli import cli
from jsocmirror.lock import boot_id, mirror_lock

DOCS = Path(__file__).resolve().parents[1] / "docs"


pytestmark = pytest.mark.usefixtures("clean_faults")


def jsocmirror(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 120):
    """The real command in a subprocess, its stdout and stderr kept apart."""
    return subprocess.run([sys.executable, "-m", "jsocmirror", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- quiet when well, loud when not ----------------------------------------------------------------
def test_quiet_update_prints_nothing_when_all_done_and_the_failures_otherwise(tmp_path, emu):
    config = make_mirror(tmp_path / "m", emu.url)
    done = jsocmirror("-q", "update", "-m", str(config.mirror_dir))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == ""
    log = max((config.mirror_dir / "logs").glob("update-*.log")).read_text()
    # the log holds the plan, a line per stage with its figures, and the final summary
    assert re.search(r"plan: \d+ queries for \d+ records", log)
    assert re.search(r"plan: hmi\.M_720s\[.*\(\d+ records, ~", log)
    for stage in ("sync", "scan", "diff", "stage_download"):
        assert re.search(rf"{stage} done in [\d.]+ s: ", log), stage
    assert "result: all done" in log

    # a night with one file JSOC cannot serve: exit 1, and -q shows the failure and the summary
    hmi = sorted(k for s, k in wanted_state(config) if s == "hmi.M_720s")
    victim = hmi[0]
    with Catalog(config.catalog_path) as catalog:
        recnum = catalog.execute("SELECT _recnum FROM hmi_m_720s WHERE _key = $k", {"k": victim}).fetchall()[0][0]
    _remove_record_file(config, "hmi.M_720s", victim)
    emu.faults.mark_missing("hmi.M_720s", recnum)
    failed = jsocmirror("-q", "update", "-m", str(config.mirror_dir))
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert f"FAILED: hmi.M_720s{victim} magnetogram" in failed.stdout and "result: 1 failed" in failed.stdout
    log = max((config.mirror_dir / "logs").glob("update-*.log")).read_text()
    assert f"hmi.M_720s{victim} magnetogram" in log and "404" in log and "result: 1 failed" in log


def _remove_record_file(config, series: str, key: str) -> None:
    with Catalog(config.catalog_path) as catalog:
        rows = catalog.execute("SELECT path FROM local_files WHERE series = $s AND record_key = $k",
                               {"s": series, "k": key}).fetchall()
    assert rows, f"{series}{key} has no file to remove"
    for (rel,) in rows:
        (Path(config.data_root) / rel).unlink()


def test_unreachable_source_exits_4_with_a_json_answer_and_the_error_in_the_log(tmp_path, emu):
    config = make_mirror(tmp_path / "m", emu.url)
    dead = f"http://127.0.0.1:{free_port()}/"
    text = (config.mirror_dir / "jsocmirror.toml").read_text()
    (config.mirror_dir / "jsocmirror.toml").write_text(text.replace(emu.url, dead))
    result = jsocmirror("update", "-m", str(config.mirror_dir), "--json")
    assert result.returncode == 4, result.stdout + result.stderr
    answer = json.loads(result.stdout)
    assert answer["code"] == 4 and answer["error"] == "source_unavailable"
    assert "cannot reach JSOC" in answer["message"] and dead in answer["message"]
    assert answer["summary"]["command"] == "update" and answer["summary"]["files_downloaded"] == 0
    log = max((config.mirror_dir / "logs").glob("update-*.log")).read_text()
    assert log.rstrip().splitlines()[-1].endswith(answer["message"])  # the log ends with the final error
    quiet = jsocmirror("-q", "update", "-m", str(config.mirror_dir))
    assert quiet.returncode == 4 and quiet.stdout == "" and quiet.stderr.startswith("Error: cannot reach JSOC")


def test_unregistered_email_stops_exports_with_exit_4(tmp_path, emu):
    config = make_mirror(tmp_path / "m", emu.url, email="nobody@unregistered.invalid")
    result = jsocmirror("update", "-m", str(config.mirror_dir), "--json")
    assert result.returncode == 4, result.stdout + result.stderr
    answer = json.loads(result.stdout)
    assert answer["error"] == "source_unavailable" and "nobody@unregistered.invalid" in answer["message"]
    assert "register" in answer["message"]


def test_usage_errors_answer_in_json_with_code_2(tmp_path, emu):
    config = make_mirror(tmp_path / "m", emu.url)
    assert CliRunner().invoke(cli, ["publish", "-m", str(config.mirror_dir)]).exit_code == 0
    for args, needle in ((["update", "hmi.nope"], "hmi.nope"),
                         (["update", "--wait=-1"], "-1"),
                         (["update", "--connections", "0"], "0"),
                         (["diff", "--state", "burnt"], "burnt"),
                         (["sql", "SELEC 1"], "SQL error")):
        result = jsocmirror(*args[:1], "-m", str(config.mirror_dir), "--json", *args[1:])
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        answer = json.loads(result.stdout)
        assert answer["code"] == 2 and needle in answer["message"], (args, answer)
    plain = jsocmirror("update", "-m", str(config.mirror_dir), "--wait=-1")
    assert plain.returncode == 2 and plain.stderr.strip().splitlines() == [  # one line, as every error
        "Error: -1 is not accepted: give a number of 0 or more (e.g. --wait 3600) (see 'jsocmirror update --help')"]


def test_every_reporting_command_answers_one_json_object(tmp_path, emu):
    config = make_mirror(tmp_path / "m", emu.url)
    m = ["-m", str(config.mirror_dir)]
    commands = [["sync", *m], ["scan", *m], ["fetch", *m], ["publish", *m], ["status", *m], ["diff", *m],
                ["series", "list", *m], ["series", "show", *m, "hmi.M_720s"], ["sql", *m, "SELECT 1 AS one"],
                ["export-catalog", *m, str(tmp_path / "parquet")]]
    for args in commands:
        result = CliRunner().invoke(cli, [*args, "--json"])
        assert result.exit_code == 0, (args, result.output)
        answer = json.loads(result.output)
        if isinstance(answer, dict):
            assert answer["code"] == 0, args
    status = json.loads(CliRunner().invoke(cli, ["status", *m, "--json", "--by", "day"]).output)
    hmi = next(s for s in status["series"] if s["series"] == "hmi.M_720s")
    assert set(hmi["coverage"][0]) == {"period", "present", "expected", "fraction"}
    assert hmi["coverage"][0]["present"] == hmi["coverage"][0]["expected"] > 0
    init = CliRunner().invoke(cli, ["init", str(tmp_path / "new"), "--server", emu.url, "--offline", "--json"])
    assert init.exit_code == 0 and json.loads(init.output)["logs"] == str(tmp_path / "new" / "logs")
    assert (tmp_path / "new" / "logs").is_dir()


def test_diff_table_is_limited_and_says_how_many_more(tmp_path, emu):
    config = make_mirror(tmp_path / "m", emu.url)
    assert CliRunner().invoke(cli, ["sync", "-m", str(config.mirror_dir)]).exit_code == 0
    full = CliRunner().invoke(cli, ["diff", "-m", str(config.mirror_dir), "--format", "csv"])
    gaps = len(full.output.strip().splitlines()) - 1
    assert gaps > 5
    table = CliRunner().invoke(cli, ["diff", "-m", str(config.mirror_dir), "--limit", "5"])
    lines = table.output.splitlines()
    assert sum(1 for line in lines if line.startswith("missing")) == 5
    assert f"... and {gaps - 5} more" in table.output
    listed = json.loads(CliRunner().invoke(cli, ["diff", "-m", str(config.mirror_dir), "--json",
                                                 "--limit", "3"]).output)
    assert len(listed["gaps"]) == 3 and listed["not_listed"] == gaps - 3


# -- locks that cannot wedge ---------------------------------------------------------------------
def test_a_dead_holder_recorded_in_the_lock_never_blocks(tmp_path, emu):
    """A live process holds the flock but its record names a dead pid (an NFS lock left by a crashed
    client, or a descriptor a stray child inherited): the next run replaces the lock and goes on."""
    config = make_mirror(tmp_path / "m", emu.url)
    holder = hold_lock(config.mirror_dir, record={"pid": _dead_pid(), "command": "update",
                                                  "host": socket.gethostname(), "boot_id": boot_id(), "since": "then"})
    try:
        started = time.monotonic()
        result = CliRunner().invoke(cli, ["fetch", "-m", str(config.mirror_dir)])
        assert result.exit_code == 0, result.output
        assert time.monotonic() - started < 30
        with mirror_lock(config.mirror_dir, "check"):  # the new lock file works as a lock for others
            other = jsocmirror("fetch", "-m", str(config.mirror_dir))
        assert other.returncode == 3 and "'check'" in other.stderr, other.stderr
    finally:
        holder.kill()
        holder.wait()


def test_a_holder_from_before_a_reboot_never_blocks(tmp_path, emu):
    config = make_mirror(tmp_path / "m", emu.url)
    if not boot_id():
        pytest.skip("this kernel does not expose a boot id")
    holder = hold_lock(config.mirror_dir, record={"command": "update", "host": socket.gethostname(),
                                                  "boot_id": "a-boot-long-ago", "since": "then"})
    try:
        result = jsocmirror("fetch", "-m", str(config.mirror_dir))
        assert result.returncode == 0, result.stderr
    finally:
        holder.kill()
        holder.wait()


def test_a_live_holder_blocks_until_wait_runs_out_then_exit_3(tmp_path, emu):
    config = make_mirror(tmp_path / "m", emu.url)
    holder = hold_lock(config.mirror_dir, command="long-night")
    try:
        started = time.monotonic()
        result = jsocmirror("-q", "update", "-m", str(config.mirror_dir), "--wait", "2")
        waited = time.monotonic() - started
        assert result.returncode == 3, result.stderr
        assert 2 <= waited < 20 and "'long-night'" in result.stderr and "waited 2 s" in result.stderr
    finally:
        holder.kill()
        holder.wait()


def test_a_run_killed_with_sigkill_is_marked_died_by_the_next(tmp_path, emu):
    config = make_mirror(tmp_path / "m", emu.url)
    emu.faults.set("slow", 0.5)  # every reply half a second late: the run is surely mid-way when killed
    proc = subprocess.Popen([sys.executable, "-m", "jsocmirror", "-q", "update", "-m", str(config.mirror_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    logs = config.mirror_dir / "logs"
    while time.monotonic() < deadline and not any("update-sync" in p.read_text() for p in logs.glob("update-*.log")):
        time.sleep(0.1)  # the catalog cannot be read while the run holds it: its log says when it syncs
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    emu.faults.clear()
    killed = _running_rows(config)
    assert killed, "the killed run never recorded its start"
    result = jsocmirror("-q", "update", "-m", str(config.mirror_dir))
    assert result.returncode == 0, result.stderr
    with Catalog(config.catalog_path, read_only=True) as catalog:
        statuses = dict(catalog.execute("SELECT run_id, status FROM runs").fetchall())
    assert all(statuses[run_id] == "died" for run_id in killed)
    assert "running" not in statuses.values()


def _running_rows(config) -> list[str]:
    try:
        with Catalog(config.catalog_path, read_only=True) as catalog:
            return [r[0] for r in catalog.execute("SELECT run_id FROM runs WHERE status = 'running'").fetchall()]
    except Exception:  # the writer holds the file: DuckDB refuses a second process
        return []


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# -- the docs' cron line and systemd units, run literally ----------------------------------------
def _block(doc: str, lang: str, containing: str) -> str:
    for match in re.finditer(rf"```{lang}\n(.*?)```", doc, re.S):
        if containing in match.group(1):
            return match.group(1)
    raise AssertionError(f"no ```{lang} block with {containing!r} in docs/nightly.md")


def _installed_command() -> Path:
    exe = Path(sys.executable).parent / "jsocmirror"
    if not exe.exists():
        pytest.skip(f"no installed jsocmirror command beside {sys.executable}")
    return exe


def test_the_docs_cron_line_runs_on_a_new_mirror_and_is_silent_when_all_done(tmp_path, emu):
    exe = _installed_command()
    doc = (DOCS / "nightly.md").read_text()
    line = next(li for li in _block(doc, "cron", "jsocmirror").splitlines() if li.strip() and not li.startswith("#"))
    command = line.split(None, 5)[5]  # after the five time fields
    mirror = tmp_path / "sdo"
    init = jsocmirror("init", str(mirror), "--server", emu.url, "--offline")
    assert init.returncode == 0, init.stderr
    add = jsocmirror("series", "add", "-m", str(mirror), "hmi.M_720s", "--segments", "magnetogram",
                     "--start", "2024.06.30_21:00:00_TAI")
    assert add.returncode == 0, add.stderr
    command = command.replace("/data/sdo", shlex.quote(str(mirror))).replace("/opt/jsocmirror/bin/jsocmirror",
                                                                           shlex.quote(str(exe)))
    cron_env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SHELL": "/bin/sh", "LOGNAME": "sdo"}
    night = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True, env=cron_env, timeout=300)
    assert night.returncode == 0, night.stdout + night.stderr
    assert night.stdout == "" and night.stderr == ""  # cron mails nothing on a good night
    assert len(list((mirror / "data").rglob("*.fits"))) == 16
    assert list((mirror / "logs").glob("update-*.log"))


def test_the_docs_systemd_units_are_valid_and_their_command_runs(tmp_path, emu):
    exe = _installed_command()
    doc = (DOCS / "nightly.md").read_text()
    service = _block(doc, "ini", "ExecStart=")
    timer = _block(doc, "ini", "OnCalendar=")
    settings = dict(li.split("=", 1) for li in service.splitlines() if "=" in li)
    mirror = tmp_path / "sdo"
    assert jsocmirror("init", str(mirror), "--server", emu.url, "--offline").returncode == 0
    assert jsocmirror("series", "add", "-m", str(mirror), "hmi.M_720s", "--segments", "magnetogram",
                      "--start", "2024.06.30_21:00:00_TAI").returncode == 0
    assert settings["WorkingDirectory"] == "/data/sdo"
    argv = shlex.split(settings["ExecStart"])
    assert argv[0] == "/opt/jsocmirror/bin/jsocmirror"
    run = subprocess.run([str(exe), *argv[1:]], cwd=mirror, capture_output=True, text=True, timeout=300,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert run.returncode == 0 and run.stdout == "" and run.stderr == "", run.stdout + run.stderr
    analyze = Path("/usr/bin/systemd-analyze")
    if analyze.exists():
        calendar = dict(li.split("=", 1) for li in timer.splitlines() if "=" in li)["OnCalendar"]
        checked = subprocess.run([str(analyze), "calendar", calendar], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stderr
        units = tmp_path / "units"
        units.mkdir()
        (units / "jsocmirror-update.service").write_text(
            service.replace("/opt/jsocmirror/bin/jsocmirror", str(exe)).replace("User=sdo\n", ""))
        (units / "jsocmirror-update.timer").write_text(timer)
        verified = subprocess.run([str(analyze), "verify", str(units / "jsocmirror-update.timer"),
                                   str(units / "jsocmirror-update.service")], capture_output=True, text=True)
        problems = [li for li in verified.stderr.splitlines()
                    if "jsocmirror-update" in li and "WorkingDirectory" not in li]
        assert not problems, verified.stderr


# -- progress that reads well --------------------------------------------------------------------
def _run_in_a_terminal(args: list[str], timeout: float = 120) -> tuple[int, str]:
    """The command with a pseudo-terminal as stdout and stderr (as a person at a shell, or in tmux)."""
    import pty
    import select

    import fcntl
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))  # 40 rows, 100 columns
    env = {**os.environ, "TERM": "xterm"}
    proc = subprocess.Popen([sys.executable, "-m", "jsocmirror", *args], stdin=slave, stdout=slave, stderr=slave,
                            env=env, close_fds=True)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    proc.wait(timeout=10)
    os.close(master)
    return proc.returncode, b"".join(chunks).decode("utf-8", "replace")


def _screen_lines(raw: str) -> list[str]:
    """What stays on screen: each line as the last carriage return leaves it, escapes dropped."""
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw)
    return [line.split("\r")[-1].rstrip() for line in text.replace("\r\n", "\n").split("\n")]


def test_progress_bars_show_in_a_terminal_and_never_tear_the_summary(tmp_path, emu):
    config = make_mirror(tmp_path / "m", emu.url)
    code, raw = _run_in_a_terminal(["update", "-m", str(config.mirror_dir)])
    assert code == 0, raw
    assert re.search(r"files: +\d+%", raw) and "rec" in raw  # the transfer bars and the sync bar were drawn
    lines = _screen_lines(raw)
    summary = lines[next(i for i, li in enumerate(lines) if li.startswith("update ")):]
    assert re.fullmatch(r"update [0-9a-f]{12}: [\d.]+ s", summary[0]) and "  result: all done" in summary, summary
    assert all("files:" not in li and "bytes:" not in li for li in summary), summary  # no bar left over it
    # with stdout going to a file (cron, a pipe), no bar is drawn even though stderr is a terminal
    quiet_night = subprocess.run([sys.executable, "-m", "jsocmirror", "update", "-m", str(config.mirror_dir)],
                                 capture_output=True, text=True)
    assert quiet_night.returncode == 0 and "\r" not in quiet_night.stdout + quiet_night.stderr


def test_update_report_writes_the_page_after_the_run_and_a_bad_path_stops_it_first(tmp_path, emu):
    config = make_mirror(tmp_path / "m", emu.url)
    bad = tmp_path / "no-such-dir" / "report.html"
    refused = jsocmirror("-q", "update", "-m", str(config.mirror_dir), "--report", str(bad))
    assert refused.returncode == 2 and refused.stderr.strip().splitlines()[-1].startswith("Error: cannot write")
    assert not list(Path(config.data_root).rglob("*.fits"))
    assert not list((config.mirror_dir / "logs").glob("update-*.log"))  # refused before the run began
    page = tmp_path / "coverage.html"
    result = jsocmirror("-q", "update", "-m", str(config.mirror_dir), "--report", str(page), "--json")
    assert result.returncode == 0, result.stderr
    downloaded = json.loads(result.stdout)["files_downloaded"]
    text = page.read_text()
    assert downloaded > 0 and text.startswith("<!DOCTYPE html>") and "hmi.M_720s" in text
    assert f"downloaded {downloaded} files" in text  # the page shows this very run


def test_series_add_again_keeps_the_retention_settings_it_has_no_option_for(tmp_path, emu):
    from dataclasses import replace

    from jsocmirror import config as cfg

    config = make_mirror(tmp_path / "m", emu.url)
    entry = replace(config.get_series("hmi.M_720s"), keep="30d", max_bytes="2 GB", orphans="trash")
    cfg.save_config(cfg.with_series(config, entry))
    result = CliRunner().invoke(cli, ["series", "add", "-m", str(config.mirror_dir), "hmi.M_720s",
                                      "--segments", "magnetogram", "--start", "2024.06.30_22:00:00_TAI"])
    assert result.exit_code == 0, result.output
    again = cfg.load_config(config.mirror_dir).get_series("hmi.M_720s")
    assert again.start == "2024.06.30_22:00:00_TAI"  # what the command said changed
    assert (again.keep, again.max_bytes, again.orphans) == ("30d", "2 GB", "trash")  # the rest stayed


def test_a_run_log_that_cannot_be_made_is_one_line_or_one_json_object_with_code_1(tmp_path, emu):
    config = make_mirror(tmp_path / "m", emu.url)
    logs = config.mirror_dir / "logs"
    if logs.exists():
        import shutil

        shutil.rmtree(logs)
    logs.write_text("not a directory")
    plain = jsocmirror("scan", "-m", str(config.mirror_dir))
    assert plain.returncode == 1 and plain.stderr.strip().count("\n") == 0, plain.stderr
    assert plain.stderr.startswith("Error: cannot create the log directory") and "Traceback" not in plain.stderr
    answer = json.loads(jsocmirror("scan", "-m", str(config.mirror_dir), "--json").stdout)
    assert answer["code"] == 1 and "log directory" in answer["message"]


def test_a_symlinked_config_stays_a_link_after_an_edit(tmp_path, emu):
    config = make_mirror(tmp_path / "m", emu.url)
    real = tmp_path / "etc" / "jsocmirror.toml"
    real.parent.mkdir()
    (config.mirror_dir / "jsocmirror.toml").rename(real)
    (config.mirror_dir / "jsocmirror.toml").symlink_to(real)
    result = CliRunner().invoke(cli, ["series", "remove", "-m", str(config.mirror_dir), "aia.lev1_euv_12s"])
    assert result.exit_code == 0, result.output
    assert (config.mirror_dir / "jsocmirror.toml").is_symlink() and "aia.lev1_euv_12s" not in real.read_text()


def test_an_unexpected_exception_is_one_line_with_code_1_and_a_traceback_only_with_vv():
    from jsocmirror.cli import json_option

    @cli.command("boom-test")
    @json_option
    def boom(as_json):
        """A command with a bug."""
        raise KeyError("no such thing")

    try:
        plain = CliRunner().invoke(cli, ["boom-test"])
        lines = plain.stderr.strip().splitlines()
        assert plain.exit_code == 1 and len(lines) == 1, plain.stderr
        crash = re.fullmatch(r"Error: unexpected KeyError: 'no such thing' \(a bug in jsocmirror; traceback in (.+)\)",
                             lines[0])
        assert crash, lines
        try:  # no mirror here: the system's temporary directory holds the traceback
            assert "KeyError: 'no such thing'" in Path(crash[1]).read_text() and "Traceback" in Path(crash[1]).read_text()
        finally:
            Path(crash[1]).unlink()
        answer = json.loads(CliRunner().invoke(cli, ["boom-test", "--json"]).stdout)
        assert answer["code"] == 1 and answer["error"] == "internal"
        Path(answer["traceback"]).unlink()
        loud = CliRunner().invoke(cli, ["-vv", "boom-test"])
        assert isinstance(loud.exception, KeyError)  # -vv: the traceback, for a bug report
    finally:
        cli.commands.pop("boom-test", None)


def test_a_dry_run_waits_for_a_run_with_wait_and_never_creates_the_lock_file(tmp_path, emu):
    config = make_mirror(tmp_path / "m", emu.url)
    lock = config.mirror_dir / ".jsocmirror.lock"
    lock.unlink(missing_ok=True)
    fresh = jsocmirror("update", "-m", str(config.mirror_dir), "--dry-run")
    assert fresh.returncode == 0 and not lock.exists(), fresh.stderr
    holder = hold_lock(config.mirror_dir, 1.5, command="short-night")
    try:
        started = time.monotonic()
        waited = jsocmirror("update", "-m", str(config.mirror_dir), "--dry-run", "--wait", "30")
        assert waited.returncode == 0 and time.monotonic() - started >= 1.0, waited.stderr
    finally:
        holder.kill()
        holder.wait()


def test_two_config_edits_at_once_both_land(tmp_path, emu):
    """Each edit holds the mirror directory's flock from load to save: the second applies its
    change to what the first saved, where before it could write over it."""
    from jsocmirror import config as cfg

    config = make_mirror(tmp_path / "m", emu.url)
    code = ("import sys, time; from dataclasses import replace; from jsocmirror import config as cfg\n"
            "def change(fresh):\n"
            "    entry = replace(fresh.get_series(sys.argv[2]), end=sys.argv[3])\n"
            "    time.sleep(1.0)  # both editors are inside at once unless the lock keeps one out\n"
            "    return cfg.with_series(fresh, entry)\n"
            "cfg.edit_config(sys.argv[1], change)\n")
    edits = [subprocess.Popen([sys.executable, "-c", code, str(config.mirror_dir), series, end])
             for series, end in (("hmi.M_720s", "2024.07.01_00:00:00_TAI"), ("aia.lev1_euv_12s", "2024-07-01T00:00:00Z"))]
    assert [p.wait(timeout=60) for p in edits] == [0, 0]
    after = cfg.load_config(config.mirror_dir)
    assert after.get_series("hmi.M_720s").end == "2024.07.01_00:00:00_TAI"
    assert after.get_series("aia.lev1_euv_12s").end == "2024-07-01T00:00:00Z"
