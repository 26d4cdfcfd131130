"""The nightly re-verification (``[verify]``, issue 12 item 6): what it costs.

Usage: python benchmarks/verify.py [--files 3000] [--big 64] [--big-mb 8] [--json]

(a) Throughput. The same files are read twice, warm in the page cache both times (the
    measurement is of CPU, not of this disk): once plainly (``cat``'s work: ``read`` into a buffer,
    the named peer, and the ``cat`` command into a pipe) and once verified (``scan.verify_file``: FITS structure, DATASUM and CHECKSUM
    over every byte, RECNUM and prime keys against the path). Printed: MB/s and files/s of each
    and the ratio verify/read, for the emulator's small files (~25 KB, per-file cost dominates)
    and for ``--big`` files of ``--big-mb`` MB written with astropy (per-byte cost dominates).
(b) Overhead on a no-change night. A mirror of ``--files`` files landed from the emulator gets
    ``update_mirror(sync=False)`` nights with the rotation on (default cycle: 1/30 of the files a
    night) and off, alternating; printed: the median seconds of each and their difference.

Figures only, never a timed assert: each is a ratio against a peer measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

EMAIL = "bench@example.org"


def plain_read(paths: list[Path]) -> tuple[float, int]:
    """``cat > /dev/null``: read every byte into one reused buffer."""
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    total = 0
    started = time.perf_counter()
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            while n := f.readinto(view):
                total += n
    return time.perf_counter() - started, total


def cat_read(paths: list[Path]) -> float:
    """The ``cat`` command itself, into a pipe this process drains (so it must read every byte)."""
    started = time.perf_counter()
    for i in range(0, len(paths), 500):
        with subprocess.Popen(["cat", *map(str, paths[i:i + 500])], stdout=subprocess.PIPE) as proc:
            while proc.stdout.read(1 << 20):
                pass
    return time.perf_counter() - started


def verified_read(paths: list[Path], layout) -> tuple[float, int, int]:
    from jsocmirror.scan import verify_file

    started = time.perf_counter()
    total = bad = 0
    for path, rel in paths:
        with open(path, "rb") as f:
            outcome = verify_file(f, layout.parse(rel) if layout is not None else None, layout)
        bad += outcome.verify_state != "ok"
        total += path.stat().st_size
    return time.perf_counter() - started, total, bad


def rates(seconds: float, n: int, size: int) -> dict:
    return {"seconds": round(seconds, 3), "files_per_s": round(n / seconds, 1), "MB_per_s": round(size / seconds / 1e6, 1)}


def throughput(paths: list[tuple[Path, str | None]], layout, repeat: int = 3) -> dict:
    files = [p for p, _ in paths]
    plain_read(files)  # into the page cache
    plain = min(plain_read(files)[0] for _ in range(repeat))
    cat = min(cat_read(files) for _ in range(repeat))
    size = sum(p.stat().st_size for p in files)
    best = min((verified_read(paths, layout) for _ in range(repeat)), key=lambda r: r[0])
    assert best[2] == 0, f"{best[2]} files did not verify"
    return {"files": len(files), "bytes": size, "read": rates(plain, len(files), size),
            "cat": rates(cat, len(files), size), "verify": rates(best[0], len(files), size),
            "ratio_verify_over_read": round(best[0] / plain, 2), "ratio_verify_over_cat": round(best[0] / cat, 2)}


def big_files(work: Path, n: int, mb: int) -> list[tuple[Path, None]]:
    import numpy as np
    from astropy.io import fits

    side = int((mb * 1e6 / 4) ** 0.5)
    data = np.random.default_rng(0).integers(-2**30, 2**30, size=(side, side), dtype=np.int32)
    first = work / "big-0.fits"
    fits.PrimaryHDU(data).writeto(first, checksum=True)
    out = [(first, None)]
    for i in range(1, n):
        copy = work / f"big-{i}.fits"
        shutil.copyfile(first, copy)
        out.append((copy, None))
    return out


def landed_mirror(work: Path, url: str, files: int):
    from test_update import FAST_RETRY, FAST_STAGE

    from jsocmirror import config as cfg
    from jsocmirror.catalog import Catalog
    from jsocmirror.update import UpdateOptions, update_mirror

    mirror = work / "mirror"
    mirror.mkdir()
    start = datetime(2024, 7, 1) - timedelta(seconds=720 * (files - 1))
    config = cfg.MirrorConfig(
        mirror_dir=mirror, server=url, email=EMAIL,
        series=[cfg.SeriesConfig(series="hmi.M_720s", segments=["magnetogram"],
                                 start=start.strftime("%Y.%m.%d_%H:%M:%S_TAI"))],
        transfer=cfg.TransferConfig(max_connections=4, poll_interval=0.05))
    cfg.save_config(config)
    with Catalog(config.catalog_path):
        pass
    config = cfg.load_config(mirror)
    t0 = time.perf_counter()
    first = update_mirror(config, url, UpdateOptions(retry_policy=FAST_RETRY, stage_policy=FAST_STAGE))
    assert first.exit_code == 0, first.render()
    return config, first.files_downloaded, time.perf_counter() - t0


def nights(config, url: str, n: int) -> dict:
    from test_update import FAST_RETRY, FAST_STAGE

    from jsocmirror.update import UpdateOptions, update_mirror

    times: dict[bool, list[float]] = {True: [], False: []}
    verified: list[int] = []
    phase: list[float] = []
    clock = datetime.now()
    for i in range(n):
        for on in (True, False):
            clock += timedelta(days=1)
            options = UpdateOptions(sync=False, verify=on, retry_policy=FAST_RETRY, stage_policy=FAST_STAGE,
                                    clock=lambda now=clock: now)
            t0 = time.perf_counter()
            summary = update_mirror(config, url, options)
            times[on].append(time.perf_counter() - t0)
            assert summary.files_downloaded == 0, summary.render()
            if on:
                verified.append(summary.verify["files"])
                phase.append(summary.timings["verify"])
    on, off = statistics.median(times[True]), statistics.median(times[False])
    return {"nights": n, "verified_per_night": verified, "update_with_verify_s": round(on, 3),
            "update_without_verify_s": round(off, 3), "overhead_s": round(on - off, 3),
            "verify_phase_s": round(statistics.median(phase), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=3000, help="files in the mirror of (b) and the small files of (a)")
    parser.add_argument("--big", type=int, default=64, help="big files of (a)")
    parser.add_argument("--big-mb", type=int, default=8, help="size of each big file, MB")
    parser.add_argument("--nights", type=int, default=9)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from conftest import quick_emulator

    from jsocmirror import diff
    from jsocmirror.catalog import Catalog

    work = Path(tempfile.mkdtemp(prefix="jsocmirror-bench-verify-"))
    try:
        with quick_emulator() as emu:
            config, landed, land_s = landed_mirror(work, emu.url, args.files)
            with Catalog(config.catalog_path, read_only=True) as catalog:
                layout = diff.layout_for_config(config, diff.series_definitions(catalog))
                rels = [r for (r,) in catalog.execute("SELECT path FROM local_files WHERE state = 'layout'").fetchall()]
            root = Path(config.data_root)
            small = throughput([(root / r, r) for r in rels], layout)
            overhead = nights(config, emu.url, args.nights)
        big_dir = work / "big"
        big_dir.mkdir()
        big = throughput(big_files(big_dir, args.big, args.big_mb), None)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = {"landed_files": landed, "landing_s": round(land_s, 1), "small_files": small, "big_files": big,
           "no_change_night": overhead}
    if args.json:
        print(json.dumps(out, indent=2))
        return
    for name, r in (("small", small), ("big", big)):
        print(f"{name}: {r['files']} files, {r['bytes'] / 1e6:.1f} MB: read {r['read']['MB_per_s']} MB/s "
              f"{r['read']['files_per_s']} files/s; cat {r['cat']['MB_per_s']} MB/s {r['cat']['files_per_s']} files/s; "
              f"verify {r['verify']['MB_per_s']} MB/s {r['verify']['files_per_s']} files/s; "
              f"verify/read = {r['ratio_verify_over_read']}x, verify/cat = {r['ratio_verify_over_cat']}x")
    o = overhead
    print(f"no-change night of {landed} files: {o['update_with_verify_s']} s with the rotation "
          f"({o['verified_per_night'][0]} files read), {o['update_without_verify_s']} s without: "
          f"difference {o['overhead_s']:+} s; the verify phase itself: {o['verify_phase_s']} s (median)")


if __name__ == "__main__":
    main()
