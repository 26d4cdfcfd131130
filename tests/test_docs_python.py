"""Every ```python block of docs/python.md runs, in order, against a mirror built from the emulator."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import quick_emulator

from test_update import make_mirror, options, update_mirror

DOC = Path(__file__).resolve().parent.parent / "docs" / "python.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)


@pytest.fixture(scope="module")
def mirror_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("docs-python") / "m"
    with quick_emulator() as emu:
        config = make_mirror(root, emu.url)
        summary = update_mirror(config, emu.url, options())
        assert summary.exit_code == 0, summary.render()
    return str(root)


def test_docs_python_blocks_run_in_order(mirror_dir, capsys):
    assert len(BLOCKS) >= 6
    namespace = {"MIRROR": mirror_dir}
    for i, block in enumerate(BLOCKS):
        try:
            exec(compile(block, f"docs/python.md block {i}", "exec"), namespace)
        except Exception as exc:
            raise AssertionError(f"docs/python.md block {i} failed: {exc!r}\n{block}") from exc
    out = capsys.readouterr().out
    assert "generation" in out and "hmi.M_720s" in out
