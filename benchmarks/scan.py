"""Scan benchmark: jsocmirror scan against `find ROOT -type f | wc -l` on the same tree, same run.

1. A tree of N empty files laid out by the default template (hmi.M_45s, CAMERA 2: 1920 files a
   day, one directory per day) is created once (untimed; reused with --tree DIR).
2. Timed, warm cache, median of --repeat runs each:
   - the floor: ``find ROOT -type f | wc -l``;
   - a first scan into an empty catalog, names only (no stat) and with size/mtime (the default);
     the names-only scan alternates with ``find`` and its ratio is the median of the paired ratios;
     for the breakdown, the walk alone (listing, layout parsing, Arrow table) and the DuckDB
     insert + commit of its table alone (the two overlap in a real first scan);
   - an incremental re-scan with nothing changed (directory mtimes say nothing changed).
3. --verify throughput: M small real FITS files (astropy-written, RICE, CHECKSUM/DATASUM), read
   by ``scan --verify`` (headers + DATASUM/CHECKSUM over the data) against astropy's
   ``getheader(path, 1)`` on the same files (headers only; the sums are extra work for us).

Run:  python benchmarks/scan.py [--files 1000000] [--verify-files 3000] [--tree DIR] [--repeat 3]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from astropy.io import fits

from jsocmirror import drmstime
from jsocmirror.catalog import Catalog
from jsocmirror.layout import Layout
from jsocmirror.scan import scan_tree
from jsocmirror.series import builtin_series

SERIES = "hmi.M_45s"


def make_tree(root: str, n: int, layout: Layout) -> None:
    tpl = layout.template(SERIES)
    t0 = drmstime.parse_time("2012.01.01_00:00:00_TAI")
    made_dirs: set[str] = set()
    for i in range(n):
        rel = tpl.render([t0 + 45.0 * i, 2], "magnetogram")
        d = os.path.join(root, rel.rsplit("/", 1)[0])
        if d not in made_dirs:
            os.makedirs(d, exist_ok=True)
            made_dirs.add(d)
        os.close(os.open(os.path.join(root, rel), os.O_CREAT | os.O_WRONLY, 0o644))


def timed(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def find_count(root: str) -> int:
    out = subprocess.run(f"find {root} -type f | wc -l", shell=True, check=True, capture_output=True, text=True)
    return int(out.stdout.strip())


def find_stat_count(root: str) -> int:
    cmd = f"find {root} -type f -printf '%s %T@\\n' | wc -l"
    out = subprocess.run(cmd, shell=True, check=True, capture_output=True, text=True)
    return int(out.stdout.strip())


def first_scan(root: str, layout: Layout, work: str, stat: bool):
    path = os.path.join(work, f"first-{time.monotonic_ns()}.duckdb")
    with Catalog(path) as catalog:
        result = scan_tree(catalog, root, layout, stat=stat)
    os.remove(path)
    return result


def walk_only(root: str, layout: Layout):
    """The scan's walk, name matching and Arrow table, one after the other in one thread, without
    DuckDB (for the breakdown). A first scan spreads this over three threads (walk; matching and
    table; DuckDB insert) that overlap."""
    from jsocmirror import scan as scan_mod

    import gc

    classifier = scan_mod._Classifier(layout)
    batch = scan_mod._Batch(fallback=lambda rel, names, into: scan_mod._add_names(rel, names, classifier, into, set()))
    listed = []
    result = scan_mod.ScanResult(root=root)
    gc.disable()  # as scan_tree does during its walk
    try:
        scan_mod._walk_local(root, root, classifier, batch, listed, {}, False,
                             set(scan_mod.MIRROR_OWNED), result, None)
        return batch.table()
    finally:
        gc.enable()


def store_only(table, work: str) -> float:
    """Seconds to store a walk's table in an empty inventory (insert + commit, as a first scan does)."""
    from datetime import datetime

    path = os.path.join(work, f"store-{time.monotonic_ns()}.duckdb")
    with Catalog(path) as catalog:
        with catalog.bulk_load(memory_limit="4GB", threads=1):
            start = time.perf_counter()
            catalog.execute("BEGIN TRANSACTION")
            catalog.con.register("scan_batch", table)
            catalog.q("scan_insert_all", now=datetime(2026, 1, 1))
            catalog.execute("COMMIT")
            took = time.perf_counter() - start
            catalog.con.unregister("scan_batch")
    os.remove(path)
    return took


def fits_file(t_rec: str, recnum: int) -> bytes:
    comp = fits.CompImageHDU(np.arange(64 * 64, dtype=np.int32).reshape(64, 64), compression_type="RICE_1")
    for key, value in (("T_REC", t_rec), ("CAMERA", 2), ("RECNUM", recnum), ("DRMS_ID", f"{SERIES}:{recnum}:magnetogram")):
        comp.header[key] = value
    for i in range(120):  # a realistic header: ~150 cards
        comp.header[f"KW{i:05d}"] = float(i)
    out = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), comp]).writeto(out, checksum=True)
    return out.getvalue()


