"""Publish benchmark: what making a nightly's catalog visible to readers costs, against full copies.

Setup (untimed): a catalog whose hmi.M_45s keyword table (the real schema sync creates) holds N
records at the 45 s cadence from 2010-05-01 (10M records: ~14 years, ~171 calendar months, so
~171 month parts), with ``_sunum``, ``_size``, ``_online``, a fixed ``_synced_at`` and ~25 keyword
columns filled (constant strings, varying times and doubles, as JSOC's are); ``local_files`` holds
the files of the newest F records and ``file_checks`` one row per file (what the downloader
records for each file it lands). Then a first publish into an empty read directory (timed,
printed as "first publish": every part written).

Measured, each in a fresh child process (so its RSS is the publish's own; "extra" is the peak RSS
during the call minus the RSS right after opening the catalog: the peak is reset through
/proc/self/clear_refs once the catalog is open):

1. a no-change publish: nothing moved since the last one (target < 1 s);
2. a 0.1% night, applied beforehand (untimed) the way sync and the downloader write it: 6,000
   new records after the newest plus the trailing 2-day re-check window (3,840 records) stored by
   ``Catalog.apply_chunk`` (sync's MERGE: it rewrites ``_synced_at`` of every row it re-fetched),
   3,000 reprocessed records (a contiguous range of a past month: ``_prev_recnum = _recnum``, new
   ``_recnum``, ``DATE`` and ``_synced_at``), 1,000 deleted (``_gone_at``, another month), and the
   6,000 new records' files landed (``record_landed_files`` + ``record_landed_checks``, the
   downloader's MERGEs); then ``publish`` (target < 5 s); peak extra RSS target < 500 MB;
3. the worst 0.1% night: 10,000 reprocessed records spread uniformly over the whole mission, so
   every month part is touched and rewritten (no target; it costs about a first publish);
4. the full-copy peers, on the same catalog in the same run: ``EXPORT DATABASE '<dir>' (FORMAT
   parquet)``, and ``shutil.copyfile`` of catalog.duckdb plus fsync.

Nights run forward: repeat k applies night k (its records follow night k-1's, its reprocessed and
deleted ranges fall in other months, ``_synced_at`` is a day later), so every repeat measures the
same amount of change on the catalog a real nightly job would see, without copying a 2 GB file per
repeat. After every publish the child opens ``<read>/catalog.duckdb`` read-only with plain duckdb
and asserts its row counts (and a few sums) of kw_hmi_m_45s, local_files and file_checks equal the
writer's: a benchmark that published wrong data fails.

Each publish also prints where its time goes and what raised its peak RSS, by publish.py's own
steps (fingerprints, the COPY of each table's parts, the views file and switch, the store's setup,
where a fresh process first imports jsocmirror.scan), and the load average of the run: on the
shared 2-core box, wall seconds above the CPU figures are time spent waiting for a core.

Measured 2026-12-04 (10M records, 1M files; shared box, load 2.2-4.0; publish.py of 1f0d951 plus
the lead's uncommitted edits, which since d56e645 sets no DuckDB memory limit): no-change 1.40 s
(runs 1.40, 1.35, 1.74; CPU 1.05 s, fingerprints 1.10 s): target < 1 s missed under load; the
0.1% night 1.99 s (1.89-2.66): met; peak extra RSS 321 MB no-change, 660-706 MB for the night:
target < 500 MB missed; worst night 22.8 s, 1,047 MB; first publish 22.8 s, 1,054 MB; EXPORT
DATABASE 16.6 s (3.1 GB extra RSS) = 8.3x the night; file copy + fsync of the 741 MiB file 0.63
s = 0.32x the night. One run on 830232f (publish under a 400 MB limit and 2 threads; load 0.7):
no-change 0.78 s, night 2.02 s, extra RSS 322 / 432 MB, EXPORT 13.1 s, file copy 0.49 s.

Run:  python benchmarks/publish.py [--records 10000000] [--files 1000000] [--repeats 3]
                                   [--worst-repeats 1] [--catalog PATH]
(``--catalog PATH`` keeps the built catalog there and reuses it; the nights it saw stay in it.)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from diff import peak_rss_mb  # benchmarks/diff.py: VmHWM, this process's own peak

SERIES = "hmi.M_45s"
TABLE = "kw_hmi_m_45s"
BASE_SYNCED = "2026-01-01 00:00:00"  # _synced_at of the built catalog; night k is k days later
T0 = "2010-05-01 00:00:00"
STEP_S = 45
NEW, REPROCESSED, DELETED = 6000, 3000, 1000
RECHECK = 2 * 86400 // STEP_S  # sync's default [sync] recheck = 2d
TARGET_NOCHANGE_S, TARGET_NIGHT_S, TARGET_EXTRA_MB = 1.0, 5.0, 500.0

# The keyword columns filled, as SQL over i (the record's index from T0), ts (T_REC) and s (T_REC_str).
FILLED = {
    "_key": "'[' || s || '][2]'",
    "T_REC_index": "{slot0} + i",
    "T_REC": "ts",
    "T_REC_str": "s",
    "T_REC_epoch": "TIMESTAMP '1993-01-01 00:00:00'",
    "T_REC_step": "45.0",
    "T_REC_unit": "'secs'",
    "CADENCE": "45.0",
    "CAMERA": "2",
    "QUALITY": "CASE WHEN i % 1000 = 100 THEN -2147483648 ELSE 0 END",
    "DATE": "ts + INTERVAL 1250 SECOND + (i % 17) * INTERVAL 1 SECOND",
    "DATE__OBS": "ts - INTERVAL 22 SECOND",
    "T_OBS": "ts + INTERVAL 0.5 SECOND",
    "TELESCOP": "'SDO/HMI'",
    "INSTRUME": "'HMI_SIDE1'",
    "ORIGIN": "'SDO/JSOC-SDP'",
    "CONTENT": "'MAGNETOGRAM'",
    "BUNIT": "'Mx/cm^2'",
    "WAVELNTH": "6173.0",
    "DATAMEAN": "((hash(i) % 20000)::DOUBLE - 10000) / 1000",
    "DATARMS": "(hash(i + 1) % 100000)::DOUBLE / 1000 + 100",
    "DATAMIN": "-2000 - (hash(i + 2) % 5000)::DOUBLE / 10",
    "DATAMAX": "2000 + (hash(i + 3) % 5000)::DOUBLE / 10",
    "CRPIX1": "2048.5 + (hash(i + 4) % 1000)::DOUBLE / 1000",
    "CRPIX2": "2048.5 + (hash(i + 5) % 1000)::DOUBLE / 1000",
    "CROTA2": "180.0 + (hash(i + 6) % 1000)::DOUBLE / 10000",
    "DSUN_OBS": "1.496e11 + 2.5e9 * sin(i * 45 * 2 * pi() / 31557600)",
    "RSUN_OBS": "959.6 + 16 * cos(i * 45 * 2 * pi() / 31557600)",
    "CRLT_OBS": "7.25 * sin(i * 45 * 2 * pi() / 31557600)",
    "CRLN_OBS": "360 - (i * 45 % 2356585) / 2356585.0 * 360",
    "CAR_ROT": "2096 + (i * 45 // 2356585)::INTEGER",
    "_recnum": "1000000 + i",
    "_sunum": "600000000 + i // 40",
    "_online": "i % 5000 <> 300",
    "_size": "14000000 + i % 40",
}


def gen_select(first: int, count: int, slot0: int, synced_at: str) -> tuple[str, str]:
    """(column list, SELECT) of records first..first+count-1 as sync stores them."""
    cols = ", ".join(f'"{name}"' for name in FILLED) + ", _synced_at"
    exprs = ", ".join(expr.format(slot0=slot0) for expr in FILLED.values()) + f", TIMESTAMP '{synced_at}'"
    select = f"""
        SELECT {exprs}
        FROM (SELECT i, TIMESTAMP '{T0}' + i * INTERVAL {STEP_S} SECOND AS ts,
                     strftime(TIMESTAMP '{T0}' + i * INTERVAL {STEP_S} SECOND, '%Y.%m.%d_%H:%M:%S') || '_TAI' AS s
              FROM range({first}, {first + count}) t(i))"""
    return cols, select


def files_select(first: int, count: int) -> str:
    """The layout paths (and facts) of records first..first+count-1's magnetogram files."""
    return f"""
        SELECT '{SERIES}/' || strftime(ts, '%Y/%m/%d') || '/hmi.m_45s.' || strftime(ts, '%Y%m%d_%H%M%S')
                   || '_TAI.2.magnetogram.fits' AS path,
               '{SERIES}/' || strftime(ts, '%Y/%m/%d') AS dir, '{SERIES}' AS series, '[' || s || '][2]' AS record_key,
               'magnetogram' AS segment, (14000000 + i % 40)::BIGINT AS size,
               (1.7e9 + i * 45)::DOUBLE AS mtime, (1000000 + i)::BIGINT AS recnum
        FROM (SELECT i, TIMESTAMP '{T0}' + i * INTERVAL {STEP_S} SECOND AS ts,
                     strftime(TIMESTAMP '{T0}' + i * INTERVAL {STEP_S} SECOND, '%Y.%m.%d_%H:%M:%S') || '_TAI' AS s
              FROM range({first}, {first + count}) t(i))"""


