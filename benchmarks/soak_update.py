"""Soak: ``jsocmirror update`` SIGKILLed at random points, many times, with faults switched on.

The longer version of tests/test_update_crash.py. Each trial makes a fresh mirror of a small world
(HMI by SUMS paths, AIA through url/fits exports), runs ``jsocmirror update`` in a subprocess,
kills it with SIGKILL at a random moment (sometimes twice), then updates to completion and checks
that the mirror equals a clean run's (same paths, same bytes), that no temporary file is left and
that the emulator saw at most one export request per record set from that mirror. Every few
trials a fault switch is on during the killed run (resets, truncation, 503s, slow responses,
exports that never finish), and every few others a hostile reply (tests/hostile.py: the mirror
talks to a lying proxy in front of the emulator) is: data files redirected to a canary on
127.0.0.2, trickled metadata, short export replies, export file names that climb out of the
mirror, rs_list values that are not what the series says. The final update of each trial runs
with every rule off; nothing may ever reach the canary or land outside the trial's mirror.

Usage: ``python benchmarks/soak_update.py [--trials 200] [--seed 1]``. Prints a line per failure
and a summary (trials run, kills, diverged); exits 1 if any trial diverged.
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

from hostile import Canary, HostileProxy, rewrite  # noqa: E402

from jsocmirror.emulator import Emulator  # noqa: E402
from jsocmirror.update import update_mirror  # noqa: E402

FAULTS = [{}, {}, {"reset_mid_body": 0.2}, {"truncate_body": 0.2}, {"http_503": 0.2}, {"slow": 0.05},
          {"status7": 0.3}, {"stuck_exports": 1.0}]


def _climbing_names(reply: dict) -> None:
    for i, item in enumerate(reply.get("data") or ()):
        item["filename"] = ["../../evil.fits", "/tmp/evil.fits", "a\\..\\b.fits", "x" * 300][i % 4]


def _bad_times(reply: dict) -> None:
    for keyword in reply.get("keywords") or ():
        if keyword["name"] == "T_REC":
            keyword["values"] = ["not a time"] * len(keyword["values"])


def _slashed_keys(reply: dict) -> None:
    for keyword in reply.get("keywords") or ():
        if keyword["name"] == "WAVELNTH":
            keyword["values"] = ["../171"] * len(keyword["values"])


def hostile_rules(canary_url: str) -> list[list[tuple]]:
    """Rule sets (match, action, arg, times) for the killed runs, one set per hostile trial."""
    return [
        [("/SUM", "redirect", canary_url + "evil.fits", 3)],
        [("op=rs_list", "trickle", 0.02, 1)],
        [("op=exp_status", "short", 20, 4)],
        [("op=exp_status", "json", rewrite(_climbing_names), 3)],
        [("op=rs_list", "json", rewrite(_bad_times), 1)],
        [("op=rs_list", "json", rewrite(_slashed_keys), 2)],
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="jsocmirror-soak-"))
    failures = 0
    kills = 0
    hostile_trials = 0
    try:
        with Emulator(state_dir=None, seed=11) as emu, HostileProxy(emu.url) as proxy, Canary() as canary:
            emu.exports.config.timing.wait_hint = 0
            emu.exports.config.timing.base = 0.2
            rules = hostile_rules(canary.url)
            clean = tiny_mirror(work / "clean", proxy.url, "clean@example.org")
            started = time.monotonic()
            proc = run_update_subprocess(clean.mirror_dir)
            proc.wait()
            duration = time.monotonic() - started
            reference = mirror_files(clean)
            for trial in range(args.trials):
                email = f"soak{trial}@example.org"
                config = tiny_mirror(work / f"t{trial}", proxy.url, email)
                hostile = trial % 2 == 1
                faults = {} if hostile else FAULTS[(trial // 2) % len(FAULTS)]
                ruleset = rules[(trial // 2) % len(rules)] if hostile else []
                hostile_trials += hostile
                for _ in range(rng.choice([1, 1, 2])):
                    emu.faults.update(**faults)
                    for rule in ruleset:
                        proxy.add(*rule)
                    proc = run_update_subprocess(config.mirror_dir)
                    try:
                        proc.wait(timeout=rng.uniform(0.2, 1.1) * duration)
                    except Exception:
                        proc.kill()
                        proc.wait()
                        kills += 1
                    emu.faults.clear()
                    proxy.clear()
                # a stuck export stays stuck at JSOC until staff free it (and JSOC hands the same request
                # back for 24 h): free it, as the morning would; the abandonment after export_max_hours is
                # tests/test_stage_hostile.py's
                for request in emu.exports.store.all():
                    request.stuck = False
                summary = update_mirror(config, proxy.url, options())
                # a second clean night, as a mirror gets: a run may end in failures the next one repairs
                if summary.exit_code:
                    summary = update_mirror(config, proxy.url, options())
                problems = []
                if summary.exit_code:
                    problems.append("rerun failed: " + "; ".join(f["reason"] for f in summary.failures[:3]))
                files = mirror_files(config)
                if files != reference:
                    problems.append(f"mirror differs ({len(files)} vs {len(reference)} files)")
                if temp_files(config):
                    problems.append(f"temporary files left: {temp_files(config)[:3]}")
                asked = Counter(r.ds for r in emu.exports.store.all() if r.notify == email)
                if any(n > 1 for n in asked.values()) and not faults.get("stuck_exports") and not ruleset:
                    problems.append(f"duplicate export requests: {asked}")
                if canary.requests:
                    problems.append(f"the canary was reached: {canary.requests[:3]}")
                    canary.requests.clear()
                strays = [str(p) for p in work.rglob("evil*")] + [p for p in ("/tmp/evil.fits",) if Path(p).exists()]
                if strays:
                    problems.append(f"files outside the layout: {strays[:3]}")
                if problems:
                    failures += 1
                    what = [r[:2] for r in ruleset] if ruleset else (faults or "no fault")
                    print(f"trial {trial} ({what}): " + " | ".join(problems))
                shutil.rmtree(config.mirror_dir, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"soak: {args.trials} trials run ({hostile_trials} with hostile replies), {kills} kills, "
          f"{failures} diverged")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
