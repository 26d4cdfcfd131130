"""The ``jsocmirror`` command: a thin layer over the library.

Each command parses its options, calls one library function and renders what it returns.
Library errors (``JsocMirrorError``) become a one-line message and the error's exit code
(2 for usage/config errors, 1 for runtime failures). Command groups live in sibling modules
and register themselves on ``cli`` when imported below.
"""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import click

from jsocmirror import __version__
from jsocmirror.errors import JsocMirrorError

#: Every option can also be set from the environment: JSOCMIRROR_<COMMAND>_<OPTION>
#: (``JSOCMIRROR_UPDATE_CONNECTIONS``, ``JSOCMIRROR_SERIES_ADD_SEGMENTS``; see ``_name_envvars``).
ENV_PREFIX = "JSOCMIRROR"


class _Group(click.Group):
    """Turns library errors into one clean line and the right exit code."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except JsocMirrorError as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": ENV_PREFIX})
@click.version_option(__version__, prog_name="jsocmirror")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors; no progress bars.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """Mirror SDO data from JSOC: catalog, diff, stage and download; and a JSOC emulator."""
    ctx.ensure_object(dict)
    ctx.obj["quiet"] = quiet
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("jsocmirror")
    if not logger.handlers:
        logger.addHandler(handler)
    logger.setLevel(level)


def show_progress(ctx: click.Context | None = None) -> bool:
    """Progress bars only for a human at a terminal, and never with --quiet."""
    ctx = ctx or click.get_current_context(silent=True)
    quiet = bool(ctx and ctx.find_root().obj and ctx.find_root().obj.get("quiet"))
    return not quiet and sys.stderr.isatty()


def _mirror_dir(ctx: click.Context, param: click.Parameter, value: str | None) -> str:
    """-m, else JSOCMIRROR_MIRROR, else the first directory up from here holding jsocmirror.toml."""
    if value is not None or ctx.resilient_parsing:
        return value
    from jsocmirror.config import find_mirror

    return str(find_mirror())


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
    from jsocmirror.cli import catalog, emulator, mirror, transfer  # noqa: F401

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