def slot0() -> int:
    from jsocmirror import drmstime
    from jsocmirror.series import builtin_series

    return builtin_series().get(SERIES).slotting("T_REC").index(drmstime.parse_time("2010.05.01_00:00:00_TAI"))


def build(catalog_path: str, records: int, files: int) -> None:
    from jsocmirror.catalog import Catalog
    from jsocmirror.series import builtin_series

    s0 = slot0()
    with Catalog(catalog_path) as catalog:
        catalog.ensure_keyword_table(builtin_series().get(SERIES))
        cols, select = gen_select(0, records, s0, BASE_SYNCED)
        catalog.execute(f"INSERT INTO {TABLE} ({cols}) {select}")
        first = max(0, records - files)
        catalog.execute(f"""
            INSERT INTO local_files (path, dir, series, record_key, segment, size, mtime, state, scanned_at, file_recnum)
            SELECT path, dir, series, record_key, segment, size, mtime, 'layout', TIMESTAMP '{BASE_SYNCED}', recnum
            FROM ({files_select(first, records - first)})""")
        catalog.execute(f"""
            INSERT INTO file_checks (path, fetched_recnum, fetched_at)
            SELECT path, recnum, TIMESTAMP '{BASE_SYNCED}' FROM ({files_select(first, records - first)})""")
        catalog.execute("CHECKPOINT")


