"""Commands that move data: ``fetch`` (stage and download the gaps), ``update`` (the nightly job)
and ``demo`` (the README's first command: an emulated JSOC and a small mirror, end to end)."""

from __future__ import annotations

import json
import logging
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import click

from jsocmirror import config as cfg
from jsocmirror.cli import cli, jsoc_server, mirror_option, show_progress
from jsocmirror.errors import LockedError

def _run_options(func):
    for option in reversed([
        click.option("--dry-run", is_flag=True, help="Print the plan (record-set queries) and change nothing."),
        click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON."),
        click.option("--wait", is_flag=True, help="If another run holds the mirror, wait for it instead of exiting."),
        click.option("--connections", type=click.IntRange(1, 64), default=None,
                     help="Parallel downloads (default: [transfer] max_connections)."),
        click.option("--include-offline", is_flag=True,
                     help="Also fetch records whose data are on tape (JSOC stages them through an export)."),
        click.argument("series_names", nargs=-1, metavar="[SERIES]..."),
    ]):
        func = option(func)
    return func


class _Bars:
    """tqdm bars for the library's progress hooks: sync chunks, files and bytes."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.files = self.bytes = None
        self.sync = None
        if enabled:
            from tqdm import tqdm

            from jsocmirror.cli.catalog import _TqdmProgress

            self.sync = _TqdmProgress(True)
            self.files = tqdm(total=0, unit="file", desc="files", position=0, leave=False)
            self.bytes = tqdm(total=None, unit="B", unit_scale=True, desc="bytes", position=1, leave=False)

    def close(self) -> None:
        for bar in (self.files, self.bytes):
            if bar is not None:
                bar.close()
        if self.sync is not None:
            self.sync.close()


@contextmanager
def run_log(mirror_dir: Path, command: str) -> Iterator[Path]:
    """Log this run at INFO level to ``<mirror>/logs/<command>-<UTC timestamp>.log``."""
    logs = Path(mirror_dir) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = logs / f"{command}-{stamp}.log"
    logger = logging.getLogger("jsocmirror")
    previous = logger.level
    for handler in logger.handlers:  # the terminal keeps the verbosity the user asked for
        if handler.level == logging.NOTSET:
            handler.setLevel(previous or logging.WARNING)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.DEBUG if previous and previous <= logging.DEBUG else logging.INFO)
    logger.addHandler(handler)
    logger.setLevel(min(previous or logging.WARNING, logging.INFO))
    try:
        yield path
    finally:
        logger.removeHandler(handler)
        handler.close()
        logger.setLevel(previous)


def _run(ctx: click.Context, command: str, mirror_dir: str, series_names, dry_run: bool, as_json: bool,
         wait: bool, connections: int | None, sync: bool, include_offline: bool = False) -> None:
    from jsocmirror.update import UpdateOptions, update_mirror

    config = cfg.load_config(mirror_dir)
    for name in series_names:
        config.get_series(name)
    options = UpdateOptions(series=list(series_names) or None, sync=sync, dry_run=dry_run, connections=connections,
                            include_offline=include_offline)
    bars = _Bars(show_progress(ctx) and not as_json)
    with run_log(config.mirror_dir, command) as log_path:
        with jsoc_server(config.server, config.mirror_dir) as url:
            try:
                summary = _with_lock_wait(lambda: update_mirror(config, url, options, progress=bars, command=command),
                                          wait)
            finally:
                bars.close()
    if as_json:
        out = summary.as_dict()
        out["log"] = str(log_path)
        click.echo(json.dumps(out, indent=2, default=str))
    else:
        click.echo(summary.render())
        click.echo(f"  log: {log_path}")
    ctx.exit(summary.exit_code)


def _with_lock_wait(run, wait: bool):
    announced = False
    while True:
        try:
            return run()
        except LockedError as exc:
            if not wait:
                raise
            if not announced:
                click.echo(f"{exc}; waiting (--wait)...", err=True)
                announced = True
            time.sleep(2.0)


@cli.command()
@mirror_option
@_run_options
@click.pass_context
def fetch(ctx, mirror_dir, series_names, dry_run, as_json, wait, connections, include_offline):
    """Stage and download the current gaps (missing, stale, corrupt) of the mirror, without a sync."""
    _run(ctx, "fetch", mirror_dir, series_names, dry_run, as_json, wait, connections, sync=False,
         include_offline=include_offline)


@cli.command()
@mirror_option
@_run_options
@click.pass_context
def update(ctx, mirror_dir, series_names, dry_run, as_json, wait, connections, include_offline):
    """The nightly job: sync, scan, diff, stage and download, under the mirror's lock.

    Exit code 0 when every gap was filled, 1 when some records failed (listed in the summary),
    2 for a usage or configuration error. Each run logs to <mirror>/logs/update-<time>.log.
    """
    _run(ctx, "update", mirror_dir, series_names, dry_run, as_json, wait, connections, sync=True,
         include_offline=include_offline)


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