def verify_bench(work: str, layout: Layout, n: int, repeat: int) -> None:
    root = os.path.join(work, "verify-tree")
    tpl = layout.template(SERIES)
    t0 = drmstime.parse_time("2012.01.01_00:00:00_TAI")
    paths = []
    for i in range(n):
        t = t0 + 45.0 * i
        rel = tpl.render([t, 2], "magnetogram")
        full = os.path.join(root, rel)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(fits_file(drmstime.format_time(t, "TAI", 3), 1000 + i))
        paths.append(full)
    size = os.path.getsize(paths[-1])

    def ours():
        path = os.path.join(work, f"verify-{time.monotonic_ns()}.duckdb")
        with Catalog(path) as catalog:
            result = scan_tree(catalog, root, layout, verify=True)
        os.remove(path)
        return result

    def astropy_headers():
        for p in paths:
            fits.getheader(p, 1)

    def astropy_checksums():
        for p in paths:
            with fits.open(p, checksum=True) as hdul:
                hdul[1].header  # noqa: B018

    ours()  # warm the page cache
    t_ours, result = timed(ours, repeat)
    t_astropy, _ = timed(astropy_headers, repeat)
    t_astropy_sum, _ = timed(astropy_checksums, 1)
    print(f"verify: {n} files of {size} B (RICE, 2 HDUs, ~150 cards); states {result.by_verify_state}")
    print(f"  jsocmirror scan --verify (headers + DATASUM/CHECKSUM + path check): {t_ours:.3f} s = {n / t_ours:,.0f} files/s")
    print(f"  astropy getheader(path, 1) (headers only):                          {t_astropy:.3f} s = {n / t_astropy:,.0f} headers/s")
    print(f"  astropy open(checksum=True) + header (sums verified):               {t_astropy_sum:.3f} s = {n / t_astropy_sum:,.0f} files/s")
    print(f"  ratio ours/astropy-getheader: {n / t_ours / (n / t_astropy):.1f}x faster")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=1_000_000)
    parser.add_argument("--verify-files", type=int, default=3000)
    parser.add_argument("--tree", help="directory for the tree (kept and reused); default: a temp dir, removed")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    layout = Layout(builtin_series())
    work = tempfile.mkdtemp(prefix="jsocmirror-bench-scan-")
    root = args.tree or os.path.join(work, "tree")
    try:
        marker = root.rstrip("/") + f".bench-{args.files}"  # beside the tree: find must count data only
        if not os.path.exists(marker):
            shutil.rmtree(root, ignore_errors=True)
            os.makedirs(root)
            start = time.perf_counter()
            make_tree(root, args.files, layout)
            open(marker, "w").close()
            print(f"created {args.files:,} empty files in {time.perf_counter() - start:.1f} s (untimed setup)")
        find_count(root)  # warm the cache
        # find and the first scan alternate, pair by pair: this VM's speed drifts by 10-20% over
        # minutes, so the ratio is taken within each pair and the median of the pairs is reported
        finds, names, ratios = [], [], []
        for _ in range(args.repeat):
            t_one, count = timed(lambda: find_count(root), 1)
            s_one, r_names = timed(lambda: first_scan(root, layout, work, stat=False), 1)
            finds.append(t_one)
            names.append(s_one)
            ratios.append(s_one / t_one)
        t_find, t_names, ratio = (statistics.median(x) for x in (finds, names, ratios))
        t_walk, table = timed(lambda: walk_only(root, layout), args.repeat)
        t_store = statistics.median(store_only(table, work) for _ in range(args.repeat))
        t_find_stat, _ = timed(lambda: find_stat_count(root), args.repeat)
        t_stat, r_stat = timed(lambda: first_scan(root, layout, work, stat=True), args.repeat)
        with Catalog(os.path.join(work, "rescan.duckdb")) as catalog:
            scan_tree(catalog, root, layout, stat=False)
            t_re, r_re = timed(lambda: scan_tree(catalog, root, layout, stat=False), args.repeat)
            t_re_stat_first = scan_tree(catalog, root, layout, stat=True, full=True)
            t_re_stat, _ = timed(lambda: scan_tree(catalog, root, layout, stat=True), args.repeat)
        assert count == args.files and r_names.by_state == {"layout": args.files}, (count, r_names.by_state)
        assert r_stat.by_state == {"empty": args.files} and t_re_stat_first.files == args.files
        print(f"tree: {args.files:,} files, {r_names.dirs_listed:,} directories (median of {args.repeat}, warm cache)")
        print(f"  find ROOT -type f | wc -l (floor):     {t_find:.3f} s  ({args.files / t_find:,.0f} files/s)")
        print(f"  first scan, names only:                {t_names:.3f} s  ({args.files / t_names:,.0f} files/s)"
              f"  = {ratio:.2f}x find, median of the {args.repeat} paired ratios {sorted(round(r, 2) for r in ratios)}"
              f" (target <= 2x)")
        print(f"    the walk, name matching and Arrow table in one thread (no DuckDB): {t_walk:.3f} s"
              f"  = {t_walk / t_find:.2f}x find ({table.num_rows:,} rows)")
        print(f"    storing that table alone (DuckDB insert + commit, no walk):     {t_store:.3f} s"
              f"  = {t_store / t_find:.2f}x find")
        print(f"  first scan, with size/mtime (default): {t_stat:.3f} s  ({args.files / t_stat:,.0f} files/s)"
              f"  = {t_stat / t_find:.2f}x find, {t_stat / t_find_stat:.2f}x find -printf '%s %T@' ({t_find_stat:.3f} s)")
        print(f"  re-scan, nothing changed:              {t_re:.3f} s  = {t_names / t_re:.1f}x faster than the first"
              f" (target >= 5x); directories unchanged {r_re.dirs_unchanged:,}")
        print(f"  re-scan with stat, nothing changed:    {t_re_stat:.3f} s  = {t_stat / t_re_stat:.1f}x faster than the first")
        if args.verify_files:
            verify_bench(work, layout, args.verify_files, args.repeat)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