def describe(catalog_path: str) -> dict:
    from jsocmirror.catalog import Catalog

    with Catalog(catalog_path, read_only=True) as catalog:
        row = catalog.execute(
            f"SELECT count(*), count(DISTINCT strftime(T_REC, '%Y-%m')), count(_gone_at), "
            f"(SELECT count(*) FROM local_files), (SELECT count(*) FROM file_checks) FROM {TABLE}").fetchall()[0]
    return {"records": row[0], "months": row[1], "gone": row[2], "files": row[3], "checks": row[4],
            "mib": os.path.getsize(catalog_path) / 2**20}


# -- the nights ----------------------------------------------------------------------------------
def _night_state(catalog) -> tuple[int, str, int, int]:
    """(night number, its time, index of the newest record, number of month partitions)."""
    newest_slot, last_synced, months = catalog.execute(
        f"SELECT max(T_REC_index), max(_synced_at), count(DISTINCT strftime(T_REC, '%Y-%m')) FROM {TABLE}").fetchall()[0]
    from datetime import datetime, timedelta

    night = (last_synced - datetime.fromisoformat(BASE_SYNCED)).days + 1
    when = (datetime.fromisoformat(BASE_SYNCED) + timedelta(days=night)).strftime("%Y-%m-%d %H:%M:%S")
    return night, when, newest_slot - slot0(), months


def _month_start(catalog, month_no: int) -> int:
    """Index of the first record of the month_no-th calendar month (0 = May 2010)."""
    year, month = 2010 + (4 + month_no) // 12, (4 + month_no) % 12 + 1
    return catalog.execute(
        f"SELECT min(T_REC_index) FROM {TABLE} WHERE T_REC >= TIMESTAMP '{year:04d}-{month:02d}-01'").fetchall()[0][0] - slot0()


