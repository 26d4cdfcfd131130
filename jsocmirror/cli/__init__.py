"""The ``jsocmirror`` command: a thin layer over the library.

Each command parses its options, calls one library function and renders what it returns.
Library errors (``JsocMirrorError``) become a one-line message (or, with ``--json``, one JSON
object on stdout) and the error's exit code (``jsocmirror.errors``: 0 done, 1 some failed,
2 usage/config, 3 locked, 4 source unavailable). Command groups live in sibling modules
and register themselves on ``cli`` when imported below.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import click

from jsocmirror import __version__
from jsocmirror.errors import JsocMirrorError

#: Every option can also be set from the environment: JSOCMIRROR_<COMMAND>_<OPTION>
#: (``JSOCMIRROR_UPDATE_CONNECTIONS``, ``JSOCMIRROR_SERIES_ADD_SEGMENTS``; see ``_name_envvars``).
ENV_PREFIX = "JSOCMIRROR"


class _Group(click.Group):
    """Turns library errors into one clean line (or one JSON object) and the documented exit code."""

    def parse_args(self, ctx, args):
        # An error while parsing a subcommand's options comes before --json's own callback runs;
        # the raw arguments still say whether the answer should be JSON.
        ctx.ensure_object(dict)["json_asked"] = "--json" in args
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:  # the group's own options (jsocmirror --log-level nope)
            if isinstance(exc, getattr(click.exceptions, "NoArgsIsHelpError", ())) or wants_json(ctx):
                raise
            _usage_line(exc)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except JsocMirrorError as exc:
            _report_error(ctx, exc.exit_code, exc.kind, str(exc), getattr(exc, "summary", None))
        except click.NoSuchOption as exc:
            if re.fullmatch(r"-\d+(\.\d+)?", exc.option_name or ""):  # '--wait -1': click takes -1 for an option
                exc = click.UsageError(f"{exc.option_name} is not accepted: give a number of 0 or more "
                                       "(e.g. --wait 3600)", ctx=exc.ctx)
            if not wants_json(ctx):
                _usage_line(exc)
            _report_error(ctx, exc.exit_code, "usage", exc.format_message(), None)
        except click.ClickException as exc:
            if not wants_json(ctx):
                if isinstance(exc, click.UsageError) and not isinstance(
                        exc, getattr(click.exceptions, "NoArgsIsHelpError", ())):
                    _usage_line(exc)
                raise
            _report_error(ctx, exc.exit_code, "usage", exc.format_message(), None)
        except (click.exceptions.Exit, click.exceptions.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:  # a bug, or a failure the library does not know yet: still one line
            logging.getLogger("jsocmirror").debug("unexpected error", exc_info=True)
            if _verbosity(ctx) >= 2:
                raise
            crash = _write_crash_log(ctx, exc)
            where = f"traceback in {crash}" if crash else "-vv shows the traceback"
            text = " ".join(str(exc).split()) or "(no message)"
            if len(text) > 300:
                text = text[:297] + "..."
            _report_error(ctx, 1, "internal", f"unexpected {type(exc).__name__}: {text} "
                          f"(a bug in jsocmirror; {where})", None, traceback_path=crash)


def _usage_line(exc: click.UsageError) -> None:
    """A bad option or argument as one line, like every other error, with where the usage is
    (click's own form is three lines: the usage, a hint, the error)."""
    where = exc.ctx.command_path if exc.ctx is not None else "jsocmirror"
    message = " ".join(exc.format_message().split())
    click.echo(f"Error: {message} (see '{where} --help')", err=True)
    sys.exit(exc.exit_code)


def _verbosity(ctx: click.Context) -> int:
    return int(((ctx.find_root().obj or {}).get("verbose")) or 0)


def _write_crash_log(ctx: click.Context, exc: BaseException) -> Path | None:
    """The traceback of an unexpected exception, in ``<mirror>/logs/crash-<UTC stamp>.log`` (the
    system's temporary directory when the mirror is unknown or its logs/ cannot be written).
    None if no file could be written at all."""
    import tempfile
    import traceback

    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    text = (f"jsocmirror {__version__}: {' '.join(sys.argv)}\n"
            + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    mirror = ((ctx.find_root().obj or {}).get("mirror_dir"))
    places = []
    if mirror and (Path(mirror) / "jsocmirror.toml").is_file():
        places.append(Path(mirror) / "logs")
    places.append(Path(tempfile.gettempdir()))
    for place in places:
        path = place / (f"crash-{stamp}.log" if place.name == "logs" else f"jsocmirror-crash-{stamp}.log")
        try:
            if place.name == "logs":
                place.mkdir(exist_ok=True)
            with open(path, "x", encoding="utf-8") as handle:
                handle.write(text)
            return path
        except OSError:
            continue
    return None


def _report_error(ctx: click.Context, code: int, kind: str, message: str, summary, *,
                  traceback_path: Path | None = None) -> None:
    logging.getLogger("jsocmirror").debug("exit %d (%s): %s", code, kind, message)
    if wants_json(ctx):
        out = {"code": code, "error": kind, "message": message}
        if summary is not None:
            out["summary"] = summary
        if traceback_path is not None:
            out["traceback"] = str(traceback_path)
        click.echo(json.dumps(out, indent=2, default=str))
    else:
        click.echo(f"Error: {message}", err=True)
    ctx.exit(code)


LOG_LEVELS = ("debug", "info", "warning", "error")
_FILE_ONLY = {"file_only": True}
_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": ENV_PREFIX})
@click.version_option(__version__, prog_name="jsocmirror")
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-v info, -vv debug).")
@click.option("-q", "--quiet", is_flag=True,
              help="Print nothing when a run is all done; only failures, the summary and errors otherwise. No progress bars.")
@click.option("--log-file", type=click.Path(dir_okay=False), default=None,
              help="Also append the log to this file (runs of update/fetch/sync/scan log to <mirror>/logs/ as well).")
@click.option("--log-level", type=click.Choice(LOG_LEVELS, case_sensitive=False), default="info", show_default=True,
              help="Level of the log files (--log-file and the run logs under <mirror>/logs/).")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool, log_file: str | None, log_level: str) -> None:
    """Mirror SDO data from JSOC: catalog, diff, stage and download; and a JSOC emulator."""
    ctx.ensure_object(dict)
    ctx.obj["quiet"] = quiet
    ctx.obj["verbose"] = verbose
    ctx.obj["log_level"] = getattr(logging, log_level.upper())
    terminal = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logger = logging.getLogger("jsocmirror")
    # The CLI owns what reaches the terminal: a root handler that some imported package set up
    # (basicConfig) would print every INFO line the run log is meant to keep.
    logger.propagate = False
    if not any(getattr(h, "_jsocmirror_terminal", False) for h in logger.handlers):
        handler = _TerminalHandler()
        handler.setFormatter(logging.Formatter(_LOG_FORMAT))
        logger.addHandler(handler)
    for handler in logger.handlers:
        if getattr(handler, "_jsocmirror_terminal", False):
            handler.setLevel(terminal)
    logger.setLevel(min(terminal, ctx.obj["log_level"]))
    _own_root_logging(logging.ERROR if quiet else logging.WARNING)
    if log_file:
        try:
            handler = logging.FileHandler(log_file, encoding="utf-8")
        except OSError as exc:
            raise click.BadParameter(f"cannot open {log_file!r} for appending: {exc.strerror}",
                                     param_hint="'--log-file'") from None
        handler.setFormatter(logging.Formatter(_LOG_FORMAT))
        handler.setLevel(ctx.obj["log_level"])
        logger.addHandler(handler)
        ctx.call_on_close(lambda: (logger.removeHandler(handler), handler.close()))


