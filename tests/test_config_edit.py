"""Edits respect the operator's jsocmirror.toml: `series add|remove` change one [[series]] table and
nothing else (comments, order, spacing, mode), refuse at add time what `update` could not use, and
every command finds the mirror from inside it and takes its options from the environment."""

from __future__ import annotations

import difflib
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from test_cli_catalog import one_line_error, run

from jsocmirror import config as cfg
from jsocmirror.catalog import Catalog
from jsocmirror.errors import ConfigError

HAND_WRITTEN = '''\
# The department's SDO mirror. Ask Jo before changing the windows!

email  = "jo@example.org"   # Jo's JSOC registration
server = "{url}"

[transfer]
# one connection, as JSOC asks; hand-ordered
protocol        = "as-is"
max_connections = 1
method          = "url_quick"


# HMI magnetograms, hourly: the flux paper
[[series]]
series   = "hmi.M_720s"
cadence  = "1h"          # hourly is plenty
segments = [ "magnetogram" ]
start    = "2024.06.01_00:00:00_TAI"

# SHARPs of two regions
[[series]]
series = "hmi.sharp_720s"
keys = {{ HARPNUM = [11355, 11358] }}   # inline, by hand
segments = ["magnetogram"]

# three days of re-checks: JSOC reprocesses late
[sync]
chunk_records = 20000
recheck = "3d"
'''


@pytest.fixture()
def mirror(tmp_path, emu) -> Path:
    root = tmp_path / "mirror"
    root.mkdir()
    (root / cfg.CONFIG_NAME).write_text(HAND_WRITTEN.format(url=emu.url))
    (root / cfg.CONFIG_NAME).chmod(0o640)
    with Catalog(root / cfg.DEFAULT_CATALOG):
        pass
    return root


def changed_lines(before: str, after: str) -> tuple[list[str], list[str]]:
    """(removed lines, added lines), asserting they form one contiguous change."""
    matcher = difflib.SequenceMatcher(a=before.splitlines(True), b=after.splitlines(True), autojunk=False)
    changes = [op for op in matcher.get_opcodes() if op[0] != "equal"]
    assert len(changes) == 1, changes
    _, a0, a1, b0, b1 = changes[0]
    return before.splitlines(True)[a0:a1], after.splitlines(True)[b0:b1]


def config_text(mirror: Path) -> str:
    return (mirror / cfg.CONFIG_NAME).read_text()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_series_add_then_remove_changes_only_that_entry_and_keeps_the_mode(mirror):
    before = config_text(mirror)
    out = run("series", "add", "-m", mirror, "aia.lev1_euv_12s", "--segments", "image", "--key", "WAVELNTH=171",
              "--start", "2024.06.30_00:00:00_TAI", "--no-header-fill").output
    assert "added aia.lev1_euv_12s" in out
    added_text = config_text(mirror)
    removed, added = changed_lines(before, added_text)
    assert removed == [] and added[0] == "[[series]]\n" and added[-1] == "\n"
    assert 'series = "aia.lev1_euv_12s"' in added[1] and "header_fill = false" in "".join(added)
    # the new entry sits after the last one, before the comment that leads the [sync] section
    assert added_text.index("aia.lev1_euv_12s") < added_text.index("# three days of re-checks")
    assert mode(mirror / cfg.CONFIG_NAME) == 0o640
    entry = cfg.load_config(mirror).get_series("aia.lev1_euv_12s")
    assert entry.keys == {"WAVELNTH": [171]} and entry.header_fill is False

    run("series", "remove", "-m", mirror, "aia.lev1_euv_12s")
    assert config_text(mirror) == before  # byte for byte
    assert mode(mirror / cfg.CONFIG_NAME) == 0o640

    run("series", "remove", "-m", mirror, "hmi.M_720s")
    removed, added = changed_lines(before, config_text(mirror))
    assert added == []
    assert "".join(removed) == ('# HMI magnetograms, hourly: the flux paper\n[[series]]\nseries   = "hmi.M_720s"\n'
                                'cadence  = "1h"          # hourly is plenty\nsegments = [ "magnetogram" ]\n'
                                'start    = "2024.06.01_00:00:00_TAI"\n\n')
    assert [e.series for e in cfg.load_config(mirror).series] == ["hmi.sharp_720s"]


def test_replacing_an_entry_edits_its_table_in_place(mirror):
    before = config_text(mirror)
    run("series", "add", "-m", mirror, "hmi.sharp_720s", "--key", "HARPNUM=11355", "--segments", "magnetogram")
    removed, added = changed_lines(before, config_text(mirror))
    assert removed == ["keys = { HARPNUM = [11355, 11358] }   # inline, by hand\n"]
    assert added == ["keys = { HARPNUM = [11355] }   # inline, by hand\n"]


def test_a_keywords_only_entry_is_said_to_be_one(mirror):
    out = run("series", "add", "-m", mirror, "hmi.M_45s", "--start", "2024.06.30_00:00:00_TAI").output
    assert "added hmi.M_45s" in out and "keywords only" in out


