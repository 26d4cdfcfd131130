"""``jsocmirror demo``: the README's first command, then status and update inside the demo directory."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from jsocmirror.demo import prepare_demo_dir


def run(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jsocmirror", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def data_files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_demo_runs_two_nights_then_commands_work_inside_the_demo_dir(tmp_path):
    demo = run(["demo"], cwd=tmp_path)
    assert demo.returncode == 0, demo.stderr
    out = demo.stdout
    assert "night 1: jsocmirror update" in out and "night 2: jsocmirror update" in out
    assert "SELECT T_REC_str" in out and "hmi.M_720s/2024/07/01/" in out  # the SQL query and its rows
    assert out.count("result: all done") == 2
    night2 = out[out.index("night 2"):]
    assert "0 exports submitted" in night2  # files come by SUMS path, no export queue
    reprocessed = int(re.search(r"sync: new \d+, reprocessed (\d+)", night2).group(1))
    stale = int(re.search(r"stale (\d+)", night2).group(1))
    new = int(re.search(r"missing (\d+)", night2).group(1))
    assert stale == reprocessed >= 4  # the demo reprocesses 2 records per series inside its windows
    assert f"downloaded: {new + stale} files" in night2  # only what changed
    mirror = tmp_path / "jsocmirror-demo"
    assert (mirror / "jsocmirror.toml").is_file() and (mirror / ".emulator").is_dir()
    before = data_files(mirror / "data")
    assert len(before) > 200 and not [p for p in before if ".part" in p]

    status = run(["status"], cwd=mirror)
    assert status.returncode == 0, status.stderr
    assert "hmi.M_720s" in status.stdout and "missing 0" in status.stdout

    update = run(["update"], cwd=mirror)  # same emulated world, nothing changed upstream
    assert update.returncode == 0, update.stderr
    assert "downloaded: 0 files" in update.stdout and "0 exports submitted" in update.stdout
    assert data_files(mirror / "data") == before  # no file touched
    assert list((mirror / "logs").glob("update-*.log"))

    prepare_demo_dir(mirror)  # a second demo replaces the one it made before
    assert sorted(p.name for p in mirror.iterdir()) == [".jsocmirror-demo"]


def test_demo_refuses_a_directory_it_did_not_make(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "precious.txt").write_text("keep me")
    result = run(["demo", "--dir", "mine"], cwd=tmp_path)
    assert result.returncode == 2 and "not a jsocmirror demo" in result.stderr
    assert (tmp_path / "mine" / "precious.txt").read_text() == "keep me"
