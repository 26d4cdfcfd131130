"""Soak: ``jsocmirror update`` SIGKILLed at random points, many times, with faults switched on.

The longer version of tests/test_update_crash.py. Each trial makes a fresh mirror of a small world
(HMI by SUMS paths, AIA through url/fits exports), runs ``jsocmirror update`` in a subprocess,
kills it with SIGKILL at a random moment (sometimes twice), then updates to completion and checks
that the mirror equals a clean run's (same paths, same bytes), that no temporary file is left and
that the emulator saw at most one export request per record set from that mirror. Every few
trials a fault switch is on during the killed run (resets, truncation, 503s, slow responses).

Usage: ``python benchmarks/soak_update.py [--trials 200] [--seed 1]``. Prints a line per failure
and a summary; exits 1 if any trial failed.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from test_update import mirror_files, options, temp_files  # noqa: E402
from test_update_crash import run_update_subprocess, tiny_mirror  # noqa: E402

from jsocmirror.emulator import Emulator  # noqa: E402
from jsocmirror.update import update_mirror  # noqa: E402

FAULTS = [{}, {}, {"reset_mid_body": 0.2}, {"truncate_body": 0.2}, {"http_503": 0.2}, {"slow": 0.05},
          {"status7": 0.3}]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="jsocmirror-soak-"))
    failures = 0
    kills = 0
    try:
        with Emulator(state_dir=None, seed=11) as emu:
            emu.exports.config.timing.wait_hint = 0
            emu.exports.config.timing.base = 0.2
            clean = tiny_mirror(work / "clean", emu.url, "clean@example.org")
            started = time.monotonic()
            proc = run_update_subprocess(clean.mirror_dir)
            proc.wait()
            duration = time.monotonic() - started
            reference = mirror_files(clean)
            for trial in range(args.trials):
                email = f"soak{trial}@example.org"
                config = tiny_mirror(work / f"t{trial}", emu.url, email)
                faults = FAULTS[trial % len(FAULTS)]
                for _ in range(rng.choice([1, 1, 2])):
                    emu.faults.update(**faults)
                    proc = run_update_subprocess(config.mirror_dir)
                    try:
                        proc.wait(timeout=rng.uniform(0.2, 1.1) * duration)
                    except Exception:
                        proc.kill()
                        proc.wait()
                        kills += 1
                    emu.faults.clear()
                summary = update_mirror(config, emu.url, options())
                problems = []
                if summary.exit_code:
                    problems.append("rerun failed: " + "; ".join(f["reason"] for f in summary.failures[:3]))
                files = mirror_files(config)
                if files != reference:
                    problems.append(f"mirror differs ({len(files)} vs {len(reference)} files)")
                if temp_files(config):
                    problems.append(f"temporary files left: {temp_files(config)[:3]}")
                asked = Counter(r.ds for r in emu.exports.store.all() if r.notify == email)
                if any(n > 1 for n in asked.values()):
                    problems.append(f"duplicate export requests: {asked}")
                if problems:
                    failures += 1
                    print(f"trial {trial} ({faults or 'no fault'}): " + " | ".join(problems))
                shutil.rmtree(config.mirror_dir, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"soak: {args.trials} trials, {kills} kills, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