@pytest.mark.parametrize("args, fragments", [
    (["aia.lev1_euv_12s", "--method", "url-tar"], ['method = "url-tar" is a download setting', "no segments", "image"]),
    (["hmi.M_45s", "--no-header-fill"], ["header_fill = false is a download setting", "no segments", "magnetogram"]),
    (["hmi.M_45s", "--segments", "magnetogram", "--layout", "{series}/{T_REC:%Y}/{segment}.fits"],
     ["layout template", "lacks {T_REC}"]),
    (["hmi.M_45s", "--segments", "magnetogram", "--layout", "{series}/{T_REC}.{CAMERA}.fits"], ["lacks {segment}"]),
    (["hmi.M_45s", "--start", "2024-02-30"], ["'2024-02-30' is not a date", "February 2024 has 29 days"]),
    (["hmi.M_45s", "--end", "2023.02.29_00:00:00_TAI"], ["February 2023 has 28 days"]),
    (["hmi.M_45s", "--keywords", "T_REC,QUALTY"], ["unknown keyword 'QUALTY'", "valid keywords: QUALITY"]),
])
def test_refused_series_add_leaves_the_file_byte_identical(mirror, args, fragments):
    before = (mirror / cfg.CONFIG_NAME).read_bytes()
    one_line_error(run("series", "add", "-m", mirror, *args, ok=False), 2, *fragments)
    assert (mirror / cfg.CONFIG_NAME).read_bytes() == before


def test_keyword_names_are_spelled_as_jsoc_does(mirror):
    run("series", "add", "-m", mirror, "hmi.M_45s", "--segments", "magnetogram", "--keywords", "quality,t_obs")
    assert cfg.load_config(mirror).get_series("hmi.M_45s").keywords == ["QUALITY", "T_OBS"]


def test_read_only_config_file_or_mirror_directory_is_a_one_line_error(mirror):
    path = mirror / cfg.CONFIG_NAME
    before = path.read_bytes()
    path.chmod(0o440)
    one_line_error(run("series", "remove", "-m", mirror, "hmi.M_720s", ok=False), 2, "config file", "read-only")
    assert path.read_bytes() == before and mode(path) == 0o440
    path.chmod(0o640)
    mirror.chmod(0o555)
    try:
        one_line_error(run("series", "add", "-m", mirror, "hmi.M_45s", "--segments", "magnetogram", ok=False), 2,
                       "mirror directory", "read-only")
        assert path.read_bytes() == before
        assert sorted(p.name for p in mirror.iterdir()) == ["catalog.duckdb", cfg.CONFIG_NAME]  # no temporary left
    finally:
        mirror.chmod(0o755)


@pytest.mark.parametrize("umask, expected", [(0o022, 0o644), (0o027, 0o640)])
def test_a_new_config_gets_the_umask_mode_never_0600(tmp_path, umask, expected):
    old = os.umask(umask)
    try:
        run("init", tmp_path / "m", "--offline")
    finally:
        os.umask(old)
    assert mode(tmp_path / "m" / cfg.CONFIG_NAME) == expected


def test_find_mirror_walks_up_like_git(mirror, tmp_path):
    deep = mirror / "data" / "hmi.M_720s" / "2024"
    deep.mkdir(parents=True)
    assert cfg.find_mirror(deep) == mirror.resolve()
    assert cfg.find_mirror(mirror) == mirror.resolve()
    with pytest.raises(ConfigError, match="no jsocmirror.toml in .* or any directory above it: pass -m/--mirror"):
        cfg.find_mirror(tmp_path)


def jsocmirror(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("JSOCMIRROR_")}
    return subprocess.run([sys.executable, "-m", "jsocmirror", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env={**environ, **(env or {})})


def test_cli_finds_the_mirror_from_a_subdirectory_and_reads_options_from_the_environment(mirror, tmp_path):
    deep = mirror / "data" / "hmi.M_720s" / "2024"
    deep.mkdir(parents=True)
    added = jsocmirror("series", "add", "hmi.M_45s", "--start", "2024.06.30_00:00:00_TAI", cwd=deep,
                       env={"JSOCMIRROR_SERIES_ADD_SEGMENTS": "magnetogram"})
    assert added.returncode == 0, added.stderr
    assert f"added hmi.M_45s in {mirror.resolve() / cfg.CONFIG_NAME}" in added.stdout
    assert cfg.load_config(mirror).get_series("hmi.M_45s").segments == ["magnetogram"]
    listed = jsocmirror("series", "list", cwd=deep)
    assert listed.returncode == 0 and "hmi.M_45s" in listed.stdout, listed.stderr
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    lost = jsocmirror("series", "list", cwd=outside)
    assert lost.returncode == 2 and lost.stdout == ""
    assert lost.stderr.strip().splitlines() == [
        f"Error: no jsocmirror.toml in {outside.resolve()} or any directory above it: pass -m/--mirror DIR "
        "(or set JSOCMIRROR_MIRROR), or create a mirror with 'jsocmirror init'"]
    found = jsocmirror("series", "show", "hmi.sharp_720s", cwd=outside, env={"JSOCMIRROR_MIRROR": str(mirror)})
    assert found.returncode == 0 and "HARPNUM" in found.stdout, found.stderr
    bad = jsocmirror("series", "add", "hmi.M_45s", cwd=deep, env={"JSOCMIRROR_SERIES_ADD_METHOD": "ftp"})
    assert bad.returncode == 2 and "JSOCMIRROR_SERIES_ADD_METHOD" not in bad.stdout
    assert "'ftp' is not one of 'url_quick', 'url', 'url-tar'" in bad.stderr


def test_help_names_each_option_environment_variable():
    text = run("update", "--help").output
    assert "JSOCMIRROR_UPDATE_CONNECTIONS" in text and "JSOCMIRROR_UPDATE_JSON" in text and "JSOCMIRROR_MIRROR" in text
    assert "JSOCMIRROR_SERIES_ADD_HEADER_FILL" in run("series", "add", "--help").output
    assert "JSOCMIRROR_VERSION" not in run("--help").output
