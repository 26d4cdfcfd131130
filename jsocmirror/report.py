"""The coverage report: one self-contained HTML file showing what the mirror holds.

``write_report(config, path)`` reads the readers' copy (``jsocmirror.api.Mirror``: it never
waits for a running update), gathers the figures (``gather_report``: the diff's per-day state
counts, bytes on disk, quotas, the ``runs`` table), renders them (``render_report``: data in,
string out, no I/O) and writes the page whole under a temporary name before renaming it.

The page has no scripts and fetches nothing: inline CSS and SVG, the system's fonts. Every
text that comes from the catalog or the server (series names, reasons, run summaries) goes
through ``html.escape``.

A day's cell takes the colour of its most significant state, in ``DAY_STATES`` order:
corrupt, missing and stale are failures the nightly job refetches; offline (on tape at JSOC)
and no_image (JSOC has no file) are JSOC's, not the mirror's, and have neutral colours, so a
day at 75% because a quarter of it is on tape never looks like a failure.
"""

from __future__ import annotations

import html
import json
import logging
import os
import shlex
import tempfile
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from jsocmirror import config as cfg
from jsocmirror.errors import CatalogError, JsocMirrorError, UsageError

log = logging.getLogger("jsocmirror.report")

DEFAULT_NAME = "report.html"

#: A day's colour is that of the first state in this order it has any (record, segment) in.
DAY_STATES = ("corrupt", "missing", "stale", "offline", "no_image", "present")

#: The colours of the day cells (and of the legend; nothing else on the page uses them).
COLOURS = {
    "corrupt": "#8e24aa",   # purple: a file is there but damaged
    "missing": "#d7301f",   # red: JSOC has it, the mirror does not
    "stale": "#f59e0b",     # amber: JSOC reprocessed it since it was fetched
    "offline": "#6f9fd8",   # neutral blue: on tape at JSOC (fetch --include-offline)
    "no_image": "#b4b4b4",  # neutral grey: JSOC has no image (QUALITY < 0)
    "present": "#2e9e4f",   # green: every file JSOC has is here
    "none": "#eceef1",      # no wanted record that day
}

LABELS = {
    "corrupt": "corrupt", "missing": "missing", "stale": "stale", "offline": "offline (on tape)",
    "no_image": "no image at JSOC", "present": "present", "none": "no records",
}

MEANINGS = {
    "corrupt": "a file is there but empty, truncated or failing its checksum; update refetches it",
    "missing": "JSOC has the file, the mirror does not; update fetches it",
    "stale": "JSOC reprocessed the record after the file was fetched; update refetches it",
    "offline": "the data are on tape at JSOC; fetched only with --include-offline",
    "no_image": "JSOC has no image for the record (QUALITY < 0): nothing to fetch",
    "present": "every file JSOC has online for the day is here and sound",
    "none": "the window has no record on this day",
}

FETCHABLE = ("missing", "stale", "corrupt")
CELL, PITCH = 11, 13  # day cell side and spacing, px
WORST_GAPS = 20  # days with files to fetch
TAPE_DAYS = 5  # days with only records on tape
LAST_RUNS = 12


# -- the data the page shows ----------------------------------------------------------------------
@dataclass
class SeriesReport:
    series: str
    segments: list[str]
    window: str
    counts: dict[str, int]  # state -> (record, segment)s
    days: dict[str, dict[str, int]]  # YYYY-MM-DD -> state -> (record, segment)s
    files: int = 0
    bytes: int = 0
    records: int | None = None  # wanted records (the selection, gone ones excluded)
    quota_bytes: int | None = None
    synced_to: datetime | None = None
    synced_at: datetime | None = None
    note: str | None = None  # why there is no calendar (never synced, keywords only...)
    mirror: str = "."  # the mirror directory, as the fill commands name it


@dataclass
class RunRow:
    run_id: str
    command: str
    started_at: datetime | None
    finished_at: datetime | None
    status: str
    figures: list[str]


@dataclass
class GapDay:
    series: str
    day: str
    counts: dict[str, int]
    command: str


