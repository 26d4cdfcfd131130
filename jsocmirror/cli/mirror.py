"""Commands over the files of the mirror: ``scan``, ``diff``, ``status``, ``export-catalog``."""

from __future__ import annotations

import csv
import json
import os
import sys

import click

from jsocmirror import config as cfg
from jsocmirror.catalog import Catalog
from jsocmirror.cli import (
    cli, echo_json, echo_report, format_option, json_option, mirror_option, output_format, run_log, show_progress,
    wait_option,
)
from jsocmirror.diff import (
    GAP_STATES, STATES, _check_states, export_catalog, layout_for_config, mirror_status,
    refresh_file_views, series_definitions,
)
from jsocmirror.lock import mirror_lock
from jsocmirror.publish import publishing
from jsocmirror.report import human_bytes
from jsocmirror.scan import scan_tree

#: Lines ``diff`` prints by default: a person reads the first screens; a program asks for csv/json.
DIFF_TABLE_LIMIT = 100


def _read(mirror_dir: str):
    """The config and the readers' copy (``jsocmirror.open``): never blocks, never blocked."""
    from jsocmirror.api import Mirror

    config = cfg.load_config(mirror_dir)
    return config, Mirror(config.read_root, config=config)


def skip_paths(config) -> list[str]:
    """Files of the mirror itself that may live under a local data root (the catalog)."""
    root = os.path.abspath(config.data_root) if "://" not in config.data_root else None
    out = []
    if root:
        for path in (str(config.catalog_path), str(config.catalog_path) + ".wal", str(config.config_path)):
            rel = os.path.relpath(os.path.abspath(path), root)
            if not rel.startswith(".."):
                out.append(rel.replace(os.sep, "/"))
    return out


@cli.command()
@mirror_option
@click.option("--verify", is_flag=True, help="Also read the headers of new or changed files (CHECKSUM/DATASUM, RECNUM, prime keys).")
@click.option("--names-only", is_flag=True, help="Record names only (no size/mtime): fastest, but empty files go unnoticed.")
@click.option("--full", is_flag=True, help="List every directory, even those whose mtime says they are unchanged.")
@click.option("--problems", default=20, show_default=True, help="How many problem files to list.")
@json_option
@wait_option
@click.pass_context
def scan(ctx, mirror_dir: str, verify: bool, names_only: bool, full: bool, problems: int, as_json: bool,
         wait: float) -> None:
    """Inventory the files under the data root (never changes anything there)."""
    config = cfg.load_config(mirror_dir)
    with run_log(ctx, config.mirror_dir, "scan"), mirror_lock(config.mirror_dir, "scan", wait=wait), Catalog(config.catalog_path) as catalog, publishing(catalog, config):
        registry = series_definitions(catalog)
        layout = layout_for_config(config, registry)
        bar = None
        if show_progress():
            from tqdm import tqdm

            bar = tqdm(desc="scan", unit=" files", leave=False)

        def progress(n: int) -> None:
            if bar is not None:
                bar.n = n
                bar.refresh()

        try:
            result = scan_tree(catalog, config.data_root, layout, stat=not names_only, verify=verify, full=full,
                               skip=skip_paths(config), progress=progress,
                               storage_options=config.storage_options())
        finally:
            if bar is not None:
                bar.close()
        refresh_file_views(catalog, [e.series for e in config.series])
    if as_json:
        out = {"code": 0, **result.as_dict()}
        out["problems"] = [{"path": p, "state": st, "reason": why} for p, st, why in result.problems[:problems]]
        echo_json(out)
        return
    lines = [f"{result.files} files, {human_bytes(result.bytes)} under {result.root} "
             f"({result.dirs_listed} directories listed, {result.dirs_unchanged} unchanged, {result.elapsed:.2f} s)"]
    lines += [f"  {state:<12} {n}" for state, n in sorted(result.by_state.items())]
    if verify:
        lines.append(f"verified {result.verified} files: "
                     + ", ".join(f"{k} {v}" for k, v in sorted(result.by_verify_state.items())))
    shown = [p for p in result.problems][:problems]
    lines += [f"  {state}: {path} ({why})" for path, state, why in shown]
    if len(result.problems) > len(shown):
        lines.append("  ... and more: see 'jsocmirror diff --state unknown'")
    echo_report("\n".join(lines))


@cli.command()
@mirror_option
@format_option(("table", "csv", "json"))
@click.option("--state", "states", multiple=True,
              help=f"Only these states (repeatable): {', '.join(GAP_STATES)}, present counts only, unknown = files outside the layout.")
@click.option("--series", "series", multiple=True, help="Only these configured series (repeatable).")
@click.option("--limit", type=click.IntRange(min=0), default=None,
              help=f"List at most N gaps (0: all). Default: {DIFF_TABLE_LIMIT} for the table, all for csv and json.")
