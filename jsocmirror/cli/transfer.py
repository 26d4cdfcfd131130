"""Commands that move data: ``fetch`` (stage and download the gaps), ``update`` (the nightly job)
and ``demo`` (the README's first command: an emulated JSOC and a small mirror, end to end)."""

from __future__ import annotations

import logging
import sys
from contextlib import nullcontext
from pathlib import Path

import click

from jsocmirror import config as cfg
from jsocmirror.errors import JsocMirrorError, LockedError
from jsocmirror.cli import (
    bar_size, bars_on_screen, cli, echo_json, echo_report, jsoc_server, json_option, mirror_option, run_log,
    show_progress, wait_option,
)


def _write_report(config: cfg.MirrorConfig, path: str) -> None:
    """The coverage page after the run (it shows this run); a failure to write it is said, and
    leaves the run's exit code alone: the mirror itself is fine."""
    from jsocmirror.report import write_report

    try:
        write_report(config, path)
    except JsocMirrorError as exc:
        logging.getLogger("jsocmirror.report").error("report not written: %s", exc)


def _run_options(func):
    for option in reversed([
        click.option("--dry-run", is_flag=True,
                     help="Print the plan (record-set queries, records, estimated bytes) and change nothing."),
        json_option,
        wait_option,
        click.option("--connections", type=click.IntRange(1, 64), default=None,
                     help="Parallel downloads (default: [transfer] max_connections)."),
        click.option("--include-offline", is_flag=True,
                     help="Also fetch records whose data are on tape (JSOC stages them through an export)."),
        click.option("--report", "report", type=click.Path(dir_okay=False), default=None, metavar="FILE",
                     help="After the run, write the coverage report (jsocmirror report) to FILE."),
        click.argument("series_names", nargs=-1, metavar="[SERIES]..."),
    ]):
        func = option(func)
    return func


class _Bars:
    """tqdm bars for the library's progress hooks: sync (one series at a time), then files and bytes.

    The files and bytes bars appear when the first is asked for (the transfer stage), so they
    never share the screen with a sync bar; log lines go above the bars (``bars_on_screen``).
    """

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._files = self._bytes = None
        self.sync = None
        self._screen = bars_on_screen() if enabled else None
        if enabled:
            from jsocmirror.cli.catalog import _TqdmProgress

            self._screen.__enter__()
            self.sync = _TqdmProgress(True)

    def _transfer_bars(self) -> None:
        if self.enabled and self._files is None:
            from tqdm import tqdm

            if self.sync is not None:
                self.sync.close()
            size = bar_size()
            self._files = tqdm(total=0, unit=" files", desc="files", position=0, leave=False, file=sys.stderr, **size)
            self._bytes = tqdm(total=None, unit="B", unit_scale=True, desc="bytes", position=1,
                               leave=False, file=sys.stderr, **size)

    @property
    def files(self):
        self._transfer_bars()
        return self._files

    @property
    def bytes(self):
        self._transfer_bars()
        return self._bytes

    def close(self) -> None:
        for bar in (self._bytes, self._files):
            if bar is not None:
                bar.close()
        if self.sync is not None:
            self.sync.close()
        if self._screen is not None:
            self._screen.__exit__(None, None, None)
            self._screen = None


