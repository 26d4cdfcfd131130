"""docs/cli.md is the help of every command, so it cannot drift from the code.

Regenerate it after changing a command: ``python tests/test_docs_cli.py``.
"""

import re
import sys
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jsocmirror.cli import cli  # noqa: E402

REFERENCE = ROOT / "docs" / "cli.md"
HEADER = """# Command reference

Generated from each command's `--help` by `python tests/test_docs_cli.py`; a test fails when
this file and the code disagree.

## Conventions every command follows

Exit codes, the same for every command:

| code | meaning |
|------|---------|
| 0 | all done |
| 1 | finished, but some records or files failed (the summary lists them), or another runtime failure |
| 2 | usage or configuration error: a bad option, value or config entry (the message names it and what is accepted) |
| 3 | another run holds the mirror's lock (after `--wait SECONDS` ran out, if given) |
| 4 | the source was unreachable or refused us: connection refused or timed out, HTTP 5xx after the retries |

Every error is one line on stderr, `Error: ...`, naming the bad value and what is accepted; a bad
option or argument too, with the command whose `--help` tells more. An unexpected exception (a bug)
is one line as well, `Error: unexpected TYPE: MESSAGE (a bug in jsocmirror; traceback in PATH)`,
exit code 1, its traceback written to `<mirror>/logs/crash-<UTC time>.log` (the system's
temporary directory when there is no mirror, or its `logs/` cannot be written); `-vv` raises it
instead.

`--json` (on every command that reports something) prints one JSON object on stdout: the
result with `"code": 0` (or 1 for a run that finished with failures), or, on an error,
`{"code": N, "error": KIND, "message": "...", "summary": {...}}` where `summary` is how far a run
got. Commands with a table/csv/json choice keep `--format`; `--json` is its shorthand.

`-q` prints nothing when a run is all done, and only the failures, the summary and errors
otherwise; there are no progress bars with `-q`, with `--json`, or when stdout or stderr is not a
terminal. The commands that change the mirror (`update`, `fetch`, `sync`, `scan`, `prune`) log each run to
`<mirror>/logs/<command>-<UTC time>.log` at `--log-level` (default info): the plan, a line per
stage with its figures, every failed file with its reason, and the final summary or error.
`--log-file FILE` appends the same log to FILE for any command.

`--wait` takes an optional number of seconds: `--wait` alone waits an hour, but only where no
argument follows it (`update --wait SERIES` reads SERIES as the seconds): write `--wait 3600
SERIES`, or put `--wait` last.
"""


def _commands(group: click.Group, path: tuple[str, ...] = ("jsocmirror",)):
    yield path, group
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from _commands(command, path + (name,))
        else:
            yield path + (name,), command


def _help_text(path: tuple[str, ...], command: click.Command) -> str:
    ctx = click.Context(cli, info_name=path[0], terminal_width=100, max_content_width=100, **cli.context_settings)
    for name in path[1:]:
        ctx = click.Context(ctx.command.commands[name], info_name=name, parent=ctx)
    return command.get_help(ctx)


def render() -> str:
    parts = [HEADER]
    for path, command in _commands(cli):
        parts.append(f"## `{' '.join(path)}`\n\n```text\n{_help_text(path, command).rstrip()}\n```\n")
    return "\n".join(parts)


COMMANDS = list(_commands(cli))


@pytest.mark.parametrize("path,command", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_command_has_help_text(path, command):
    assert (command.help or "").strip(), f"{' '.join(path)} has no help text"


def test_cli_reference_is_current():
    assert REFERENCE.read_text(encoding="utf-8") == render(), (
        "docs/cli.md differs from the commands' help: regenerate it with `python tests/test_docs_cli.py`"
    )


def test_readme_names_only_commands_that_exist():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    # commands as README shows them: in code spans and code blocks
    blocks = re.findall(r"```[a-z]*\n(.*?)```", readme, re.S)
    spans = re.findall(r"`([^`\n]+)`", re.sub(r"```[a-z]*\n.*?```", "", readme, flags=re.S))
    code = "\n".join(blocks + spans)
    used = set(re.findall(r"\bjsocmirror ([a-z][a-z-]+)", code))
    assert used, "README.md shows no jsocmirror command"
    assert used <= set(cli.commands), f"README.md names commands that do not exist: {sorted(used - set(cli.commands))}"


if __name__ == "__main__":
    REFERENCE.write_text(render(), encoding="utf-8")
    print(f"wrote {REFERENCE}")
