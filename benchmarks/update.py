"""Nightly-update benchmark (issue #6), against an emulator subprocess.

(a) **Nightly update after a 1% change.** A mirror of ``--records`` hmi.M_45s records (default
    100k, ~52 days) is synced and its files laid down (small stand-in files: only the nightly
    fetch is measured). Upstream then changes by ``--change`` (default 1%): 80% of it new records
    at the head (the clock advances), 20% reprocessed records inside the window. One
    ``update_mirror`` is timed; printed: records staged and bytes fetched divided by the change
    (target exactly 1.0), wall time, and for reference an update with nothing changed.
    Peer, same run, same emulator: sunpy ``Fido.search`` + ``Fido.fetch`` of the night's window
    (the best a user without a catalog can do), with sunpy pointed at the emulator through
    ``HTTP_PROXY`` in its own process. It cannot see the reprocessed records.
(b) **Download throughput**, 4 connections: ``download_files`` (temp name, fsync, checksum
    verify, durable rename) against a minimal downloader: raw parallel GETs of the same files
    (4 threads, urllib, 1 MiB reads into a reused buffer, each body written to a file, no checks,
    no fsync) from the same server, alternated, median of ``--repeats``. Target >= 80%. Also
    printed: ours without the durability sync (``durability='none'``), and a like-for-like peer,
    the same raw GETs followed by one ``syncfs`` (the raw client's files are otherwise still only
    in the page cache when its clock stops; on 2 cores the kernel's writeback competes with the
    transfers).

    Two file sizes by default: 200 files of 512x512 pixels (~0.35 MB, the size of a SHARP
    cutout) and 24 of 4096x4096 (~17 MB, an HMI full-disk image); ``--case`` picks others.

Usage: ``python benchmarks/update.py [--records 100000] [--change 0.01] [--case 512x512:200]
[--repeats 5] [--only a|b] [--skip-sunpy]``. Smaller sizes for development: ``--records 5000``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

SERIES = "hmi.M_45s"
STEP = 45.0
EMAIL = "bench@example.org"
NOW = "2024.07.01_00:00:00_TAI"  # the emulator's default clock


def start_emulator(state_dir: Path | None, *extra: str) -> tuple[subprocess.Popen, str]:
    args = [sys.executable, "-m", "jsocmirror", "emulator", "serve", "--mode", "lenient", *extra]
    if state_dir is not None:
        args += ["--state-dir", str(state_dir)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    url = proc.stdout.readline().strip()
    if not url.startswith("http"):
        proc.kill()
        raise SystemExit(f"emulator did not start: {url!r}")
    return proc, url


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- (a) ------------------------------------------------------------------------------------------------
def nightly(args, work: Path) -> dict:
    from jsocmirror import config as cfg
    from jsocmirror import drmstime
    from jsocmirror.catalog import Catalog
    from jsocmirror.emulator import Emulator
    from jsocmirror.jsoc import JsocClient
    from jsocmirror.sync import sync
    from jsocmirror.update import UpdateOptions, update_mirror

    state = work / "emu"
    proc, url = start_emulator(state)
    try:
        now = drmstime.parse_time(NOW)
        start = drmstime.format_time(now - (args.records - 1) * STEP, "TAI")
        mirror = work / "mirror"
        mirror.mkdir()
        config = cfg.MirrorConfig(
            mirror_dir=mirror, server=url, email=EMAIL,
            series=[cfg.SeriesConfig(series=SERIES, segments=["magnetogram"], start=start, keys={"CAMERA": [2]})],
            transfer=cfg.TransferConfig(max_connections=4, poll_interval=0.2),
            verify=cfg.VerifyConfig(enabled=False),  # lay_down's stand-ins are not FITS: the rotation would refetch them
        )
        cfg.save_config(config)
        with Catalog(config.catalog_path):
            pass
        Path(config.data_root).mkdir()
        config = cfg.load_config(mirror)
        t0 = time.perf_counter()
        with Catalog(config.catalog_path) as catalog:  # the first night's sync (a dry run writes nothing)
            synced = sync(config, catalog, JsocClient(url, email=EMAIL))
        sync_s = time.perf_counter() - t0
        lay_down(config)  # the mirror as a past night left it
        t0 = time.perf_counter()
        idle = update_mirror(config, url, UpdateOptions())
        idle_s = time.perf_counter() - t0
        assert idle.files_downloaded == 0, idle.render()

        n_change = max(1, round(args.records * args.change))
        n_new = round(n_change * 0.8)
        with Catalog(config.catalog_path, read_only=True) as catalog:
            keys = [k for (k,) in catalog.execute("SELECT _key FROM hmi_m_45s WHERE QUALITY >= 0").fetchall()]
        reprocess = random.Random(0).sample(keys, n_change - n_new)
        world = Emulator(state_dir=state).world  # the same persisted world the server serves
        world.advance(n_new * STEP)
        for key in reprocess:
            world.reprocess(SERIES, key)
        night_start, night_end = drmstime.format_time(now + STEP, "TAI"), drmstime.format_time(now + n_new * STEP, "TAI")
        expected = set(reprocess) | set(new_keys(url, f"{SERIES}[{night_start}-{night_end}][2]"))
        t0 = time.perf_counter()
        summary = update_mirror(config, url, UpdateOptions())
        update_s = time.perf_counter() - t0
        root = Path(config.data_root)
        with Catalog(config.catalog_path, read_only=True) as catalog:
            rows = catalog.execute("SELECT record_key, path FROM local_files WHERE series = $s AND record_key IN "
                                   "(SELECT unnest($k))", {"s": SERIES, "k": sorted(expected)}).fetchall()
        change_bytes = sum((root / path).stat().st_size for _, path in rows)
        out = {
            "records": args.records, "synced_records": {k: synced.total(k) for k in ("new", "reprocessed", "gone")}, "first_sync_s": round(sync_s, 2),
            "idle_update_s": round(idle_s, 2), "change_records": len(expected),
            "staged_records": summary.planned_records, "downloaded_records": summary.records_downloaded,
            "bytes_transferred": summary.bytes_transferred, "change_bytes": change_bytes,
            "records_ratio": round(summary.planned_records / len(expected), 4),
            "downloaded_ratio": round(summary.records_downloaded / len(expected), 4),
            "bytes_ratio": round(summary.bytes_transferred / change_bytes, 4) if change_bytes else None,
            "queries": summary.planned_queries, "update_s": round(update_s, 2), "phases_s": summary.timings,
            "failures": len(summary.failures),
            "jsoc_requests": summary.jsoc_requests,
        }
        if not args.skip_sunpy:
            out["sunpy"] = sunpy_fetch(url, night_start, night_end, work / "sunpy")
        return out
    finally:
        stop(proc)


def lay_down(config) -> None:
    """Stand-in files for every wanted record (what earlier nights fetched), then a scan."""
    from jsocmirror import diff, scan
    from jsocmirror.catalog import Catalog

    root = Path(config.data_root)
    with Catalog(config.catalog_path) as catalog:
        registry = diff.series_definitions(catalog)
        layout = diff.layout_for_config(config, registry)
        result = diff.diff_mirror(catalog, config, registry=registry)
        for gap in result.gaps(states=["missing"]):
            path = root / diff.target_path(layout, gap)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"SIMPLE  =                    T" + b" " * 50)
        scan.scan_tree(catalog, str(root), layout)


def new_keys(url: str, ds: str) -> list[str]:
    from jsocmirror.jsoc import JsocClient

    reply = JsocClient(url).rs_list(ds, ["T_REC", "CAMERA", "QUALITY"])
    cols = {k["name"]: k["values"] for k in reply.get("keywords") or []}
    return [f"[{t}][{c}]" for t, c, q in zip(cols.get("T_REC", []), cols.get("CAMERA", []), cols.get("QUALITY", []))
            if 0 <= int(str(q), 0) < 2**31]


SUNPY_SCRIPT = r"""
import sys, time, json
t0 = time.perf_counter()
from astropy.time import Time
from sunpy.net import Fido, attrs as a
start, end, path = sys.argv[1:4]
res = Fido.search(a.Time(Time(start, scale="tai"), Time(end, scale="tai")), a.jsoc.Series("hmi.M_45s"), a.jsoc.Notify("bench@example.org"),
                  a.jsoc.Segment("magnetogram"), a.jsoc.PrimeKey("CAMERA", "2"))