def _own_root_logging(level: int) -> None:
    """Other packages' log records reach the terminal at ``level`` (warnings; errors only with -q),
    through the CLI's own root handler. A package that called ``logging.basicConfig`` at import
    (drms does: INFO lines on stderr) loses its handler, and one imported later finds the root
    configured already, so basicConfig does nothing."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if not getattr(handler, "_jsocmirror_terminal", False) and type(handler) is logging.StreamHandler \
                and getattr(handler, "stream", None) in (sys.stderr, sys.__stderr__):
            root.removeHandler(handler)
    mine = [h for h in root.handlers if getattr(h, "_jsocmirror_terminal", False)]
    if not mine:
        mine = [_TerminalHandler()]
        mine[0].setFormatter(logging.Formatter(_LOG_FORMAT))
        root.addHandler(mine[0])
    for handler in mine:
        handler.setLevel(level)


class _TerminalHandler(logging.StreamHandler):
    """stderr, through tqdm's ``write`` while bars are on screen so a log line never tears a bar."""

    _jsocmirror_terminal = True

    def __init__(self):
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "file_only", False):  # the terminal gets the error as its own 'Error:' line
            return
        self.stream = sys.stderr  # the current one (a test runner swaps it per invocation)
        if _bars_on_screen:
            try:
                from tqdm import tqdm

                tqdm.write(self.format(record), file=sys.stderr)
                return
            except Exception:  # never lose a log line to the progress machinery
                pass
        super().emit(record)


