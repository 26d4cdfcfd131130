"""``jsocmirror emulator``: run the JSOC emulator and control its world.

``serve`` runs the HTTP server in the foreground and prints its URL as the first line on
stdout. The world controls (``advance``, ``next-night``, ``reprocess``, ``delete``, ``status``)
edit the persisted world in ``--state-dir``; a server running on the same directory re-reads
the state on its next request, so commands run one after another (or against a live server)
all see the same world.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import click

from jsocmirror import drmstime
from jsocmirror.cli import cli
from jsocmirror.errors import UsageError

STATE_HELP = "Directory holding the emulator's world state (world.json); shared by all commands."


@cli.group("emulator")
def emulator_group() -> None:
    """Run the JSOC emulator (a loopback server speaking JSOC's JSON protocol) and change its world."""


def _world(state_dir: str, seed: int | None = None, series_dirs: tuple[str, ...] = ()):
    from jsocmirror.emulator.world import World
    from jsocmirror.series import SeriesRegistry

    try:
        registry = SeriesRegistry.from_dirs(*series_dirs)
        return World(registry, state_dir=Path(state_dir), seed=seed or 0)
    except ValueError as exc:  # a bad definition or an unreadable state (WorldError)
        raise UsageError(str(exc)) from None


def _echo_json(data) -> None:
    click.echo(json.dumps(data, indent=1, sort_keys=False))


@emulator_group.command("serve")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="TCP port on 127.0.0.1 (0 picks a free one; the URL is printed).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (keep it loopback).")
@click.option("--state-dir", type=click.Path(file_okay=False), default=None, help=STATE_HELP + " Default: in memory.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the nightly reprocessing/deletion sample.")
@click.option("--series-dir", "series_dirs", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="Extra directory of series definitions (*.json), besides the built-ins. Repeatable.")
@click.option("--max-records", type=click.IntRange(1), default=None,
              help="Refuse rs_list/exports above this many records (default 3,000,000).")
@click.option("--mode", type=click.Choice(["strict", "lenient"]), default="strict", show_default=True,
              help="strict: one pending export per email (status 7 otherwise), like JSOC; lenient: no limit.")
@click.option("--speed", type=click.Choice(["quick", "slow"]), default="quick", show_default=True,
              help="Export processing time: quick (tests) or slow (JSOC-like minutes).")
@click.option("--image-size", default=None, metavar="ROWSxCOLS", help="Pixels of generated files (default 64x64).")
@click.option("--cache-mb", type=click.IntRange(0), default=256, show_default=True,
              help="Megabytes of generated files kept in memory (raise it when serving more, or bigger, "
                   "files than that again and again, as a benchmark does).")
@click.option("--registered", multiple=True, metavar="EMAIL",
              help="Only these addresses are registered for exports (repeatable; default: every well-formed "
                   "address except domains ending in .invalid).")
@click.option("--pending", multiple=True, metavar="EMAIL",
              help="Addresses whose registration is pending (repeatable; also any local part with +pending).")
@click.option("--fault", "faults", multiple=True, metavar="NAME=VALUE",
              help="Turn on a fault switch, e.g. http_503=0.2, endpoints=files, slow=1 (see docs/emulator.md). "
                   "Repeatable.")
def serve(port: int, host: str, state_dir: str | None, seed: int, series_dirs: tuple[str, ...],
          max_records: int | None, mode: str, speed: str, image_size: str | None, cache_mb: int,
          registered: tuple[str, ...], pending: tuple[str, ...], faults: tuple[str, ...]) -> None:
    """Serve the emulator until interrupted (Ctrl-C or SIGTERM)."""
    from jsocmirror.emulator import Emulator, EmulatorConfig

    config = EmulatorConfig(registered=set(registered) if registered else None, pending=set(pending))
    if max_records:
        config.max_records = max_records
    try:
        emu = Emulator(state_dir=state_dir, seed=seed, host=host, port=port, series_dirs=series_dirs, config=config)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    _configure_exports(emu, mode, speed, image_size, faults, cache_mb)
    try:
        emu.start()
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    click.echo(emu.url)
    sys.stdout.flush()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        signal.pause() if hasattr(signal, "pause") else emu._http._thread.join()  # noqa: SLF001
    except KeyboardInterrupt:
        pass
    finally:
        emu.stop()