t1 = time.perf_counter()
files = Fido.fetch(res, path=path + "/{file}", progress=False)
t2 = time.perf_counter()
print(json.dumps({"search_s": t1 - t0, "fetch_s": t2 - t1, "files": len(files), "errors": len(files.errors)}))
"""


def sunpy_fetch(url: str, start: str, end: str, path: Path) -> dict:
    path.mkdir()
    port = url.rstrip("/").rsplit(":", 1)[1]
    env = dict(os.environ, HTTP_PROXY=f"http://127.0.0.1:{port}", http_proxy=f"http://127.0.0.1:{port}",
               NO_PROXY="", no_proxy="")
    iso = [s.replace(".", "-", 2).replace("_TAI", "").replace("_", "T") for s in (start, end)]
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", SUNPY_SCRIPT, iso[0], iso[1], str(path)], env=env,
                          capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed", "wall_s": wall}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall_s"] = round(wall, 2)
    out["bytes"] = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return out


# -- (b) ------------------------------------------------------------------------------------------------
def parse_case(text: str) -> tuple[str, int]:
    size, _, files = text.partition(":")
    rows, sep, cols = size.partition("x")
    if not (sep and rows.isdigit() and cols.isdigit() and files.isdigit() and int(files) > 0):
        raise argparse.ArgumentTypeError(f"bad case {text!r} (expected ROWSxCOLS:FILES, e.g. 512x512:200)")
    return size, int(files)


def throughput(args, work: Path, image_size: str, files: int) -> dict:
    from jsocmirror.download import FileTask, RetryPolicy, _sync_filesystem, download_files
    from jsocmirror.jsoc import JsocClient

    rows, _, cols = image_size.partition("x")
    cache_mb = max(256, files * int(rows) * int(cols) * 5 // 2**20)  # every file served from memory
    proc, url = start_emulator(None, "--image-size", image_size, "--cache-mb", str(cache_mb))
    try:
        minutes = files * STEP / 60 + 1
        reply = JsocClient(url).rs_list(f"{SERIES}[2024.06.01_00:00_TAI/{minutes:.0f}m][2]", ["T_REC"])
        urls = []
        for seg in reply.get("segments") or []:
            urls += [url + p.lstrip("/") for p in seg["values"] if p.startswith("/")]
        if not urls:  # rs_list without seg=: ask again with it
            body = JsocClient(url).get_json("jsoc_info", {"op": "rs_list", "ds": f"{SERIES}[2024.06.01_00:00_TAI/"
                                                          f"{minutes:.0f}m][2]", "key": "T_REC", "seg": "magnetogram"})
            urls = [url + p.lstrip("/") for p in body["segments"][0]["values"] if p.startswith("/")]
        urls = urls[:files]

        buffers = threading.local()

        def raw(dest: Path | None = None) -> int:
            """The minimal downloader: GET, write the body to a file (no checks, no fsync)."""
            def get(item: tuple[int, str]) -> int:
                j, u = item
                # read into one 1 MiB buffer per thread: no bytes object allocated per read, the
                # leanest a minimal client can be (the same reads download_files makes)
                view = getattr(buffers, "view", None)
                if view is None:
                    view = buffers.view = memoryview(bytearray(1 << 20))
                n = 0
                out = open(dest / f"{j}.fits", "wb") if dest is not None else None
                with urllib.request.urlopen(u, timeout=60) as r:
                    while got := r.readinto(view):
                        n += got
                        if out is not None:
                            out.write(view[:got])
                if out is not None:
                    out.close()
                return n
            if dest is not None:
                dest.mkdir(parents=True)
            with ThreadPoolExecutor(4) as pool:
                return sum(pool.map(get, enumerate(urls)))

        total = raw()  # warm the emulator's file cache (untimed)
        raw_times, durable_raw_times, our_times, fast_times = [], [], [], []
        for i in range(args.repeats):
            t0 = time.perf_counter()
            assert raw(work / f"raw{i}") == total
            raw_times.append(time.perf_counter() - t0)
            shutil.rmtree(work / f"raw{i}")
            t0 = time.perf_counter()
            assert raw(work / f"rawsync{i}") == total
            _sync_filesystem(str(work))  # the same GETs, then the files made durable, like ours
            durable_raw_times.append(time.perf_counter() - t0)
            shutil.rmtree(work / f"rawsync{i}")
            dest = work / f"dl{i}"
            tasks = [FileTask(u, f"f/{j}.fits", SERIES, f"[{j}]", "magnetogram") for j, u in enumerate(urls)]
            t0 = time.perf_counter()
            results = download_files(tasks, dest, connections=4, policy=RetryPolicy(attempts=2))
            our_times.append(time.perf_counter() - t0)
            assert not results.errors and results.bytes == total, results.errors[:3]
            shutil.rmtree(dest)
            t0 = time.perf_counter()
            results = download_files(tasks, dest, connections=4, policy=RetryPolicy(attempts=2), durability="none")
            fast_times.append(time.perf_counter() - t0)
            assert not results.errors and results.bytes == total, results.errors[:3]
            shutil.rmtree(dest)
        raw_s, durable_s, our_s, fast_s = (statistics.median(t) for t in
                                            (raw_times, durable_raw_times, our_times, fast_times))
        return {"files": len(urls), "bytes": total, "raw_MBps": round(total / raw_s / 1e6, 1),
                "ours_MBps": round(total / our_s / 1e6, 1), "ratio": round(raw_s / our_s, 3),
                "durable_raw_MBps": round(total / durable_s / 1e6, 1), "durable_ratio": round(durable_s / our_s, 3),
                # each repeat runs raw, raw+sync, ours, ours-nosync back to back: ratios within a repeat
                "paired_ratios": sorted(round(r / o, 3) for r, o in zip(raw_times, our_times)),
                "nosync_MBps": round(total / fast_s / 1e6, 1), "nosync_ratio": round(raw_s / fast_s, 3),
                "raw_s": [round(t, 3) for t in raw_times], "durable_raw_s": [round(t, 3) for t in durable_raw_times],
                "ours_s": [round(t, 3) for t in our_times],
                "nosync_s": [round(t, 3) for t in fast_times]}
    finally:
        stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--change", type=float, default=0.01)
    parser.add_argument("--case", dest="cases", action="append", type=parse_case, metavar="ROWSxCOLS:FILES",
                        help="(b): files of this image size, this many (repeatable; default 512x512:200, a "
                             "SHARP-sized ~0.35 MB each, and 4096x4096:24, HMI full-disk-sized ~17 MB each)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-sunpy", action="store_true")
    parser.add_argument("--only", choices=["a", "b"], default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="jsocmirror-bench-update-"))
    try:
        if args.only in (None, "a"):
            a = nightly(args, work / "a" if (work / "a").mkdir() is None else work)
            print("(a) nightly update after a", f"{args.change:.0%} change of a {args.records}-record mirror")
            for key, value in a.items():
                print(f"    {key}: {value}")
            print(f"    -> records staged / change = {a['records_ratio']} (target 1.0); "
                  f"bytes fetched / change = {a['bytes_ratio']} (target 1.0); wall {a['update_s']} s")
            if "sunpy" in a and "fetch_s" in a["sunpy"]:
                s = a["sunpy"]
                print(f"    -> sunpy Fido.search+fetch of the night's window: {s['files']} files in {s['wall_s']} s "
                      f"(misses the {a['change_records'] - s['files']} records reprocessed inside the window)")
        if args.only in (None, "b"):
            for image_size, files in args.cases or [("512x512", 200), ("4096x4096", 24)]:
                (work / "b").mkdir()
                b = throughput(args, work / "b", image_size, files)
                shutil.rmtree(work / "b")
                print(f"(b) download throughput, 4 connections, {b['files']} files of {image_size} pixels, "
                      f"{b['bytes'] / 1e6:.0f} MB")
                print(f"    raw parallel GETs: {b['raw_MBps']} MB/s; download_files: {b['ours_MBps']} MB/s; "
                      f"ratio {b['ratio']:.0%} (target >= 80%); within each repeat: {b['paired_ratios']}")
                print(f"    without the durability sync (durability='none'): {b['nosync_MBps']} MB/s, "
                      f"ratio {b['nosync_ratio']:.0%}")
                print(f"    like for like, the raw GETs followed by one syncfs: {b['durable_raw_MBps']} MB/s; "
                      f"download_files {b['durable_ratio']:.0%} of it")
                print(f"    times raw {b['raw_s']} raw+sync {b['durable_raw_s']} ours {b['ours_s']} "
                      f"nosync {b['nosync_s']}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