_bars_on_screen = 0


@contextmanager
def bars_on_screen() -> Iterator[None]:
    """While progress bars are drawn, log lines go above them (tqdm.write) instead of across them."""
    global _bars_on_screen
    _bars_on_screen += 1
    try:
        yield
    finally:
        _bars_on_screen -= 1


def bar_size() -> dict:
    """tqdm size options: follow the terminal, or 80x24 where it reports no size (some ptys, where
    tqdm would draw an empty bar, or hide every bar as below the screen's last row)."""
    try:
        size = os.get_terminal_size(sys.stderr.fileno())
    except (OSError, ValueError):
        size = os.terminal_size((0, 0))
    return {"dynamic_ncols": True} if size.columns > 0 and size.lines > 0 else {"ncols": 80, "nrows": 24}


def quiet(ctx: click.Context | None = None) -> bool:
    ctx = ctx or click.get_current_context(silent=True)
    return bool(ctx and ctx.find_root().obj and ctx.find_root().obj.get("quiet"))


def show_progress(ctx: click.Context | None = None) -> bool:
    """Progress bars only for a human at a terminal (stdout and stderr), never with --quiet or --json."""
    ctx = ctx or click.get_current_context(silent=True)
    return not quiet(ctx) and not wants_json(ctx) and sys.stderr.isatty() and sys.stdout.isatty()


def wants_json(ctx: click.Context | None = None) -> bool:
    ctx = ctx or click.get_current_context(silent=True)
    obj = (ctx.find_root().obj if ctx else None) or {}
    return bool(obj.get("json") or obj.get("json_asked"))


def _set_json(ctx: click.Context, _param, value):
    if value:
        ctx.find_root().ensure_object(dict)["json"] = True
    return value


def json_option(func):
    """``--json``: the command's report (or its error) as one JSON object on stdout.

    Eager, so that even an error in a later option is answered in JSON.
    """
    return click.option("--json", "as_json", is_flag=True, is_eager=True, callback=_set_json,
                        help="Print the result (or the error) as one JSON object on stdout.")(func)


def format_option(choices: tuple[str, ...], default: str = "table"):
    """``--format`` with ``--json`` as its shorthand (``--json`` = ``--format json``)."""
    def decorate(func):
        func = click.option("--format", "fmt", type=click.Choice(choices), default=default, show_default=True,
                            help="Output format (--json is short for --format json).")(func)
        return json_option(func)
    return decorate


def output_format(fmt: str, as_json: bool) -> str:
    return "json" if as_json else fmt


def echo_json(value) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


def echo_report(text: str, ok: bool = True) -> None:
    """A command's human report: kept back by --quiet when all went well."""
    if ok and quiet():
        return
    click.echo(text)


#: ``--wait`` with no value: long enough for a slow night to finish, short enough that a hung run
#: never makes every later night queue behind it.
DEFAULT_WAIT = 3600.0


def wait_option(func):
    return click.option(
        "--wait", type=click.FloatRange(min=0), is_flag=False, flag_value=DEFAULT_WAIT, default=0.0,
        metavar="[SECONDS]",
        help=f"If another run holds the mirror, wait up to SECONDS for it (--wait alone: {DEFAULT_WAIT:.0f}) "
             "instead of exiting with code 3 at once.")(func)