def _run(ctx: click.Context, command: str, mirror_dir: str, series_names, dry_run: bool, as_json: bool,
         wait: float, connections: int | None, sync: bool, include_offline: bool = False,
         verify: bool | None = None, report: str | None = None) -> None:
    from jsocmirror.update import UpdateOptions, update_mirror

    config = cfg.load_config(mirror_dir)
    if report:
        from jsocmirror.report import check_report_path

        check_report_path(Path(report))  # refused before the night's work, not after it
    for name in series_names:
        config.get_series(name)
    options = UpdateOptions(series=list(series_names) or None, sync=sync, dry_run=dry_run,
                            connections=connections, include_offline=include_offline, verify=verify)
    bars = _Bars(show_progress(ctx))
    # A dry run changes nothing, its log file included: its plan goes to stdout only.
    logging_to = nullcontext(None) if dry_run else run_log(ctx, config.mirror_dir, command)
    with logging_to as log_path:
        with jsoc_server(config.server, config.mirror_dir) as url:
            try:
                summary = update_mirror(config, url, options, progress=bars, command=command, wait=wait)
            except JsocMirrorError as exc:
                if report and not dry_run and not isinstance(exc, LockedError):
                    _write_report(config, report)  # the page shows the failed night too
                raise
            finally:
                bars.close()
        logging.getLogger("jsocmirror.update").info("summary:\n%s", summary.render())
        if report and not dry_run:
            _write_report(config, report)
    if as_json:
        out = summary.as_dict()
        out["code"] = summary.exit_code
        out["log"] = str(log_path) if log_path else None
        echo_json(out)
    else:
        ok = not summary.needs_a_person
        echo_report(summary.render() + (f"\n  log: {log_path}" if log_path else ""), ok=ok)
    ctx.exit(summary.exit_code)


@cli.command()
@mirror_option
@_run_options
@click.pass_context
def fetch(ctx, mirror_dir, series_names, dry_run, as_json, wait, connections, include_offline, report):
    """Stage and download the current gaps (missing, stale, corrupt) of the mirror, without a sync."""
    _run(ctx, "fetch", mirror_dir, series_names, dry_run, as_json, wait, connections, sync=False,
         include_offline=include_offline, report=report)


@cli.command()
@mirror_option
@_run_options
@click.pass_context
@click.option("--sync", "dry_sync", is_flag=True,
              help="With --dry-run: also ask JSOC what it would add (held in a scratch copy, removed after). "
                   "Without it a dry run plans from the catalog as it is and asks JSOC nothing.")
@click.option("--verify/--no-verify", default=None,
              help="Re-verify tonight's rotating slice of the mirror's files ([verify]; default: on).")
def update(ctx, mirror_dir, series_names, dry_run, as_json, wait, connections, include_offline, report, dry_sync,
           verify):
    """The nightly job: sync, scan, diff, stage and download, under the mirror's lock.

    Exit code 0 when every gap was filled, 1 when some records failed (listed in the summary),
    2 for a usage or configuration error, 3 when another run holds the mirror, 4 when JSOC was
    unreachable or refused us. Each run logs to <mirror>/logs/update-<time>.log.
    """
    if dry_sync and not dry_run:
        raise click.UsageError("--sync only goes with --dry-run (a real update always syncs)")
    _run(ctx, "update", mirror_dir, series_names, dry_run, as_json, wait, connections,
         sync=dry_sync or not dry_run, include_offline=include_offline, verify=verify, report=report)


@cli.command()
@click.option("--dir", "directory", default="jsocmirror-demo", show_default=True, type=click.Path(file_okay=False),
              help="Where to create the demo mirror.")
@click.pass_context
def demo(ctx, directory):
    """Try jsocmirror with no JSOC account: an emulated JSOC, a small two-series mirror, two nights."""
    from jsocmirror import demo as demo_lib

    path = Path(directory).expanduser().resolve()
    demo_lib.prepare_demo_dir(path)
    from jsocmirror.emulator import Emulator

    # The same emulator 'jsoc_server("embedded", path)' starts: state under <path>/.emulator, so
    # 'jsocmirror status/update' run later inside the demo directory see this same world.
    with Emulator(state_dir=path / ".emulator") as emulator:
        world = emulator.world

        def next_night(sample: dict[str, list[str]]) -> dict:
            report = world.next_night()
            for series, keys in sample.items():  # the night's own sample is over the last 30 days
                for key in keys:
                    report.setdefault(series, {}).setdefault("reprocessed", []).append(world.reprocess(series, key))
            return report

        bars = _Bars(show_progress(ctx))
        try:
            demo_lib.run_demo(path, emulator.url, next_night=next_night, echo=click.echo, progress=bars)
        finally:
            bars.close()