@dataclass
class ReportData:
    mirror: str
    generated_at: datetime
    series: list[SeriesReport] = field(default_factory=list)
    runs: list[RunRow] = field(default_factory=list)
    runs_total: int = 0
    runs_not_ok: int = 0
    worst: list[GapDay] = field(default_factory=list)
    generation: int | None = None
    published_at: datetime | None = None
    last_scan: datetime | None = None
    unknown_files: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass
class ReportResult:
    path: str
    bytes: int
    series: int
    days: int
    seconds: float = 0.0


# -- writing ----------------------------------------------------------------------------------------
def default_path(config: cfg.MirrorConfig) -> Path:
    return Path(config.mirror_dir) / DEFAULT_NAME


def write_report(config: cfg.MirrorConfig, path: str | os.PathLike | None = None) -> ReportResult:
    """Gather, render and write the report to ``path`` (default ``<mirror>/report.html``)."""
    started = time.monotonic()
    target = Path(path) if path is not None else default_path(config)
    check_report_path(target)
    data = read_report_data(config)
    page = render_report(data).encode("utf-8")
    _write_whole(target, page)
    days = sum(len(s.days) for s in data.series)
    log.info("report: %s, %d bytes, %d series, %d days", target, len(page), len(data.series), days)
    return ReportResult(str(target), len(page), len(data.series), days, time.monotonic() - started)


def check_report_path(target: Path) -> None:
    """Refuse a path the page cannot be written to before any work is done."""
    parent = target.parent
    if target.is_dir():
        raise UsageError(f"report path {target} is a directory; give a file name (e.g. {target / DEFAULT_NAME})")
    if not parent.exists():
        raise UsageError(f"cannot write the report to {target}: directory {parent} does not exist")
    if not parent.is_dir():
        raise UsageError(f"cannot write the report to {target}: {parent} is not a directory")


def _write_whole(target: Path, page: bytes) -> None:
    """Write to a temporary file next to ``target``, then rename: a reader never sees half a page."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    except OSError as exc:
        raise JsocMirrorError(f"cannot write the report to {target}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(page)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # a page for people to look at, not a secret (mkstemp makes 0600)
        os.replace(tmp, target)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise JsocMirrorError(f"cannot write the report to {target}: {exc.strerror or exc}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# -- gathering ----------------------------------------------------------------------------------------
def read_report_data(config: cfg.MirrorConfig) -> ReportData:
    """The report's data from the readers' copy; a mirror never published gives a page that says so."""
    from jsocmirror.api import Mirror

    try:
        mirror = Mirror(config.read_root, config=config)
    except CatalogError as exc:
        if not str(exc).startswith("no readers' catalog"):
            raise
        data = ReportData(mirror=str(config.mirror_dir), generated_at=_now())
        data.series = [_unsynced(entry, "not synced yet") for entry in config.series]
        data.notes.append(f"{exc}.")
        return data
    with mirror:
        return gather_report(mirror, config)


def gather_report(mirror, config: cfg.MirrorConfig) -> ReportData:
    """Everything the page shows, read through an open ``Mirror``."""
    from jsocmirror.diff import SeriesStatus, mirror_status, series_definitions

    catalog = mirror.catalog
    data = ReportData(mirror=str(config.mirror_dir), generated_at=_now(), generation=mirror.generation,
                      published_at=mirror.published_at)
    registry = series_definitions(catalog)
    known = [e for e in config.series if registry.get(e.series) is not None]
    # a series whose definition only a sync brings (not a built-in) would stop the diff: leave it out
    names = None if len(known) == len(config.series) else [e.series for e in known]
    statuses, result = mirror_status(catalog, config, by="day", series=names, registry=registry)
    by_name = {s.series.lower(): s for s in statuses}
    syncs = {row[0].lower(): row for row in catalog.q("report_sync_states").fetchall()}
    for entry in config.series:
        sd = registry.get(entry.series)
        name = sd.name if sd is not None else entry.series
        if sd is None or name in result.skipped:
            note = "keywords only (no segments configured)" if not entry.segments else "not synced yet"
            data.series.append(_unsynced(entry, note))
            continue
        status = by_name.get(name.lower()) or SeriesStatus(name, {}, 0, 0, [])  # synced, nothing wanted yet
        data.series.append(_series_report(entry, name, status, result.by_period.get(name, {}),
                                          syncs.get(name.lower()), data.mirror))
    data.worst = worst_gaps(data.series, str(config.mirror_dir))
    data.runs = [_run_row(*row) for row in catalog.q("report_runs", limit=LAST_RUNS).fetchall()]
    data.runs_total, data.runs_not_ok = catalog.q("report_run_totals").fetchall()[0]
    last = catalog.q("status_last_scan").fetchall()
    data.last_scan = last[0][1] if last else None
    data.unknown_files = result.unknown_files
    return data


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def quota_bytes(entry: cfg.SeriesConfig) -> int | None:
    """The series' byte quota (``max_bytes``, parsed by config.py), or None."""
    return entry.max_bytes_value


