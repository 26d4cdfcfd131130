"""Emulator benchmark: rs_list throughput and the server's peak RSS.

Runs ``python -m jsocmirror emulator serve --port 0`` in a subprocess (its own process, so its
RSS is measured alone, sampled every 20 ms with psutil) and times over loopback HTTP:

* ``rs_list`` of 100k hmi.M_45s records x 30 keywords   (target: < 2 s)
* ``rs_list`` of 1M records with ``key=T_REC,*recnum*`` (target: < 10 s, server peak RSS < 1 GB)
* file serving of ~1 MB generated FITS files with 1, 4 and 8 connections against
  ``python -m http.server`` (HTTP/1.0, subprocess) serving the same bytes from disk
  (target: >= 70% of it with 4 connections; ``bench_file_serving``)

The peer, measured in the same run, is the stdlib: ``json.dumps`` of the same reply already
decoded into Python lists, i.e. what a server that merely serialised a prepared answer would
pay; the ratio says how the whole emulator request compares with that serialisation alone.

Usage: ``python benchmarks/emulator.py [--repeat N]``. Each benchmark is a function taking the
server URL and a sampler, so more (file serving) can be added to ``main()``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from contextlib import contextmanager
from typing import Callable, Iterator

import orjson
import psutil

TARGET_100K_S = 2.0
TARGET_1M_S = 10.0
TARGET_1M_RSS = 1 << 30


class RssSampler:
    """Samples a process's RSS in a thread; ``peak`` since the last ``reset``."""

    def __init__(self, pid: int, interval: float = 0.02):
        self.proc = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(self.interval)

    def reset(self) -> int:
        self.peak = self.proc.memory_info().rss
        return self.peak

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1)


