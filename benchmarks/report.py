"""Coverage report benchmark: ``write_report`` on a mirror of N records against its peer, the
``status --by day`` computation (``mirror_status``) the report's calendar is built from.

Setup (untimed): the catalog of benchmarks/diff.py (hmi.M_45s, every 45 s from 2012-01-01, 99%
with a file, some no-image, offline, stale and empty), published as the readers' copy. Then, in
this process: ``mirror_status(by="day")`` through the readers' copy (the peer), and
``write_report`` (open, diff, bytes, runs, render, write), three times each; the median is printed
with the page's size and day count.

Run:  python benchmarks/report.py [--records 100000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from diff import SERIES, build


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000)
    args = parser.parse_args()

    from jsocmirror.api import Mirror
    from jsocmirror.catalog import Catalog
    from jsocmirror.config import config_from_dict
    from jsocmirror.diff import mirror_status
    from jsocmirror.publish import publish
    from jsocmirror.report import write_report

    work = tempfile.mkdtemp(prefix="jsocmirror-bench-report-")
    try:
        config = config_from_dict({"series": [{"series": SERIES, "segments": ["magnetogram"]}]}, work)
        start = time.perf_counter()
        build(str(config.catalog_path), args.records, 0.99)
        with Catalog(config.catalog_path) as catalog:
            publish(catalog, config)
        print(f"setup {time.perf_counter() - start:.1f} s (untimed)")
        peer, report = [], []
        for _ in range(3):
            start = time.perf_counter()
            with Mirror(config.read_root, config=config) as mirror:
                statuses, _ = mirror_status(mirror.catalog, config, by="day")
            peer.append(time.perf_counter() - start)
            start = time.perf_counter()
            result = write_report(config, os.path.join(work, "report.html"))
            report.append(time.perf_counter() - start)
        print(f"write_report: {_median(report)}: {result.days} days, {result.bytes / 1024:.0f} KiB page")
        print(f"peer: open + mirror_status(by='day'): {_median(peer)}; {len(statuses[0].coverage)} days")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _median(times: list[float]) -> str:
    return f"{sorted(times)[1]:.2f} s (runs: {', '.join(f'{t:.2f}' for t in times)})"


if __name__ == "__main__":
    main()
