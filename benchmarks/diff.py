"""Diff benchmark: a 10M-row catalog against a 9.9M-row inventory; time and peak RSS.

Setup (untimed): a catalog whose hmi.M_45s keyword table (the real schema sync creates) holds
N records (every 1000th with QUALITY < 0, every 5000th offline, every 10000th reprocessed;
the first two among the ones without a file) and
whose ``local_files`` holds 99% of them (plus a few stale and empty files). Then, in a fresh
process so the RSS figure is the diff's own: ``diff_mirror`` (one FULL JOIN classifying every
row, counts per state and day), listing the gap rows, and, as the named peer, the bare
``NOT EXISTS`` anti-join count over the same tables (PERF_ANCHORS 3).

With ``--read``, the same diff also runs through the readers' copy (published first, untimed),
as ``jsocmirror diff`` and ``Mirror.diff()`` run it: Parquet parts behind views.

Run:  python benchmarks/diff.py [--records 10000000] [--have 0.99] [--read]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

SERIES = "hmi.M_45s"


def build(catalog_path: str, records: int, have: float) -> None:
    from jsocmirror.catalog import Catalog, keyword_table, quote_ident
    from jsocmirror.series import builtin_series

    sd = builtin_series().get(SERIES)
    skip_every = max(2, round(1 / (1 - have))) if have < 1 else 0
    with Catalog(catalog_path) as catalog:
        catalog.ensure_keyword_table(sd)
        table = quote_ident(keyword_table(SERIES))
        slot0 = sd.slotting("T_REC").index(__import__("jsocmirror.drmstime", fromlist=["x"]).parse_time(
            "2012.01.01_00:00:00_TAI"))
        # keys as JSOC prints them; T_REC (UTC) is approximate here: the diff does not read it
        catalog.execute(f"""
            INSERT INTO {table} (_key, "T_REC_index", "T_REC", "T_REC_str", "CAMERA", "QUALITY", _recnum, _online,
                                 _prev_recnum)
            SELECT '[' || s || '][2]', {slot0} + i, ts, s, 2,
                   CASE WHEN i % 1000 = 100 THEN -2147483648 ELSE 0 END, 1000000 + i, i % 5000 <> 300,
                   CASE WHEN i % 10000 = 11 THEN 999 END
            FROM (SELECT i, TIMESTAMP '2012-01-01' + i * INTERVAL 45 SECOND AS ts,
                         strftime(TIMESTAMP '2012-01-01' + i * INTERVAL 45 SECOND, '%Y.%m.%d_%H:%M:%S') || '_TAI' AS s
                  FROM range({records}) t(i))
        """)
        keep = f"i % {skip_every} <> 0" if skip_every else "true"
        catalog.execute(f"""
            INSERT INTO local_files (path, dir, series, record_key, segment, size, mtime, state, scanned_at,
                                     file_recnum, verify_state)
            SELECT '{SERIES}/' || strftime(ts, '%Y/%m/%d') || '/hmi.m_45s.' || strftime(ts, '%Y%m%d_%H%M%S')
                       || '_TAI.2.magnetogram.fits',
                   '{SERIES}/' || strftime(ts, '%Y/%m/%d'), '{SERIES}', '[' || s || '][2]', 'magnetogram',
                   CASE WHEN i % 20000 = 13 THEN 0 ELSE 14000000 END, 1.7e9,
                   CASE WHEN i % 20000 = 13 THEN 'empty' ELSE 'layout' END, now(),
                   CASE WHEN i % 7 = 0 THEN 1000000 + i - (i % 50000 = 0)::INT END,
                   CASE WHEN i % 7 = 0 THEN 'ok' END
            FROM (SELECT i, TIMESTAMP '2012-01-01' + i * INTERVAL 45 SECOND AS ts,
                         strftime(TIMESTAMP '2012-01-01' + i * INTERVAL 45 SECOND, '%Y.%m.%d_%H:%M:%S') || '_TAI' AS s
                  FROM range({records}) t(i))
            WHERE {keep}
        """)
        catalog.execute("CHECKPOINT")
        counts = catalog.execute(f"SELECT (SELECT count(*) FROM {table}), (SELECT count(*) FROM local_files)").fetchall()
    print(f"catalog: {counts[0][0]:,} records, inventory: {counts[0][1]:,} files "
          f"({os.path.getsize(catalog_path) / 2**20:,.0f} MiB DuckDB file)")


def peak_rss_mb() -> float:
    """This process's peak RSS. Linux's ru_maxrss carries the parent's peak across fork and exec
    (a run that built the catalog first made every measuring child report its 1.5 GB); VmHWM
    belongs to the process's own address space."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(catalog_path: str, mirror_dir: str, read: bool = False) -> dict:
    """The diff on the writer's catalog, or (``read``) on the readers' copy, as `jsocmirror diff` runs it."""
    import psutil

    from jsocmirror.api import Mirror
    from jsocmirror.catalog import Catalog, keyword_table
    from jsocmirror.config import config_from_dict
    from jsocmirror.diff import diff_mirror

    proc = psutil.Process()
    config = config_from_dict({"series": [{"series": SERIES, "segments": ["magnetogram"]}]}, mirror_dir)
    out = {}
    opened = Mirror(config.read_root, config=config) if read else Catalog(catalog_path)
    with opened as handle:
        catalog = handle.catalog if read else handle
        out["rss_open_mb"] = proc.memory_info().rss / 2**20
        start = time.perf_counter()
        result = diff_mirror(catalog, config)
        out["diff_s"] = time.perf_counter() - start
        start = time.perf_counter()
        gaps = sum(1 for _ in result.gaps())
        out["gaps_s"] = time.perf_counter() - start
        out["gaps"] = gaps
        out["counts"] = result.counts[SERIES]
        out["peak_rss_diff_mb"] = peak_rss_mb()
        start = time.perf_counter()
        missing = catalog.execute(
            f"SELECT count(*) FROM {keyword_table(SERIES)} k WHERE NOT EXISTS (SELECT 1 FROM local_files f "
            "WHERE f.series = 'hmi.M_45s' AND f.record_key = k._key AND f.segment = 'magnetogram')").fetchall()[0][0]
        out["peer_not_exists_s"] = time.perf_counter() - start
        out["peer_missing"] = missing
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=10_000_000)
    parser.add_argument("--have", type=float, default=0.99, help="fraction of records with a local file")
    parser.add_argument("--catalog", help="keep the built catalog here and reuse it (default: a temp dir, removed)")
    parser.add_argument("--read", action="store_true",
                        help="also diff through the readers' copy (published first, untimed), as `jsocmirror diff` does")
    parser.add_argument("--measure", nargs=3, metavar=("CATALOG", "MIRROR_DIR", "WHERE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure[:2], read=args.measure[2] == "read")))
        return
    work = tempfile.mkdtemp(prefix="jsocmirror-bench-diff-")
    try:
        path = args.catalog or os.path.join(work, "catalog.duckdb")
        if not os.path.exists(path):
            start = time.perf_counter()
            build(path, args.records, args.have)
            print(f"setup {time.perf_counter() - start:.1f} s (untimed)")
        if args.read:
            from jsocmirror.catalog import Catalog
            from jsocmirror.config import config_from_dict
            from jsocmirror.publish import publish

            config = config_from_dict({"series": [{"series": SERIES, "segments": ["magnetogram"]}]}, work)
            with Catalog(path) as catalog:
                published = publish(catalog, config)
            print(f"published the readers' copy: {published.parts_written} parts, {published.seconds:.1f} s (untimed)")
        for where in (("writer", "read") if args.read else ("writer",)):
            _measure_and_print(path, work, where)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _measure_and_print(path: str, work: str, where: str) -> None:
    runs = []
    for _ in range(3):
        proc = subprocess.run([sys.executable, __file__, "--measure", path, work, where],
                              capture_output=True, text=True)
        if proc.returncode:
            sys.exit(proc.stderr)
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    best = sorted(runs, key=lambda r: r["diff_s"])[1]  # the median run
    print(f"-- the diff on the {'readers copy (Parquet views)' if where == 'read' else 'writer catalog'}:")
    counts = {k: v for k, v in best["counts"].items() if v}
    times = ", ".join(f"{r['diff_s']:.2f}" for r in runs)
    print(f"diff_mirror: {best['diff_s']:.2f} s (runs: {times}; target < 3 s)")
    print(f"  counts: {counts}")
    print(f"  listing {best['gaps']:,} gap rows: {best['gaps_s']:.2f} s")
    print(f"  peak RSS during diff: {best['peak_rss_diff_mb']:,.0f} MB (after opening the catalog: "
          f"{best['rss_open_mb']:,.0f} MB; target < 1.5 GB; runs: "
          f"{', '.join(format(r['peak_rss_diff_mb'], ',.0f') for r in runs)}); "
          f"whole process incl. peer {best['peak_rss_mb']:,.0f} MB")
    print(f"peer: bare NOT EXISTS anti-join count: {best['peer_not_exists_s']:.2f} s "
          f"({best['peer_missing']:,} records without a file)")


if __name__ == "__main__":
    main()