def _window(entry: cfg.SeriesConfig) -> str:
    text = f"{entry.start or 'first record'} .. {entry.end or 'now'}"
    if entry.cadence:
        text += f" @{entry.cadence}"
    if entry.keys:
        text += " " + " ".join(f"{k}={','.join(map(str, v))}" for k, v in entry.keys.items())
    if entry.filter:
        text += f" [? {entry.filter} ?]"
    return text


def _unsynced(entry: cfg.SeriesConfig, note: str) -> SeriesReport:
    return SeriesReport(entry.series, list(entry.segments), _window(entry), counts={}, days={},
                        quota_bytes=quota_bytes(entry), note=note)


def _series_report(entry, name: str, status, periods: dict[str, dict[str, int]], sync_row,
                   mirror: str) -> SeriesReport:
    days = {day: {s: n for s, n in states.items() if s != "orphan" and n}
            for day, states in periods.items() if day}
    counts = dict(status.counts)
    wanted = sum(n for s, n in counts.items() if s != "orphan")
    report = SeriesReport(name, list(entry.segments), _window(entry), counts=counts,
                          days={d: c for d, c in sorted(days.items()) if c}, files=status.files,
                          bytes=status.bytes, records=wanted // max(1, len(entry.segments)),
                          quota_bytes=quota_bytes(entry), mirror=mirror)
    if sync_row is not None:
        _, report.synced_to, report.synced_at = sync_row
    return report


def fetch_command(mirror: str, series: str, offline: bool = False) -> str:
    """The command that fills a series' gaps (its records on tape too, with ``offline``)."""
    return " ".join(["jsocmirror", "fetch", "-m", shlex.quote(mirror)] + (["--include-offline"] if offline else [])
                    + [shlex.quote(series)])


def worst_gaps(series: list[SeriesReport], mirror: str, limit: int = WORST_GAPS,
               tape_limit: int = TAPE_DAYS) -> list[GapDay]:
    """The days with most fetchable gaps (missing, stale, corrupt), then a few of those with most
    on tape (a whole series can be on tape: those days would crowd out the real gaps)."""
    fetch, tape = [], []
    for s in series:
        for day, counts in s.days.items():
            fetchable = sum(counts.get(k, 0) for k in FETCHABLE)
            offline = counts.get("offline", 0)
            if fetchable:
                fetch.append((-fetchable, -offline, s.series, day, counts))
            elif offline:
                tape.append((-offline, 0, s.series, day, counts))
    fetch.sort(key=lambda r: r[:4])
    tape.sort(key=lambda r: r[:4])
    return ([GapDay(name, day, counts, fetch_command(mirror, name)) for *_, name, day, counts in fetch[:limit]]
            + [GapDay(name, day, counts, fetch_command(mirror, name, offline=True))
               for *_, name, day, counts in tape[:tape_limit]])


def _run_row(run_id, command, started_at, finished_at, status, summary) -> RunRow:
    try:
        parsed = json.loads(summary) if isinstance(summary, str) else (summary or {})
    except ValueError:
        parsed = {}
    return RunRow(str(run_id), str(command), started_at, finished_at, str(status),
                  run_figures(parsed if isinstance(parsed, dict) else {}))


