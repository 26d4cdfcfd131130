"""CLI: init, series add|remove|list|show, sync and sql against the emulator; bad input is one line."""

from __future__ import annotations

import json
import os
import stat

import pytest
from click.testing import CliRunner

from jsocmirror.cli import cli
from jsocmirror.config import load_config
from jsocmirror.emulator import Emulator


@pytest.fixture(scope="module")
def emu():
    with Emulator(state_dir=None, seed=0) as emulator:
        yield emulator


def run(*args, ok=True):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output + result.stderr
    return result


def one_line_error(result, code: int, *fragments: str) -> None:
    assert result.exit_code == code, (result.exit_code, result.output, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture()
def mirror(tmp_path, emu):
    root = tmp_path / "mirror"
    run("init", root, "--server", emu.url, "--email", "someone@example.org")
    return root


def test_init_creates_config_catalog_and_data(mirror, emu):
    config = load_config(mirror)
    assert config.server == emu.url and config.email == "someone@example.org"
    assert (mirror / "jsocmirror.toml").is_file() and config.catalog_path.is_file() and (mirror / "data").is_dir()
    one_line_error(run("init", mirror, "--server", emu.url, ok=False), 2, "already a mirror")


def test_init_unknown_email_and_bad_values_leave_nothing(tmp_path, emu):
    root = tmp_path / "m"
    one_line_error(run("init", root, "--server", emu.url, "--email", "who@nowhere.invalid", ok=False), 2,
                   "who@nowhere.invalid", "not registered")
    one_line_error(run("init", root, "--email", "not-an-address", ok=False), 2, "not an email address")
    one_line_error(run("init", root, "--server", "gopher://x", ok=False), 2, "gopher://x")
    assert not root.exists()


def _read_only_dir(tmp_path):
    """A directory this process cannot write: chmod 555, or (as root, whom chmod does not stop) sysfs."""
    root = tmp_path / "ro"
    root.mkdir()
    root.chmod(stat.S_IRUSR | stat.S_IXUSR)
    if os.access(root, os.W_OK):
        root.chmod(stat.S_IRWXU)
        if os.path.isdir("/sys/kernel"):
            return "/sys/kernel"
        pytest.skip("no read-only directory available to this user")
    return root


def test_init_read_only_root_is_runtime_error(tmp_path):
    parent = _read_only_dir(tmp_path)
    target = os.path.join(parent, "jsocmirror-test-mirror")
    try:
        one_line_error(run("init", target, "--offline", ok=False), 1, "cannot create mirror directory")
        assert not os.path.exists(target)
    finally:
        os.chmod(tmp_path / "ro", stat.S_IRWXU)


def test_init_read_only_existing_root(tmp_path):
    root = _read_only_dir(tmp_path)
    before = sorted(os.listdir(root))
    try:
        one_line_error(run("init", root, "--offline", ok=False), 1, "not writable")
        assert sorted(os.listdir(root)) == before
    finally:
        os.chmod(tmp_path / "ro", stat.S_IRWXU)


def test_series_add_list_show_remove(mirror):
    result = run("series", "add", "-m", mirror, "hmi.m_720s", "--segments", "Magnetogram",
                 "--start", "2024.06.29_00:00:00_TAI", "--end", "2024.06.29_12:00:00_TAI", "--filter", "QUALITY = 0")
    assert "added hmi.M_720s" in result.output  # canonical spelling from JSOC
    run("series", "add", "-m", mirror, "hmi.sharp_720s", "--key", "HARPNUM=11355,11358", "--cadence", "1h",
        "--start", "2024.06.29_00:00:00_TAI", "--end", "2024.06.29_12:00:00_TAI")
    entries = {e.series: e for e in load_config(mirror).series}
    assert entries["hmi.M_720s"].segments == ["magnetogram"] and entries["hmi.sharp_720s"].keys == {"HARPNUM": [11355, 11358]}
    listing = run("series", "list", "-m", mirror).output
    assert "hmi.M_720s" in listing and "HARPNUM=11355,11358" in listing and "never" in listing
    shown = run("series", "show", "-m", mirror, "hmi.sharp_720s").output
    assert "kw_hmi_sharp_720s" in shown and "never" in shown
    assert "removed hmi.sharp_720s" in run("series", "remove", "-m", mirror, "hmi.sharp_720s").output
    assert [e.series for e in load_config(mirror).series] == ["hmi.M_720s"]


@pytest.mark.parametrize("args, code, fragments", [
    (["hmi.M_54s"], 2, ["JSOC has no series 'hmi.M_54s'", "valid series: hmi.M_45s"]),
    (["hmi.M_45s", "--segments", "magnetogrm"], 2, ["unknown segment 'magnetogrm'", "valid segments: magnetogram"]),
    (["hmi.M_45s", "--keywords", "QUALTY"], 2, ["unknown keyword 'QUALTY'", "valid keywords: QUALITY"]),
    (["hmi.sharp_720s", "--key", "HARPNUN=1"], 2, ["'HARPNUN' is not a prime key", "HARPNUM"]),
    (["hmi.M_45s", "--start", "2024.06.02", "--end", "2024.06.01"], 2, ["is before start"]),
    (["hmi.M_45s", "--start", "2024.13.45"], 2, ["not a JSOC time"]),
    (["hmi.M_45s", "--filter", "QUALITY =="], 2, ["bad filter"]),
    (["hmi.M_45s", "--filter", "QUALTY = 0"], 2, ["unknown keyword 'QUALTY'"]),
    (["hmi.M_45s", "--key", "nonsense"], 2, ["is not NAME=v1,v2"]),
])
def test_series_add_bad_input_is_one_line(mirror, args, code, fragments):
    before = (mirror / "jsocmirror.toml").read_bytes()
    one_line_error(run("series", "add", "-m", mirror, *args, ok=False), code, *fragments)
    assert (mirror / "jsocmirror.toml").read_bytes() == before  # nothing half-written


def test_sync_and_sql_formats(mirror, emu):
    run("series", "add", "-m", mirror, "aia.lev1_euv_12s", "--key", "WAVELNTH=171,193",
        "--start", "2024.06.30_12:00:00_TAI", "--end", "2024.06.30_13:00:00_TAI", "--cadence", "1m")
    out = run("sync", "-m", mirror).output
    assert "aia.lev1_euv_12s" in out and "122" in out and "requests" in out
    again = run("sync", "-m", mirror, "aia.lev1_euv_12s").output
    assert "unchanged upstream (probe)" in again
    rows = json.loads(run("sql", "-m", mirror, "--format", "json",
                          "SELECT WAVELNTH, count(*) AS n FROM aia_lev1_euv_12s GROUP BY 1 ORDER BY 1").output)
    assert rows == [{"WAVELNTH": 171, "n": 61}, {"WAVELNTH": 193, "n": 61}]
    csv_out = run("sql", "-m", mirror, "--format", "csv", "SELECT _key, T_REC FROM aia_lev1_euv_12s ORDER BY _key LIMIT 1").output
    assert csv_out.splitlines()[0] == "_key,T_REC" and csv_out.splitlines()[1].startswith("[2024-06-30T11:59:23Z][171],2024-06-30 11:59:23")
    table = run("sql", "-m", mirror, "SELECT count(*) AS n FROM aia_lev1_euv_12s").output
    assert "122" in table and "(1 row)" in table
    one_line_error(run("sql", "-m", mirror, "DELETE FROM kw_aia_lev1_euv_12s", ok=False), 2, "add --write")
    deleted = run("sql", "-m", mirror, "--write", "DELETE FROM kw_aia_lev1_euv_12s WHERE WAVELNTH = 193").output
    assert "61" in deleted
    assert "(0 rows)" in run("sql", "-m", mirror, "SELECT * FROM aia_lev1_euv_12s WHERE WAVELNTH = 193").output
    one_line_error(run("sql", "-m", mirror, "SELEC 1", ok=False), 2, "SQL error")
    one_line_error(run("sync", "-m", mirror, "hmi.M_46s", ok=False), 2, "hmi.M_46s", "aia.lev1_euv_12s")


def test_sync_newer_catalog_schema_is_refused(mirror):
    import duckdb

    con = duckdb.connect(str(mirror / "catalog.duckdb"))
    con.execute("INSERT INTO schema_migrations (number, name) VALUES (9999, '9999_future')")
    con.close()
    run("series", "add", "-m", mirror, "hmi.M_720s", "--start", "2024.06.30_00:00:00_TAI")
    one_line_error(run("sync", "-m", mirror, ok=False), 2, "schema 9999", "newer than this one")
    # readers still have the copy this jsocmirror published; one a newer one published is refused
    assert run("sql", "-m", mirror, "SELECT count(*) FROM schema_migrations WHERE number = 9999").output.startswith(
        "count_star()\n------------\n0")
    con = duckdb.connect(str(mirror / "catalog.duckdb"))
    con.execute("DELETE FROM schema_migrations WHERE number = 9999")
    con.close()
    run("sql", "-m", mirror, "--write", "INSERT INTO schema_migrations (number, name) VALUES (9999, '9999_future')")
    one_line_error(run("sql", "-m", mirror, "SELECT 1", ok=False), 2, "schema 9999", "newer than this one")


def test_sync_catalog_not_duckdb(mirror):
    (mirror / "catalog.duckdb").write_bytes(b"garbage" * 1000)
    run("series", "add", "-m", mirror, "hmi.M_720s", "--start", "2024.06.30_00:00:00_TAI")
    one_line_error(run("sync", "-m", mirror, ok=False), 1, "catalog")


def test_commands_outside_a_mirror(tmp_path):
    one_line_error(run("sync", "-m", tmp_path, ok=False), 2, "is not a jsocmirror mirror", "jsocmirror init")
    one_line_error(run("series", "list", "-m", tmp_path, ok=False), 2, "is not a jsocmirror mirror")