def apply_night(catalog_path: str, worst: bool = False) -> dict:
    """One night's changes, written as sync and the downloader write them (see the module doc)."""
    from jsocmirror.catalog import Catalog
    from jsocmirror.series import builtin_series
    from jsocmirror.sync import Window

    s0 = slot0()
    with Catalog(catalog_path) as catalog:
        night, when, newest, months = _night_state(catalog)
        if worst:  # 0.1% reprocessed, spread uniformly: every month part touched
            count = NEW + REPROCESSED + DELETED
            stride = (newest + 1) // count
            catalog.execute(
                f"UPDATE {TABLE} SET _prev_recnum = _recnum, _recnum = _recnum + 100000000, "
                f"DATE = TIMESTAMP '{when}', _synced_at = TIMESTAMP '{when}' "
                f"WHERE (T_REC_index - {s0}) % {stride} = {night % stride} AND T_REC_index - {s0} < {stride * count}")
            return {"night": night, "reprocessed": count, "months_touched": months}
        columns = catalog.ensure_keyword_table(builtin_series().get(SERIES))
        names = [c.name for c in columns if c.kind != "record"] + ["_recnum", "_sunum", "_online", "_size"]
        quoted = ", ".join(f'"{n}"' for n in names)
        # sync's head phase: the trailing re-check window (re-fetched unchanged) plus the new records
        lo, hi = newest + 1 - RECHECK, newest + 1 + NEW
        catalog.execute(f"CREATE TEMP TABLE night_rows AS SELECT * FROM {TABLE} LIMIT 0")
        cols, select = gen_select(newest + 1, NEW, s0, when)
        catalog.execute(f"INSERT INTO night_rows ({cols}) {select}")
        catalog.execute(f"INSERT INTO night_rows SELECT * FROM {TABLE} WHERE T_REC_index >= {s0 + lo}")
        rows = catalog.con.sql(f"SELECT {quoted} FROM night_rows ORDER BY T_REC_index").to_arrow_table()
        catalog.execute("DROP TABLE night_rows")
        from datetime import datetime

        counts = catalog.apply_chunk(SERIES, columns, rows, Window("T_REC_index", s0 + lo, s0 + hi),
                                     datetime.fromisoformat(when))
        assert counts["new"] == NEW and counts["unchanged"] == RECHECK and counts["gone"] == 0, counts
        # a past month's reprocessing, and a deletion in another month (sync's tail checks find them)
        usable = max(1, months - 3)  # not the newest months: those are the head's
        re_month, del_month = (7 + 13 * night) % usable, (7 + 13 * night + usable // 2) % usable
        re_first = _month_start(catalog, re_month) + 1000
        del_first = _month_start(catalog, del_month) + 20000
        with catalog.transaction():
            catalog.execute(
                f"UPDATE {TABLE} SET _prev_recnum = _recnum, _recnum = _recnum + 100000000, "
                f"DATE = TIMESTAMP '{when}', _synced_at = TIMESTAMP '{when}' "
                f"WHERE T_REC_index >= {s0 + re_first} AND T_REC_index < {s0 + re_first + REPROCESSED}")
            catalog.execute(
                f"UPDATE {TABLE} SET _gone_at = TIMESTAMP '{when}' "
                f"WHERE T_REC_index >= {s0 + del_first} AND T_REC_index < {s0 + del_first + DELETED}")
        # the downloader lands the new records' files, in batches of 1000 as its commits go
        for first in range(newest + 1, newest + 1 + NEW, 1000):
            # what the downloader's batch holds besides: the file's sums were checked as it was written
            batch = catalog.con.sql(f"SELECT *, NULL::VARCHAR AS checksum, TRUE AS verified "
                                    f"FROM ({files_select(first, 1000)})").to_arrow_table()
            catalog.con.register("landed_batch", batch)
            try:
                with catalog.transaction():
                    catalog.q("record_landed_files", now=datetime.fromisoformat(when))
                    catalog.q("record_landed_checks", now=datetime.fromisoformat(when))
            finally:
                catalog.con.unregister("landed_batch")
    return {"night": night, "new": NEW, "rechecked": RECHECK, "reprocessed": REPROCESSED, "deleted": DELETED,
            "landed": NEW, "months": sorted({_month_name(re_month), _month_name(del_month)})}


def _month_name(month_no: int) -> str:
    return f"{2010 + (4 + month_no) // 12:04d}-{(4 + month_no) % 12 + 1:02d}"


# -- the measuring children ------------------------------------------------------------------------
def reset_peak() -> None:
    """Make VmHWM start again from the current RSS (Linux: ``5`` to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _config(mirror_dir: str):
    from jsocmirror.config import config_from_dict

    return config_from_dict({"series": [{"series": SERIES, "segments": ["magnetogram"]}],
                             "read": os.path.join(mirror_dir, "read")}, mirror_dir)


CHECKS = {  # table -> SQL figures a reader must see exactly as the writer does
    TABLE: "count(*), count(_gone_at), sum(_recnum), count(_prev_recnum), max(_synced_at)::VARCHAR",
    "local_files": "count(*), sum(file_recnum), max(scanned_at)::VARCHAR",
    "file_checks": "count(*), sum(fetched_recnum)",
}


def _figures(con) -> dict:
    return {t: list(con.execute(f"SELECT {sql} FROM {t}").fetchall()[0]) for t, sql in CHECKS.items()}


def measure_publish(catalog_path: str, mirror_dir: str) -> dict:
    import duckdb

    from jsocmirror import publish as publish_mod
    from jsocmirror.catalog import Catalog

    config = _config(mirror_dir)
    phases: dict[str, float] = {}
    rises: dict[str, float] = {}  # step -> MB it raised the peak RSS by

    def timed(name: str, fn):
        def wrapper(*a, **k):
            label = name
            if name == "COPY" and len(a) > 2 and hasattr(a[2], "table"):  # _write_part(catalog, store, part, ...)
                label = f"COPY {a[2].table}"
            start, before = time.perf_counter(), peak_rss_mb()
            try:
                return fn(*a, **k)
            finally:
                phases[label] = phases.get(label, 0.0) + time.perf_counter() - start
                if peak_rss_mb() > before:  # this step raised the peak: by how much, at most
                    rises[label] = max(rises.get(label, 0.0), peak_rss_mb() - before)
        return wrapper

    # where the time goes, by the module's own steps (left out if the module no longer has one);
    # the store's setup is where a fresh process first imports jsocmirror.scan (for open_root)
    for name, label in (("_fingerprints", "fingerprints"), ("_write_part", "COPY"),
                        ("_write_generation", "views file + switch"), ("collect_garbage", "garbage collection"),
                        ("_next_generation", "generation listing"), ("_load_manifest", "manifest read"),
                        ("_Store", "store setup")):
        if hasattr(publish_mod, name):
            setattr(publish_mod, name, timed(label, getattr(publish_mod, name)))
    out: dict = {}
    with Catalog(catalog_path) as catalog:
        out["rss_open_mb"] = rss_mb()
        reset_peak()
        cpu0, start = cpu_s(), time.perf_counter()
        result = publish_mod.publish(catalog, config)
        out["s"] = time.perf_counter() - start
        out["cpu_s"] = cpu_s() - cpu0
        out["peak_mb"] = peak_rss_mb()
        out["extra_mb"] = out["peak_mb"] - out["rss_open_mb"]
        out["result"] = {k: getattr(result, k) for k in ("generation", "changed", "parts_written", "rows_written",
                                                          "parts_kept", "files_removed", "seconds", "tables")}
        out["phases"] = phases
        out["rises"] = rises
        writer = _figures(catalog.con)
    read_db = os.path.join(config.read_root, "catalog.duckdb")
    reader = duckdb.connect(read_db, read_only=True)
    try:
        seen = _figures(reader)
    finally:
        reader.close()
    if seen != writer:
        raise SystemExit(f"the readers' copy differs from the writer: reader {seen}, writer {writer}")
    out["reader"] = seen
    return out


def measure_export(catalog_path: str, mirror_dir: str) -> dict:
    from jsocmirror.catalog import Catalog

    target = os.path.join(mirror_dir, "export")
    shutil.rmtree(target, ignore_errors=True)
    out = {}
    with Catalog(catalog_path) as catalog:
        out["rss_open_mb"] = rss_mb()
        reset_peak()
        start = time.perf_counter()
        catalog.execute(f"EXPORT DATABASE '{target}' (FORMAT parquet)")
        out["s"] = time.perf_counter() - start
        out["peak_mb"] = peak_rss_mb()
        out["extra_mb"] = out["peak_mb"] - out["rss_open_mb"]
    out["mib"] = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(target) for f in fs) / 2**20
    shutil.rmtree(target, ignore_errors=True)
    return out


def measure_copy(catalog_path: str, mirror_dir: str) -> dict:
    target = os.path.join(mirror_dir, "copy.duckdb")
    start = time.perf_counter()
    shutil.copyfile(catalog_path, target)
    fd = os.open(target, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    out = {"s": time.perf_counter() - start, "mib": os.path.getsize(target) / 2**20}
    os.remove(target)
    return out


def child(mode: str, catalog_path: str, mirror_dir: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--measure", mode, catalog_path, mirror_dir],
                          check=False, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"measuring {mode} failed:\n{proc.stderr}{proc.stdout}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- printing --------------------------------------------------------------------------------------
def _runs(runs: list[dict], key: str = "s") -> str:
    return ", ".join(format(r[key], ".2f" if key == "s" else ",.0f") for r in runs)


def _ratio(peer: float, ours: float) -> str:
    ratio = peer / ours
    return f"{ratio:.0f}x" if ratio >= 10 else f"{ratio:.2g}x"


def _median_run(runs: list[dict]) -> dict:
    return sorted(runs, key=lambda r: r["s"])[(len(runs) - 1) // 2]


def _phases(run: dict) -> str:
    phases = dict(run.get("phases", {}))
    other = run["s"] - sum(phases.values())
    text = ", ".join(f"{k} {v:.2f}" for k, v in sorted(phases.items(), key=lambda kv: -kv[1]) if v >= 0.005)
    if other < 0:  # parts written on two connections at once: their COPY seconds overlap
        return text + f" s (COPY seconds summed over the parallel writers: {-other:.2f} s overlapped)"
    return text + f", other {other:.2f} s"


def _rises(run: dict) -> str:
    rises = run.get("rises", {})
    return ", ".join(f"{k} +{v:,.0f} MB" for k, v in sorted(rises.items(), key=lambda kv: -kv[1]) if v >= 1) or "nothing"


def _publish_line(label: str, runs: list[dict], target: float | None) -> None:
    med = _median_run(runs)
    res = med["result"]
    tgt = f"; target < {target:g} s: {'met' if med['s'] < target else 'MISSED'}" if target else ""
    print(f"{label}: {statistics.median(r['s'] for r in runs):.2f} s (runs: {_runs(runs)}{tgt})")
    tables = ", ".join(f"{t} {n}" for t, n in sorted(res["tables"].items()))
    print(f"  median run: {res['parts_written']} parts written ({res['rows_written']:,} rows; {tables or 'none'}), "
          f"{res['parts_kept']} kept, {res['files_removed']} files removed; CPU {med['cpu_s']:.2f} s")
    print(f"  where the time goes: {_phases(med)}")
    print(f"  what raised the peak RSS: {_rises(med)}")
    extra = max(r["extra_mb"] for r in runs)
    print(f"  peak extra RSS: {statistics.median(r['extra_mb'] for r in runs):,.0f} MB median, {extra:,.0f} MB max "
          f"(after opening the catalog {med['rss_open_mb']:,.0f} MB; runs: {_runs(runs, 'extra_mb')}; "
          f"target < {TARGET_EXTRA_MB:g} MB: {'met' if extra < TARGET_EXTRA_MB else 'MISSED'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=10_000_000)
    parser.add_argument("--files", type=int, default=1_000_000, help="local_files rows: the newest records' files")
    parser.add_argument("--repeats", type=int, default=3, help="nights measured (each: night, no-change, peers)")
    parser.add_argument("--worst-repeats", type=int, default=1, help="worst-case nights measured (0: none)")
    parser.add_argument("--catalog", help="keep the built catalog here and reuse it (default: a temp dir, removed)")
    parser.add_argument("--measure", nargs=3, metavar=("MODE", "CATALOG", "MIRROR_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        mode, path, mirror = args.measure
        print(json.dumps({"publish": measure_publish, "export": measure_export, "copy": measure_copy}[mode](path, mirror)))
        return
    work = tempfile.mkdtemp(prefix="jsocmirror-bench-publish-")
    try:
        path = os.path.abspath(args.catalog) if args.catalog else os.path.join(work, "catalog.duckdb")
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            start = time.perf_counter()
            build(path, args.records, args.files)
            print(f"setup {time.perf_counter() - start:.1f} s (untimed)")
        info = describe(path)
        load0 = os.getloadavg()
        print(f"catalog: {info['records']:,} records in {info['months']} months ({info['gone']:,} gone), "
              f"local_files {info['files']:,}, file_checks {info['checks']:,} ({info['mib']:,.0f} MiB DuckDB file)")
        first = child("publish", path, work)
        res = first["result"]
        print(f"first publish (empty read dir, everything written): {first['s']:.2f} s, {res['parts_written']} parts, "
              f"{res['rows_written']:,} rows; CPU {first['cpu_s']:.2f} s; peak extra RSS {first['extra_mb']:,.0f} MB")
        print(f"  where the time goes: {_phases(first)}")
        print(f"  what raised the peak RSS: {_rises(first)}")
        nights, nochange, exports, copies, worst = [], [], [], [], []
        applied = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            applied.append(apply_night(path))
            applied[-1]["apply_s"] = time.perf_counter() - start
            nights.append(child("publish", path, work))
            assert nights[-1]["result"]["changed"], nights[-1]
            nochange.append(child("publish", path, work))
            assert not nochange[-1]["result"]["changed"], nochange[-1]
            exports.append(child("export", path, work))
            copies.append(child("copy", path, work))
        for _ in range(args.worst_repeats):
            worst_night = apply_night(path, worst=True)
            worst.append(child("publish", path, work))
        reader = (worst or nights or [first])[-1]["reader"]
        info = describe(path)
        print(f"nights: {applied[0]['new']:,} new + {applied[0]['rechecked']:,} re-checked (sync's MERGE), "
              f"{applied[0]['reprocessed']:,} reprocessed, {applied[0]['deleted']:,} deleted, {applied[0]['landed']:,} "
              f"files landed; past months touched: {', '.join('/'.join(a['months']) for a in applied)}; "
              f"applying took {', '.join(format(a['apply_s'], '.1f') for a in applied)} s (untimed)")
        _publish_line(f"no-change publish (median of {len(nochange)})", nochange, TARGET_NOCHANGE_S)
        _publish_line(f"0.1% night publish (median of {len(nights)})", nights, TARGET_NIGHT_S)
        if worst:
            _publish_line(f"worst 0.1% night: {worst_night['reprocessed']:,} reprocessed records spread over all "
                          f"{worst_night['months_touched']} months (median of {len(worst)})", worst, None)
        t_export = statistics.median(r["s"] for r in exports)
        t_copy = statistics.median(r["s"] for r in copies)
        t_night = statistics.median(r["s"] for r in nights)
        t_none = statistics.median(r["s"] for r in nochange)
        print(f"peer: EXPORT DATABASE (FORMAT parquet): {t_export:.2f} s (runs: {_runs(exports)}; "
              f"{exports[-1]['mib']:,.0f} MiB; peak extra RSS {max(r['extra_mb'] for r in exports):,.0f} MB) "
              f"= {_ratio(t_export, t_night)} the night's publish, {_ratio(t_export, t_none)} the no-change publish")
        print(f"peer: file copy of catalog.duckdb + fsync: {t_copy:.2f} s (runs: {_runs(copies)}; "
              f"{copies[-1]['mib']:,.0f} MiB) = {_ratio(t_copy, t_night)} the night's publish, "
              f"{_ratio(t_copy, t_none)} the no-change publish")
        print(f"reader: <read>/catalog.duckdb opened read-only by plain duckdb after every publish sees what the "
              f"writer has: {TABLE} {reader[TABLE][0]:,} rows ({reader[TABLE][1]:,} gone), local_files "
              f"{reader['local_files'][0]:,}, file_checks {reader['file_checks'][0]:,} (asserted)")
        print(f"load average (1/5/15 min) at the start {', '.join(f'{x:.1f}' for x in load0)}, at the end "
              f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores: wall seconds above "
              f"the CPU figures are time spent waiting for a core")
        assert reader[TABLE][0] == info["records"] and reader["local_files"][0] == info["files"], (reader, info)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
