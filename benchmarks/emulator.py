"""Emulator benchmark: rs_list throughput and the server's peak RSS.

Runs ``python -m jsocmirror emulator serve --port 0`` in a subprocess (its own process, so its
RSS is measured alone, sampled every 20 ms with psutil) and times over loopback HTTP:

* ``rs_list`` of 100k hmi.M_45s records x 30 keywords   (target: < 2 s)
* ``rs_list`` of 1M records with ``key=T_REC,*recnum*`` (target: < 10 s, server peak RSS < 1 GB)

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


BENCHMARKS: list[Callable[..., dict]] = [bench_rs_list_100k_30_keywords, bench_rs_list_1m_trec_recnum]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of the 100k case (best is reported)")
    args = parser.parse_args(argv)
    results = []
    with emulator_process() as (url, sampler):
        print(f"emulator at {url} (pid {sampler.proc.pid})")
        results.append(bench_rs_list_100k_30_keywords(url, sampler, repeat=args.repeat))
        results.append(bench_rs_list_1m_trec_recnum(url, sampler, repeat=1))
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