def _configure_exports(emu, mode: str, speed: str, image_size: str | None, faults: tuple[str, ...],
                       cache_mb: int) -> None:
    """The exports/faults options of ``serve``."""
    emu.exports.config.set_mode(mode)
    emu.exports.resize_cache(cache_mb << 20)
    emu.exports.config.set_speed(speed)
    if image_size:
        rows, sep, cols = image_size.lower().partition("x")
        if not (sep and rows.isdigit() and cols.isdigit() and 0 < int(rows) <= 8192 and 0 < int(cols) <= 8192):
            raise UsageError(f"bad --image-size {image_size!r} (expected ROWSxCOLS, e.g. 64x64, each 1..8192)")
        emu.exports.config.image_shape = (int(rows), int(cols))
    for assignment in faults:
        try:
            emu.faults.parse(assignment)
        except ValueError as exc:
            raise UsageError(str(exc)) from None


def _seconds(text: str) -> float:
    try:
        return drmstime.parse_duration(text)
    except ValueError:
        raise UsageError(f"bad duration {text!r} (expected e.g. 3600, 90s, 12m, 6h or 1d)") from None


@emulator_group.command("advance")
@click.argument("duration")
@click.option("--state-dir", type=click.Path(file_okay=False), required=True, help=STATE_HELP)
def advance(duration: str, state_dir: str) -> None:
    """Move the emulator clock forward by DURATION (3600, 90s, 12m, 6h, 1d); new records appear."""
    world = _world(state_dir)
    now = world.advance(_seconds(duration))
    click.echo(drmstime.format_time(now, "TAI"))


@emulator_group.command("next-night")
@click.option("--state-dir", type=click.Path(file_okay=False), required=True, help=STATE_HELP)
@click.option("--seed", type=int, default=None, help="Seed for a world created by this command (default 0).")
def next_night(state_dir: str, seed: int | None) -> None:
    """Advance a day, reprocess and delete a seeded sample of records; print what changed (JSON)."""
    world = _world(state_dir, seed)
    report = world.next_night()
    _echo_json({"now": drmstime.format_time(world.now, "TAI"), "series": report})


@emulator_group.command("reprocess")
@click.argument("series")
@click.argument("record_key")
@click.option("--state-dir", type=click.Path(file_okay=False), required=True, help=STATE_HELP)
def reprocess(series: str, record_key: str, state_dir: str) -> None:
    """Reprocess one record (new RECNUM, keywords and file content): SERIES '[v1][v2]'."""
    _mutate("reprocess", series, record_key, state_dir)


@emulator_group.command("delete")
@click.argument("series")
@click.argument("record_key")
@click.option("--state-dir", type=click.Path(file_okay=False), required=True, help=STATE_HELP)
def delete(series: str, record_key: str, state_dir: str) -> None:
    """Delete one record: SERIES '[v1][v2]'."""
    _mutate("delete", series, record_key, state_dir)


def _mutate(action: str, series: str, record_key: str, state_dir: str) -> None:
    from jsocmirror.emulator.world import WorldError

    try:
        click.echo(series + getattr(_world(state_dir), action)(series, record_key))
    except WorldError as exc:
        raise UsageError(str(exc)) from None


@emulator_group.command("status")
@click.option("--state-dir", type=click.Path(file_okay=False), required=True, help=STATE_HELP)
def status(state_dir: str) -> None:
    """Print the clock, the number of nights run and per-series mutation counts (JSON)."""
    _echo_json(_world(state_dir).status())
