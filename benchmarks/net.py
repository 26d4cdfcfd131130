"""What the network policy costs per request (issue #16), against an emulator subprocess.

Every GET of the mirror goes through ``jsocmirror.net`` (redirect rule, connect/idle timeouts,
a watchdog deadline, the length check). Peer, same run, same emulator, same URLs, alternated:
``urllib.request.urlopen(url).read()``, what jsoc.py used before. Printed: milliseconds per
request for each and the overhead in microseconds (target: within the noise of a loopback
round trip, well under 10%), for a small JSON reply (``rs_summary``) and a 1000-record
``rs_list``.

Usage: ``python benchmarks/net.py [--requests 400] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import urllib.request
from urllib.parse import urlencode

from jsocmirror import net


def start_emulator() -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "jsocmirror", "emulator", "serve", "--mode", "lenient"],
                            stdout=subprocess.PIPE, text=True)
    url = proc.stdout.readline().strip()
    if not url.startswith("http"):
        proc.kill()
        raise SystemExit(f"emulator did not start: {url!r}")
    return proc, url


def per_request(fetch, urls: list[str]) -> float:
    started = time.perf_counter()
    for url in urls:
        fetch(url)
    return (time.perf_counter() - started) / len(urls)


def ours(url: str) -> bytes:
    return net.get_body(url, seconds=60)


def urllib_peer(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as reply:
        return reply.read()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    proc, base = start_emulator()
    try:
        cases = {
            "rs_summary (small JSON)": {"op": "rs_summary", "ds": "hmi.M_45s[2024.06.30_00:00:00_TAI/1d]"},
            "rs_list of 1000 records": {"op": "rs_list", "ds": "hmi.M_45s[2024.06.30_00:00:00_TAI/12.5h]",
                                        "key": "T_REC,CAMERA,QUALITY,DATAMEAN"},
        }
        for name, params in cases.items():
            url = f"{base}cgi-bin/ajax/jsoc_info?{urlencode(params)}"
            assert ours(url) and urllib_peer(url)  # warm both paths (and the emulator's caches)
            n = args.requests if "summary" in name else max(20, args.requests // 10)
            mine, peer = [], []
            for _ in range(args.repeats):
                mine.append(per_request(ours, [url] * n))
                peer.append(per_request(urllib_peer, [url] * n))
            m, p = statistics.median(mine), statistics.median(peer)
            print(f"{name}: net.get_body {m * 1e3:.3f} ms/request, urllib.urlopen {p * 1e3:.3f} ms/request; "
                  f"overhead {(m - p) * 1e6:+.0f} us ({m / p - 1:+.1%}), {n} requests x {args.repeats}")
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    main()