@contextmanager
def run_log(ctx: click.Context, mirror_dir: Path, command: str) -> Iterator[Path]:
    """Log this run to ``<mirror>/logs/<command>-<UTC timestamp>.log`` (level: --log-level, default info).

    The log ends with the run's outcome: the summary (the caller logs it) or the error that ended it.
    """
    logs = Path(mirror_dir) / "logs"
    try:
        logs.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise JsocMirrorError(f"cannot create the log directory {logs}: {exc.strerror}") from None
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = logs / f"{command}-{stamp}.log"
    logger = logging.getLogger("jsocmirror")
    level = (ctx.find_root().obj or {}).get("log_level", logging.INFO)
    try:
        handler = logging.FileHandler(path, encoding="utf-8")
    except OSError as exc:
        raise JsocMirrorError(f"cannot write the run log {path}: {exc.strerror}") from None
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(level)
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(min(previous or logging.WARNING, level))
    logger.info("jsocmirror %s %s in %s", __version__, command, mirror_dir)
    try:
        yield path
    except JsocMirrorError as exc:
        logger.error("%s failed (exit %d): %s", command, exc.exit_code, exc, extra=_FILE_ONLY)
        raise
    except KeyboardInterrupt:
        logger.error("%s interrupted", command, extra=_FILE_ONLY)
        raise
    except Exception:
        logger.exception("%s failed with an unexpected error", command, extra=_FILE_ONLY)
        raise
    finally:
        logger.removeHandler(handler)
        handler.close()
        logger.setLevel(previous)


def _mirror_dir(ctx: click.Context, param: click.Parameter, value: str | None) -> str:
    """-m, else JSOCMIRROR_MIRROR, else the first directory up from here holding jsocmirror.toml."""
    if ctx.resilient_parsing:
        return value
    if value is None:
        from jsocmirror.config import find_mirror

        value = str(find_mirror())
    ctx.find_root().ensure_object(dict)["mirror_dir"] = value  # where a crash log goes
    return value


mirror_option = click.option(
    "-m", "--mirror", "mirror_dir", default=None, envvar="JSOCMIRROR_MIRROR", show_envvar=True,
    callback=_mirror_dir, type=click.Path(file_okay=False),
    help="Mirror directory (holds jsocmirror.toml). Default: the current directory or the first one above it "
         "that holds jsocmirror.toml.",
)


REAL_JSOC_URL = "http://jsoc.stanford.edu/"


@contextmanager
def jsoc_server(server: str, mirror_dir: str | Path | None = None) -> Iterator[str]:
    """The JSOC base URL a command should talk to.

    ``"jsoc"`` is the real JSOC; ``"embedded"`` starts the emulator in this process with its
    state kept under ``<mirror_dir>/.emulator`` (so successive commands see the same world);
    anything else is taken as a URL. Only the CLI starts the emulator: the library never
    imports it.
    """
    from jsocmirror.config import check_proxy_environment

    check_proxy_environment()  # a garbage HTTP_PROXY: one line naming it, before any request
    if server == "jsoc":
        yield REAL_JSOC_URL
    elif server == "embedded":
        from jsocmirror.emulator import Emulator

        state_dir = Path(mirror_dir or ".") / ".emulator"
        with Emulator(state_dir=state_dir) as emulator:
            yield emulator.url
    else:
        yield server if server.endswith("/") else server + "/"


def _register_commands() -> None:
    # Importing a command module adds its commands to ``cli``.
    from jsocmirror.cli import catalog, emulator, mirror, report, retention, transfer, upgrade  # noqa: F401

    _name_envvars(cli, ENV_PREFIX)


def _name_envvars(command: click.Command, prefix: str) -> None:
    """Give each option its environment variable, JSOCMIRROR_<COMMAND>_<OPTION> named after the
    long flag (click's automatic names follow the Python parameter: ``--json`` would be AS_JSON),
    and show it in --help. --help and --version are never read from the environment (a stray
    JSOCMIRROR_VERSION=1 would turn every command into a version print)."""
    for param in command.params:
        if not isinstance(param, click.Option) or param.envvar == "JSOCMIRROR_MIRROR":
            continue
        if param.is_eager and not param.expose_value:
            param.allow_from_autoenv = False
            continue
        longest = max(param.opts, key=len).lstrip("-")
        param.envvar = f"{prefix}_{longest.upper().replace('-', '_')}"
        param.show_envvar = True
    for name, sub in getattr(command, "commands", {}).items():
        _name_envvars(sub, f"{prefix}_{name.upper().replace('-', '_')}")


_register_commands()


def main() -> None:
    cli(prog_name="jsocmirror")