def run_figures(summary: dict[str, Any]) -> list[str]:
    """The key figures of a run's JSON summary (update/fetch or sync), as short phrases."""
    out = []
    if isinstance(summary.get("series"), list):  # a sync run
        totals: dict[str, int] = {}
        for item in summary["series"]:
            if isinstance(item, dict):
                for k in ("new", "reprocessed", "gone"):
                    totals[k] = totals.get(k, 0) + _int(item.get(k))
        out.append("sync: " + ", ".join(f"{k} {v}" for k, v in totals.items()))
    sync = summary.get("sync")
    if isinstance(sync, dict) and sync:
        out.append("sync: " + ", ".join(f"{k} {_int(v)}" for k, v in sync.items()))
    gaps = summary.get("gaps")
    if isinstance(gaps, dict):
        out.append("gaps: " + (", ".join(f"{k} {_int(v)}" for k, v in sorted(gaps.items())) or "none"))
    if "files_downloaded" in summary:
        out.append(f"downloaded {_int(summary['files_downloaded'])} files, "
                   f"{human_bytes(summary.get('bytes_downloaded'))}")
    failures = summary.get("failures")
    if isinstance(failures, list) and failures:
        first = failures[0].get("reason") if isinstance(failures[0], dict) else None
        out.append(f"{len(failures)} failed" + (f" (first: {first})" if first else ""))
    if "requests" in summary or "jsoc_requests" in summary:
        out.append(f"{_int(summary.get('jsoc_requests', summary.get('requests')))} JSOC requests")
    return out


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def human_bytes(n: Any) -> str:
    value = float(_int(n))
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


# -- rendering (pure: data in, HTML out) ---------------------------------------------------------------
def e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def day_state(counts: dict[str, int]) -> str:
    """The state a day's cell shows: its most significant one (``DAY_STATES`` order)."""
    return next((s for s in DAY_STATES if counts.get(s)), "none")


def day_title(day: str, counts: dict[str, int]) -> str:
    """The cell's tooltip: every count, and how much of what JSOC holds online is here."""
    parts = [f"{counts[s]} {LABELS[s]}" for s in DAY_STATES if counts.get(s)]
    online = sum(n for s, n in counts.items() if s not in ("offline", "no_image"))
    share = f"; {counts.get('present', 0)}/{online} of the online files here" if online else ""
    return f"{day}: " + (", ".join(parts) or "no records") + share


def render_report(data: ReportData) -> str:
    body = [_header(data), _legend()]
    if not data.series:
        body.append('<p class="note">No series configured: add one with <code>jsocmirror series add</code>.</p>')
    for s in data.series:
        body.append(_series_section(s))
    body.append(_worst_section(data.worst))
    body.append(_runs_section(data))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>jsocmirror coverage: {e(data.mirror)}</title><style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")


_CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#1f2328;
background:#fff;margin:24px;max-width:1200px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 6px;border-bottom:1px solid #d0d7de}
h3{font-size:15px;margin:16px 0 4px}
.meta,.note{color:#57606a}.note{font-style:italic}
code{font:12px ui-monospace,"DejaVu Sans Mono",monospace;background:#f6f8fa;padding:1px 4px;border-radius:3px}
table{border-collapse:collapse;margin:6px 0}th,td{padding:3px 10px;text-align:left;border-bottom:1px solid #eaeef2;
vertical-align:top}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.legend{display:flex;flex-wrap:wrap;gap:6px 18px;margin:10px 0}.legend span{white-space:nowrap}
.legend svg{vertical-align:-1px;margin-right:4px}
.cal{overflow-x:auto}.cal svg{display:block;margin:2px 0 8px}.cal text{font-size:10px;fill:#57606a}
.quota{display:inline-block;width:300px;height:12px;background:#e6e9ee;border-radius:3px;vertical-align:middle;
overflow:hidden}.quota i{display:block;height:100%;background:#3d5a80}.quota.over i{background:#9a3412}
.status-ok{color:#1a7f37}.status-failed,.status-died,.status-interrupted,.status-deadline{color:#b42318;font-weight:600}
.status-running{color:#9a6700}
"""


def _header(data: ReportData) -> str:
    meta = [f"generated {_ts(data.generated_at)} UTC"]
    if data.generation is not None:
        meta.append(f"catalog generation {data.generation} published {_ts(data.published_at)} UTC")
    meta.append(f"last scan {_ts(data.last_scan)} UTC" if data.last_scan else "never scanned")
    if data.unknown_files:
        meta.append(f"{data.unknown_files} files outside the layout (jsocmirror diff --state unknown)")
    notes = "".join(f'<p class="note">{e(n)}</p>' for n in data.notes)
    return (f"<h1>jsocmirror coverage</h1><p class=\"meta\">mirror <code>{e(data.mirror)}</code><br>"
            + e("; ".join(meta)) + f"</p>{notes}")


def _swatch(state: str) -> str:
    return (f'<svg width="{CELL}" height="{CELL}" aria-hidden="true"><rect width="{CELL}" height="{CELL}" '
            f'fill="{COLOURS[state]}"/></svg>')


def _legend() -> str:
    items = [f'<span title="{e(MEANINGS[s])}" data-legend="{s}">{_swatch(s)}{e(LABELS[s])}</span>'
             for s in DAY_STATES + ("none",)]
    return ('<div class="legend">' + "".join(items) + "</div>"
            '<p class="meta">A day shows its most significant state, in the legend\'s order; its tooltip has the '
            "counts. Blue and grey days are complete for what JSOC can give now.</p>")


def _series_section(s: SeriesReport) -> str:
    out = [f'<section class="series" data-series="{e(s.series)}"><h2>{e(s.series)}</h2>',
           f'<p class="meta">segments {e(", ".join(s.segments) or "none")}; window {e(s.window)}'
           + (f"; synced to {e(_ts(s.synced_to))} UTC (last sync {e(_ts(s.synced_at))} UTC)" if s.synced_to else "")
           + "</p>"]
    if s.note:
        out.append(f'<p class="note">{e(s.note)}</p></section>')
        return "\n".join(out)
    out.append(_calendar(s))
    out.append(_figures(s))
    out.append("</section>")
    return "\n".join(out)


def _figures(s: SeriesReport) -> str:
    rows = [("records wanted", f"{s.records:,}" if s.records is not None else "-"),
            ("files on disk", f"{s.files:,}"), ("bytes on disk", human_bytes(s.bytes))]
    cells = "".join(f"<tr><th>{e(k)}</th><td class=\"n\">{e(v)}</td></tr>" for k, v in rows)
    states = "".join(f'<th class="n">{e(LABELS.get(st, st))}</th>' for st in DAY_STATES + ("orphan",))
    values = "".join(f'<td class="n" data-count="{st}">{s.counts.get(st, 0):,}</td>' for st in DAY_STATES + ("orphan",))
    quota = ""
    if s.quota_bytes:
        used = s.bytes / s.quota_bytes
        quota = (f'<p>quota <span class="quota{" over" if used >= 0.9 else ""}" title="{e(f"{used:.1%}")}">'
                 f'<i style="width:{min(used, 1.0) * 100:.1f}%"></i></span> '
                 f"{e(human_bytes(s.bytes))} of {e(human_bytes(s.quota_bytes))} ({used:.1%})</p>")
    return (f"<table>{cells}</table>{quota}"
            f"<table><tr><th>(record, segment)s</th>{states}</tr><tr><td></td>{values}</tr></table>"
            + _fill_commands(s))


def _fill_commands(s: SeriesReport) -> str:
    fetchable = sum(s.counts.get(k, 0) for k in FETCHABLE)
    lines = []
    if fetchable:
        lines.append(f"{fetchable:,} missing, stale or corrupt: <code>{e(fetch_command(s.mirror, s.series))}</code>")
    if s.counts.get("offline"):
        lines.append(f"{s.counts['offline']:,} on tape at JSOC: "
                     f"<code>{e(fetch_command(s.mirror, s.series, offline=True))}</code>")
    return f'<p class="fill">{"<br>".join(lines)}</p>' if lines else ""


def _calendar(s: SeriesReport) -> str:
    """One SVG per calendar year the series spans: weeks as columns, Monday to Sunday as rows."""
    if not s.days:
        return '<p class="note">No wanted records in the window yet.</p>'
    days = sorted(s.days)
    first, last = date.fromisoformat(days[0]), date.fromisoformat(days[-1])
    blocks = []
    for year in range(first.year, last.year + 1):
        lo, hi = max(first, date(year, 1, 1)), min(last, date(year, 12, 31))
        blocks.append(_year_svg(s, year, lo, hi))
    return '<div class="cal">' + "".join(blocks) + "</div>"


def _year_svg(s: SeriesReport, year: int, lo: date, hi: date) -> str:
    left, top = 30, 14
    week0 = lo - timedelta(days=lo.weekday())
    weeks = (hi - week0).days // 7 + 1
    width, height = left + weeks * PITCH + 4, top + 7 * PITCH + 2
    parts = [f'<svg width="{width}" height="{height}" role="img" aria-label="{e(s.series)} {year}">',
             f'<text x="0" y="10" font-weight="600">{year}</text>']
    for row, name in ((0, "Mon"), (2, "Wed"), (4, "Fri")):
        parts.append(f'<text x="0" y="{top + row * PITCH + 9}">{name}</text>')
    month, label_col = None, -3
    d = lo
    while d <= hi:
        col, row = (d - week0).days // 7, d.weekday()
        x, y = left + col * PITCH, top + row * PITCH
        if d.month != month:
            month = d.month
            if col >= label_col + 3:  # a month begun late in a short span would print over the last
                parts.append(f'<text x="{x}" y="10">{d:%b}</text>')
                label_col = col
        key = d.isoformat()
        counts = s.days.get(key, {})
        state = day_state(counts)
        parts.append(f'<rect class="day" x="{x}" y="{y}" width="{CELL}" height="{CELL}" fill="{COLOURS[state]}" '
                     f'data-day="{key}" data-state="{state}"><title>{e(day_title(key, counts))}</title></rect>')
        d += timedelta(days=1)
    parts.append("</svg>")
    return "".join(parts)


def _worst_section(worst: list[GapDay]) -> str:
    out = ["<h2>Worst gaps</h2>"]
    if not worst:
        out.append('<p class="note">No gaps: every file JSOC has is in the mirror.</p>')
        return "\n".join(out)
    out.append('<p class="meta">The days with most files to fetch (then most on tape), and the command that fetches '
               "every such gap of the series.</p><table><tr><th>series</th><th>day</th>"
               + "".join(f'<th class="n">{e(LABELS[s])}</th>' for s in FETCHABLE + ("offline",))
               + "<th>command</th></tr>")
    for g in worst:
        out.append(f'<tr class="gap"><td>{e(g.series)}</td><td>{e(g.day)}</td>'
                   + "".join(f'<td class="n">{g.counts.get(s, 0):,}</td>' for s in FETCHABLE + ("offline",))
                   + f"<td><code>{e(g.command)}</code></td></tr>")
    out.append("</table>")
    return "\n".join(out)


def _runs_section(data: ReportData) -> str:
    out = ["<h2>Last runs</h2>"]
    if not data.runs:
        out.append('<p class="note">No runs recorded yet.</p>')
        return "\n".join(out)
    out.append(f'<p class="meta">{data.runs_total} runs recorded, {data.runs_not_ok} not ok; the newest '
               f"{len(data.runs)}:</p><table><tr><th>command</th><th>started (UTC)</th><th>finished (UTC)</th>"
               '<th class="n">seconds</th><th>status</th><th>figures</th></tr>')
    for r in data.runs:
        seconds = (r.finished_at - r.started_at).total_seconds() if r.started_at and r.finished_at else None
        out.append(f'<tr class="run"><td>{e(r.command)}</td><td>{e(_ts(r.started_at))}</td>'
                   f"<td>{e(_ts(r.finished_at) or '-')}</td>"
                   f'<td class="n">{"" if seconds is None else f"{seconds:.1f}"}</td>'
                   f'<td class="status-{e(r.status)}">{e(r.status)}</td><td>{e("; ".join(r.figures))}</td></tr>')
    out.append("</table>")
    return "\n".join(out)


def _ts(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)
