"""``jsocmirror update`` killed with SIGKILL at random points, then re-run, converges to a clean run's mirror.

Each trial: a fresh mirror of a tiny world (HMI by direct SUMS paths, AIA through a url/fits export),
``jsocmirror update`` in a subprocess killed at a random moment, then an update to completion. The
mirror must equal a clean run's (same paths, same bytes), hold no temporary file, and JSOC (the
emulator) must have seen at most one export request per record set from that mirror's email.
The longer soak is benchmarks/soak_update.py.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from jsocmirror.emulator import Emulator
from jsocmirror.stage import StagePolicy
from jsocmirror.update import update_mirror

from test_update import make_mirror, mirror_files, options, temp_files

TRIALS = int(os.environ.get("JSOCMIRROR_CRASH_TRIALS", "20"))
# quick polls, but patient with an export the killed run left pending on a loaded machine
PATIENT = StagePolicy(poll_interval=0.02, export_wait=60.0, busy_wait=0.02, max_busy_wait=0.1, busy_retries=100)
HMI_START = "2024.06.30_23:00:00_TAI"  # 6 HMI records
AIA_START = "2024-06-30T23:54:00Z"  # 6 AIA records, one a minute


def tiny_mirror(path: Path, url: str, email: str):
    import jsocmirror.config as cfg

    config = make_mirror(path, url, email=email)
    config.series[0].start = HMI_START
    config.series[1].start = AIA_START
    cfg.save_config(config)
    return cfg.load_config(path)


def run_update_subprocess(mirror: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "jsocmirror", "-q", "update", "-m", str(mirror)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)


@pytest.fixture(scope="module")
def world():
    with Emulator(state_dir=None, seed=11) as emu:
        emu.exports.config.timing.wait_hint = 0
        emu.exports.config.timing.base = 0.2  # exports stay pending ~1 s (the server's wait): kills land there too
        yield emu


def test_update_killed_at_random_points_converges(tmp_path, world):
    clean = tiny_mirror(tmp_path / "clean", world.url, "clean@example.org")
    started = time.monotonic()
    proc = run_update_subprocess(clean.mirror_dir)
    _, err = proc.communicate(timeout=120)
    duration = time.monotonic() - started
    assert proc.returncode == 0, err.decode()
    reference = mirror_files(clean)
    assert len(reference) == 12 and not temp_files(clean)

    rng = random.Random(20261122)
    killed_after = []
    for trial in range(TRIALS):
        email = f"trial{trial}@example.org"
        config = tiny_mirror(tmp_path / f"t{trial}", world.url, email)
        proc = run_update_subprocess(config.mirror_dir)
        delay = rng.uniform(0.25, 0.95) * duration
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            killed_after.append(delay)
        summary = update_mirror(config, world.url, options(stage_policy=PATIENT))
        assert summary.exit_code == 0, f"trial {trial} (killed after {delay:.2f} s): {summary.render()}"
        files = mirror_files(config)
        assert sorted(files) == sorted(reference), f"trial {trial}: paths differ after a kill at {delay:.2f} s"
        assert all(files[p] == reference[p] for p in reference), f"trial {trial}: bytes differ"
        assert not temp_files(config), f"trial {trial}: temporary files left: {temp_files(config)}"
        asked = Counter(r.ds for r in world.exports.store.all() if r.notify == email)
        assert all(n == 1 for n in asked.values()), f"trial {trial}: duplicate export requests {asked}"
        if trial % 5 == 0:  # converged also means: nothing left to do
            again = update_mirror(config, world.url, options(stage_policy=PATIENT))
            assert again.files_downloaded == 0 and again.exports_submitted == 0 and again.exports_resumed == 0
    # most trials really are killed mid-run (a trial that beat its kill is still checked, and the
    # clean run's duration can drift with the machine's load, so do not demand every one)
    assert len(killed_after) >= max(1, TRIALS // 4)
