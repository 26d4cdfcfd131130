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
this file and the code disagree. Exit codes everywhere: 0 success, 1 runtime failure
(some records or files failed, JSOC unreachable), 2 usage or configuration error.
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
