"""``jsocmirror demo``: a small mirror of an emulated JSOC, two nights, end to end.

The library side only: it never imports the emulator. The CLI starts the embedded emulator with
its state under ``<demo dir>/.emulator`` (so later commands run inside the demo directory see
the same world) and passes its URL and a ``next_night`` callback in.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable

from jsocmirror import config as cfg
from jsocmirror.catalog import Catalog
from jsocmirror.errors import UsageError
from jsocmirror.update import UpdateOptions, UpdateSummary, update_mirror

MARKER = ".jsocmirror-demo"
DEMO_EMAIL = "demo@example.org"
#: The emulator's default clock is 2024.07.01_00:00:00_TAI; the windows end "now" (open end),
#: so the next night brings new records into them.
HMI_START = "2024.06.30_18:00:00_TAI"  # hmi.M_720s: 6 hours, 30 records
AIA_START = "2024-06-30T23:00:00Z"  # aia.lev1_euv_12s 171 A sampled every 10 min: 6 records

SQL_EXAMPLE = """SELECT T_REC_str AS t_rec, QUALITY, round(DATAMEAN, 2) AS datamean, f.path
FROM hmi_m_720s AS k JOIN local_files AS f ON f.series = 'hmi.M_720s' AND f.record_key = k._key
ORDER BY T_REC DESC LIMIT 5"""

NextNight = Callable[[dict[str, list[str]]], dict[str, Any]]


def prepare_demo_dir(path: Path) -> None:
    """Make ``path`` ready: absent, or an earlier demo (which is replaced). Refuses anything else."""
    if path.exists():
        if not (path / MARKER).exists():
            raise UsageError(f"{path} exists and is not a jsocmirror demo; choose another --dir or remove it")
        shutil.rmtree(path)
    path.mkdir(parents=True)
    (path / MARKER).write_text("created by 'jsocmirror demo'; safe to delete\n", encoding="utf-8")


def demo_config(path: Path) -> cfg.MirrorConfig:
    """The demo mirror's config: the embedded emulator and two small series."""
    config = cfg.MirrorConfig(
        mirror_dir=path, server="embedded", email=DEMO_EMAIL,
        series=[
            cfg.SeriesConfig(series="hmi.M_720s", segments=["magnetogram"], start=HMI_START),
            cfg.SeriesConfig(series="aia.lev1_euv_12s", segments=["image"], start=AIA_START, cadence="10m",
                             keys={"WAVELNTH": [171]}),
        ],
        # the emulator allows 4 connections and quick polls; the real JSOC wants 1 and patience
        transfer=cfg.TransferConfig(max_connections=4, method="url_quick", protocol="as-is", poll_interval=0.2),
    )
    cfg.save_config(config)
    with Catalog(config.catalog_path):
        pass
    Path(config.data_root).mkdir(parents=True, exist_ok=True)
    return cfg.load_config(path)


def run_demo(path: Path, url: str, *, next_night: NextNight, echo: Callable[[str], None] = print,
             progress: Any = None) -> tuple[UpdateSummary, UpdateSummary]:
    """Create the mirror, run the nightly update, show status and SQL, then a second night."""
    config = demo_config(path)
    echo(f"jsocmirror demo: a mirror in {path}, fed by an emulated JSOC at {url}")
    echo("  series: hmi.M_720s magnetograms since 2024-06-30 18:00 TAI; aia.lev1_euv_12s 171 A images, "
         "one per 10 min, since 23:00 UTC")
    echo("")
    echo("night 1: jsocmirror update")
    first = update_mirror(config, url, UpdateOptions(), progress=progress)
    echo(_indent(first.render()))
    echo("")
    _show_status(config, echo)
    echo("")
    echo("next night: upstream adds a day of records and reprocesses some old ones")
    sample = _reprocess_sample(config)
    report = next_night(sample)
    for series in ("hmi.M_720s", "aia.lev1_euv_12s"):
        entry = report.get(series, {})
        echo(f"  {series}: {entry.get('new_count', len(entry.get('new', [])))} new, "
             f"{len(entry.get('reprocessed', []))} reprocessed, {len(entry.get('deleted', []))} deleted upstream "
             f"(mostly outside the demo's windows)")
    echo("")
    echo("night 2: jsocmirror update")
    second = update_mirror(config, url, UpdateOptions(), progress=progress)
    echo(_indent(second.render()))
    echo(f"  -> fetched only what changed: {second.files_downloaded} files "
         f"({second.gaps.get('missing', 0)} new, {second.gaps.get('stale', 0)} reprocessed); "
         f"night 1 fetched {first.files_downloaded}")
    echo("")
    echo(f"try next:  cd {path.name} && jsocmirror status && jsocmirror update   (an update now fetches nothing)")
    echo("           jsocmirror sql \"SELECT count(*) FROM hmi_m_720s\"")
    return first, second


def _reprocess_sample(config: cfg.MirrorConfig) -> dict[str, list[str]]:
    """Two records of each demo series the mirror holds, for the emulator to reprocess overnight."""
    with Catalog(config.catalog_path) as catalog:
        rows = catalog.q("demo_sample").fetchall()
    out: dict[str, list[str]] = {}
    for series, key in rows:
        out.setdefault(series, []).append(key)
    return out


def _show_status(config: cfg.MirrorConfig, echo: Callable[[str], None]) -> None:
    with Catalog(config.catalog_path) as catalog:
        echo("status (files in the mirror):")
        for series, files, size in catalog.q("demo_status").fetchall():
            echo(f"  {series:<20} {files:>5} files  {int(size or 0) / 1e6:8.2f} MB")
        echo("")
        echo("SQL over the catalog and the files (jsocmirror sql \"...\"):")
        echo(_indent(SQL_EXAMPLE, "    "))
        cursor = catalog.execute(SQL_EXAMPLE)
        names = [d[0] for d in cursor.description]
        rows = cursor.fetchall()
        widths = [max(len(str(v)) for v in [n] + [r[i] for r in rows]) for i, n in enumerate(names)]
        echo("  " + "  ".join(n.ljust(w) for n, w in zip(names, widths)))
        for row in rows:
            echo("  " + "  ".join(str(v).ljust(w) for v, w in zip(row, widths)))


def _indent(text: str, prefix: str = "  ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())