def diff(mirror_dir: str, fmt: str, as_json: bool, states: tuple[str, ...], series: tuple[str, ...],
         limit: int | None) -> None:
    """List what the mirror lacks: missing, stale, corrupt, no-image, offline and orphaned files."""
    fmt = output_format(fmt, as_json)
    if limit is None:
        limit = DIFF_TABLE_LIMIT if fmt == "table" else 0
    chosen = _check_states(states) if states else None
    config, mirror = _read(mirror_dir)
    with mirror:
        result = mirror.diff(list(series) or None)
        gap_states = [s for s in (chosen or GAP_STATES) if s in GAP_STATES]
        rows = [
            {"series": g.series, "record_key": g.record_key, "segment": g.segment, "state": g.state,
             "recnum": g.recnum, "file_recnum": g.file_recnum, "path": g.path, "reason": g.reason}
            for g in result.gaps(gap_states)
        ] if gap_states else []
        if chosen is None or "unknown" in chosen:
            rows += [{"series": None, "record_key": None, "segment": None, "state": "unknown", "recnum": None,
                      "file_recnum": None, "path": path, "reason": f"{state}: {problem}"}
                     for path, state, problem, _ in result.unknown()]
    listed = len(rows)
    if limit:
        rows = rows[:limit]
    if fmt == "json":
        click.echo(json.dumps({"code": 0, "counts": result.counts, "unknown_files": result.unknown_files,
                               "listed": len(rows), "not_listed": listed - len(rows), "gaps": rows}, indent=1))
        return
    if fmt == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=["series", "record_key", "segment", "state", "recnum",
                                                        "file_recnum", "path", "reason"])
        writer.writeheader()
        writer.writerows(rows)
        return
    for row in rows:
        where = f"{row['series']}{row['record_key']}{{{row['segment']}}}" if row["series"] else row["path"]
        click.echo(f"{row['state']:<9} {where}" + (f"  ({row['reason']})" if row["reason"] else ""))
    if listed > len(rows):
        click.echo(f"... and {listed - len(rows)} more (--limit 0 lists all; --format csv for a file)")
    _echo_counts(result.counts, result.unknown_files)


def _echo_counts(counts: dict[str, dict[str, int]], unknown: int) -> None:
    header = f"{'series':<24}" + "".join(f"{s:>10}" for s in STATES)
    click.echo(header)
    for name, states in sorted(counts.items()):
        click.echo(f"{name:<24}" + "".join(f"{states.get(s, 0):>10}" for s in STATES))
    if unknown:
        click.echo(f"{unknown} files outside the layout ('jsocmirror diff --state unknown' lists them)")


@cli.command()
@mirror_option
@click.option("--by", type=click.Choice(["day", "month"]), default="month", show_default=True, help="Coverage period.")
@format_option(("table", "json"))
def status(mirror_dir: str, by: str, fmt: str, as_json: bool) -> None:
    """Per-series counts, bytes on disk and coverage per day or month."""
    fmt = output_format(fmt, as_json)
    config, mirror = _read(mirror_dir)
    with mirror:
        statuses, result = mirror_status(mirror.catalog, config, by=by)
        last = mirror.catalog.q("status_last_scan").fetchall()
    if fmt == "json":
        echo_json({"code": 0, "by": by,
                   "last_scan": {"root": last[0][0], "at": last[0][1]} if last else None,
                   "unknown_files": result.unknown_files,
                   "series": [_status_dict(s) for s in statuses]})
        return
    click.echo(f"last scan: {last[0][1]:%Y-%m-%d %H:%M:%S} UTC of {last[0][0]}" if last else "never scanned ('jsocmirror scan')")
    for st in statuses:
        c = st.counts
        quota = f" of max_bytes {human_bytes(st.quota)} ({st.bytes / st.quota:.0%})" if st.quota else ""
        click.echo(f"{st.series}: {st.files} files, {human_bytes(st.bytes)}{quota}; "
                   + ", ".join(f"{s} {c.get(s, 0)}" for s in STATES))
        for period, present, expected, fraction in st.coverage:
            click.echo(f"  {period}  {present:>8}/{expected:<8} {fraction:7.1%}")
    if result.unknown_files:
        click.echo(f"{result.unknown_files} files outside the layout")


def _status_dict(status) -> dict:
    out = dict(status.__dict__)
    out["coverage"] = [{"period": period, "present": present, "expected": expected, "fraction": fraction}
                       for period, present, expected, fraction in status.coverage]
    return out


@cli.command("export-catalog")
@mirror_option
@click.argument("dest", required=False)
@json_option
def export_catalog_cmd(mirror_dir: str, dest: str | None, as_json: bool) -> None:
    """Write the catalog's tables as Parquet (default: <data root>/_catalog/), for DuckDB or pandas."""
    config, mirror = _read(mirror_dir)
    target = dest or (config.data_root.rstrip("/") + "/_catalog")
    with mirror:
        written = export_catalog(mirror.catalog, target, tables=sorted(mirror.manifest().get("tables", {})),
                                 storage_options=config.storage_options())
    if as_json:
        echo_json({"code": 0, "dest": target, "tables": written})
        return
    echo_report(f"wrote {len(written)} tables to {target}")
