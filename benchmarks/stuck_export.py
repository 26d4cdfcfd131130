"""How long a night lasts when JSOC never finishes an export (the emulator's stuck_exports fault).

Each case is a real ``jsocmirror -q update`` subprocess on a tiny two-series mirror (HMI by direct
SUMS paths, AIA through a url/fits export that stays pending forever), killed at ``--cap`` seconds
if it has not ended. ``--tree`` runs another checkout's code (a before/after comparison: settings
that checkout does not know are left out)::

    python benchmarks/stuck_export.py                       # this tree
    python benchmarks/stuck_export.py --tree /work/wt/base  # an older checkout, same cases
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))

from jsocmirror.emulator import Emulator  # noqa: E402

MIRROR = """server = "{url}"
email = "stuck{i}@example.org"

[transfer]
max_connections = 4
poll_interval = 0.5
{transfer}
{run}
[[series]]
series = "hmi.M_720s"
segments = ["magnetogram"]
start = "2024.06.30_21:00:00_TAI"

[[series]]
series = "aia.lev1_euv_12s"
segments = ["image"]
start = "2024-06-30T23:45:00Z"
cadence = "1m"
keys = {{WAVELNTH = [171]}}
method = "url"
protocol = "fits"
"""

CASES = [  # (name, [transfer] lines, [run] lines)
    ("defaults", "", ""),
    ("export_wait = 5", "export_wait = 5", ""),
    ("max_hours = 0.005 (18 s)", "", "[run]\nmax_hours = 0.005\n"),
]


def night(tree: Path, mirror: Path, cap: float) -> tuple[float, str]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "jsocmirror", "-q", "update", "-m", str(mirror)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tree)
    try:
        out, err = proc.communicate(timeout=cap)
        said = err.strip().splitlines() or [line for line in out.splitlines() if "FAILED" in line][:1] or [""]
        outcome = f"exit {proc.returncode}: " + said[-1].strip()[:110]
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        outcome = f"still running at {cap:.0f} s: killed"
    return time.monotonic() - started, outcome


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=HERE, help="checkout whose jsocmirror runs (default: this one)")
    parser.add_argument("--cap", type=float, default=120.0, help="seconds before a night is killed")
    parser.add_argument("--nights", type=int, default=2, help="nights per case (the second resumes the request)")
    args = parser.parse_args()
    knows = (args.tree / "jsocmirror" / "config.py").read_text()
    with tempfile.TemporaryDirectory(prefix="jsocmirror-stuck-") as work, Emulator(state_dir=None, seed=3) as emu:
        emu.exports.config.timing.wait_hint = 0
        emu.faults.stuck_exports = 1.0
        for i, (name, transfer, run) in enumerate(CASES):
            if ("export_wait" in transfer and "export_wait" not in knows) or (run and "max_hours" not in knows):
                print(f"{name:28s} not configurable in {args.tree}")
                continue
            mirror = Path(work) / f"m{i}"
            mirror.mkdir()
            (mirror / "jsocmirror.toml").write_text(MIRROR.format(url=emu.url, i=i, transfer=transfer, run=run))
            for n in range(1, args.nights + 1):
                seconds, outcome = night(args.tree, mirror, args.cap)
                print(f"{name:28s} night {n}: {seconds:6.1f} s  {outcome}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