@contextmanager
def emulator_process() -> Iterator[tuple[str, RssSampler]]:
    """The emulator CLI in a subprocess; yields its URL and an RSS sampler."""
    proc = subprocess.Popen([sys.executable, "-m", "jsocmirror", "-q", "emulator", "serve", "--port", "0"],
                            stdout=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()  # the first line is the URL
        if not url.startswith("http://"):
            raise RuntimeError(f"emulator did not start (said {url!r})")
        sampler = RssSampler(proc.pid)
        try:
            yield url, sampler
        finally:
            sampler.stop()
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def rs_list(url: str, ds: str, key: str) -> tuple[float, bytes]:
    query = urllib.parse.urlencode({"op": "rs_list", "ds": ds, "key": key})
    start = time.perf_counter()
    with urllib.request.urlopen(f"{url}cgi-bin/ajax/jsoc_info?{query}", timeout=600) as resp:
        body = resp.read()
    return time.perf_counter() - start, body


def _peer_seconds(body: bytes) -> float:
    reply = orjson.loads(body)
    start = time.perf_counter()
    json.dumps(reply)
    return time.perf_counter() - start


def _run(name: str, url: str, sampler: RssSampler, ds: str, key: str, expect: int, repeat: int,
         target_s: float, target_rss: int | None = None) -> dict:
    rss_before = sampler.reset()
    times = []
    body = b""
    for _ in range(repeat):
        seconds, body = rs_list(url, ds, key)
        times.append(seconds)
    reply = orjson.loads(body)
    if reply.get("status") != 0 or reply.get("count") != expect:
        raise RuntimeError(f"{name}: unexpected reply status={reply.get('status')} count={reply.get('count')} "
                           f"error={reply.get('error')}")
    best = min(times)
    peer = _peer_seconds(body)
    result = {"name": name, "records": expect, "keywords": len(reply["keywords"]), "mb": len(body) / 1e6,
              "seconds": best, "median": sorted(times)[len(times) // 2], "peer_json_dumps_s": peer,
              "ratio_vs_peer": best / peer if peer else float("nan"), "rss_peak_mb": sampler.peak / 1e6,
              "rss_before_mb": rss_before / 1e6, "target_s": target_s,
              "ok": best < target_s and (target_rss is None or sampler.peak < target_rss)}
    print(f"{name}: {expect:,} records x {result['keywords']} keywords, {result['mb']:.0f} MB in "
          f"{best:.2f} s (median {result['median']:.2f} s of {repeat}; target < {target_s:g} s); "
          f"peer stdlib json.dumps of the same reply {peer:.2f} s (ratio {result['ratio_vs_peer']:.2f}); "
          f"server RSS peak {result['rss_peak_mb']:.0f} MB (idle {result['rss_before_mb']:.0f} MB"
          + (f"; target < {target_rss / 1e6:.0f} MB)" if target_rss else ")")
          + ("  OK" if result["ok"] else "  MISSED"))
    return result


def bench_rs_list_100k_30_keywords(url: str, sampler: RssSampler, repeat: int = 3) -> dict:
    from jsocmirror.series import builtin_series

    keys = [k.name for k in builtin_series().get("hmi.M_45s").visible_keywords][:30]
    # 100,000 slots of 45 s ending well before the default clock (2024.07.01)
    return _run("rs_list 100k x 30 keywords", url, sampler, "hmi.M_45s[2024.01.01_TAI/4500000s]",
                ",".join(keys), 100_000, repeat, TARGET_100K_S)


def bench_rs_list_1m_trec_recnum(url: str, sampler: RssSampler, repeat: int = 1) -> dict:
    return _run("rs_list 1M x T_REC,*recnum*", url, sampler, "hmi.M_45s[2023.01.01_TAI/45000000s]",
                "T_REC,*recnum*", 1_000_000, repeat, TARGET_1M_S, TARGET_1M_RSS)


# -- file serving (exports/files) -------------------------------------------------------------------
TARGET_FILES_RATIO_4 = 0.7


def _fetch_all(urls: list[str], connections: int) -> tuple[int, float]:
    """GET every URL with ``connections`` client threads, one request per connection (HTTP/1.0)."""
    import http.client

    queue = list(urls)
    lock = threading.Lock()
    total = [0]
    errors: list[str] = []

    def worker() -> None:
        while True:
            with lock:
                if not queue:
                    return
                url = queue.pop()
            parts = urllib.parse.urlsplit(url)
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
            conn.request("GET", parts.path)
            response = conn.getresponse()
            body = response.read()
            conn.close()
            with lock:
                total[0] += len(body)
                if response.status != 200:
                    errors.append(f"{url}: HTTP {response.status}")

    threads = [threading.Thread(target=worker) for _ in range(connections)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    if errors:
        raise RuntimeError(errors[0])
    return total[0], seconds


def _image_side_for(target_bytes: int) -> int:
    """Side of a square generated HMI image whose as-is file is about ``target_bytes``."""
    from jsocmirror.emulator import files
    from jsocmirror.series import builtin_series

    sdef = builtin_series().get("hmi.M_45s")
    rec = files.FileRecord(sdef, 1, {})
    side = 512
    for _ in range(3):  # compression makes size a little non-linear in the area: iterate
        size = len(files.build_fits(rec, sdef.segments[0], shape=(side, side)))
        side = max(64, int(side * (target_bytes / size) ** 0.5))
    return side


@contextmanager
def _process(args: list[str], first_line: bool) -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen(args, stdout=subprocess.PIPE if first_line else subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        yield proc
    finally:
        _stop(proc)


def bench_file_serving(n_files: int = 48, rounds: int = 3, repeat: int = 3, file_mb: float = 1.0) -> dict:
    """Emulator file serving vs ``python -m http.server`` (HTTP/1.0) serving the same bytes from disk.

    Both servers run in their own subprocess; the same client (threads in this process, one
    request per connection) fetches ``n_files`` ~1 MB generated FITS files ``repeat`` times per
    measurement, with 1, 4 and 8 connections; median MB/s of ``rounds``. The emulator's files
    come from its LRU cache (a warm-up pass fills it), as they do in steady state.
    Target: at least 70% of http.server with 4 connections.
    """
    import socket
    import tempfile
    from pathlib import Path

    side = _image_side_for(int(file_mb * 1e6))
    emulator_cmd = [sys.executable, "-m", "jsocmirror", "-q", "emulator", "serve", "--port", "0",
                    "--mode", "lenient", "--image-size", f"{side}x{side}"]
    with tempfile.TemporaryDirectory() as tmp, _process(emulator_cmd, first_line=True) as emu_proc:
        url = emu_proc.stdout.readline().strip()
        if not url.startswith("http://"):
            raise RuntimeError(f"emulator did not start (said {url!r})")
        query = urllib.parse.urlencode({
            "op": "exp_request", "ds": f"hmi.M_45s[2024.06.01_00:00:00_TAI/{45 * n_files}s]",
            "notify": "bench@example.com", "method": "url_quick", "protocol": "as-is", "format": "json"})
        with urllib.request.urlopen(f"{url}cgi-bin/ajax/jsoc_fetch?{query}", timeout=60) as resp:
            reply = orjson.loads(resp.read())
        paths = [d["filename"] for d in reply["data"]]
        static = Path(tmp) / "static"
        sizes = []
        for path in paths:  # the warm-up pass fills the emulator's cache; the same bytes go to disk
            with urllib.request.urlopen(url + path.lstrip("/"), timeout=60) as resp:
                data = resp.read()
            dest = static / path.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
            sizes.append(len(data))
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        peer_cmd = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(static)]
        with _process(peer_cmd, first_line=False):
            peer = f"http://127.0.0.1:{port}/"
            for _ in range(100):
                try:
                    urllib.request.urlopen(peer + paths[0].lstrip("/"), timeout=5).read()
                    break
                except OSError:
                    time.sleep(0.05)
            ours_urls = [url + p.lstrip("/") for p in paths] * repeat
            peer_urls = [peer + p.lstrip("/") for p in paths] * repeat
            mean_mb = sum(sizes) / len(sizes) / 1e6
            result: dict = {"name": "file serving", "files": n_files, "file_mb": round(mean_mb, 3)}
            print(f"file serving: {n_files} files x {repeat} of {mean_mb:.2f} MB each per measurement, "
                  f"median of {rounds}; peer: python -m http.server (HTTP/1.0) on the same bytes from disk")
            print(f"  {'connections':>11} {'emulator MB/s':>14} {'http.server MB/s':>17} {'ratio':>6}")
            for conns in (1, 4, 8):
                ours, theirs = [], []
                for _ in range(rounds):  # alternate, so load from elsewhere hits both alike
                    nbytes, secs = _fetch_all(ours_urls, conns)
                    ours.append(nbytes / secs / 1e6)
                    nbytes, secs = _fetch_all(peer_urls, conns)
                    theirs.append(nbytes / secs / 1e6)
                mine, other = sorted(ours)[rounds // 2], sorted(theirs)[rounds // 2]
                result[f"emulator_mb_s_{conns}"] = round(mine, 1)
                result[f"http_server_mb_s_{conns}"] = round(other, 1)
                result[f"ratio_{conns}"] = round(mine / other, 2)
                print(f"  {conns:>11} {mine:>14.1f} {other:>17.1f} {mine / other:>6.2f}")
            result["ok"] = result["ratio_4"] >= TARGET_FILES_RATIO_4
            print(f"  target: >= {TARGET_FILES_RATIO_4:.0%} of http.server with 4 connections: "
                  f"{result['ratio_4']:.2f}" + ("  OK" if result["ok"] else "  MISSED"))
            return result


BENCHMARKS: list[Callable[..., dict]] = [bench_rs_list_100k_30_keywords, bench_rs_list_1m_trec_recnum,
                                           bench_file_serving]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of the 100k case (best is reported)")
    args = parser.parse_args(argv)
    results = []
    with emulator_process() as (url, sampler):
        print(f"emulator at {url} (pid {sampler.proc.pid})")
        results.append(bench_rs_list_100k_30_keywords(url, sampler, repeat=args.repeat))
        results.append(bench_rs_list_1m_trec_recnum(url, sampler, repeat=1))
    results.append(bench_file_serving())  # its own emulator process (image size for ~1 MB files)
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
