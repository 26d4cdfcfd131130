"""Readers never wait for the writer, and the writer never waits for readers.

A real ``jsocmirror update`` runs in another process against the emulator; the reading
commands, the Python API and a plain DuckDB client run in processes of their own, as a
group's scientists would, while it waits on an export, while a reader holds the published
copy open, and as a user who can only read the mirror.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import pytest
from conftest import quick_emulator

from jsocmirror import config as cfg
from jsocmirror import publish as pub
from jsocmirror.catalog import Catalog

from test_update import make_mirror, options, update_mirror

PY = sys.executable


def jm(*args, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    """The jsocmirror CLI in a process of its own."""
    return subprocess.run([PY, "-m", "jsocmirror", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, **kw)


def py(code: str, *args, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-c", code, *map(str, args)], capture_output=True, text=True, timeout=timeout, **kw)


def read_count(read_root: str, sql: str) -> int:
    """A count from the readers' copy, by a plain DuckDB client in another process."""
    out = py("import duckdb, sys; con = duckdb.connect(sys.argv[1], read_only=True); "
             "print(con.execute(sys.argv[2]).fetchall()[0][0])", os.path.join(read_root, "catalog.duckdb"), sql)
    assert out.returncode == 0, out.stderr
    return int(out.stdout)


def wait_for(condition, timeout: float = 60, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def emu():
    with quick_emulator() as emulator:
        yield emulator


def test_readers_answer_at_once_while_update_waits_on_an_export(tmp_path, emu):
    config = make_mirror(tmp_path / "m", emu.url)
    # AIA straight from SUMS (it lands first), HMI through an export that never finishes
    hmi, aia = config.series
    hmi.method, hmi.protocol, aia.method, aia.protocol = "url", "fits", "url_quick", "as-is"
    cfg.save_config(config)
    emu.faults.stuck_exports = 1.0
    log = open(tmp_path / "update.log", "w")
    update = subprocess.Popen([PY, "-m", "jsocmirror", "update", "-m", str(config.mirror_dir)],
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        aia_files = lambda: sum(1 for _ in Path(config.data_root).rglob("aia.*.fits"))  # noqa: E731
        wait_for(lambda: emu.exports.store.all() and aia_files(), what="AIA landed and the HMI export waiting")
        landed = aia_files()
        # the landed batch committed: readers see it within seconds, though nothing commits after it
        wait_for(lambda: read_count(config.read_root, "SELECT count(*) FROM local_files "
                                    "WHERE series = 'aia.lev1_euv_12s'") == landed, timeout=15,
                 what="the landed files published")
        mirror = str(config.mirror_dir)
        checks = {
            "sql": jm("sql", "-m", mirror, "--format", "json", "SELECT count(*) AS n FROM hmi_m_720s"),
            "status": jm("status", "-m", mirror, "--format", "json"),
            "diff": jm("diff", "-m", mirror, "--format", "json"),
            "series list": jm("series", "list", "-m", mirror),
            "series show": jm("series", "show", "-m", mirror, "hmi.M_720s"),
            "export-catalog": jm("export-catalog", "-m", mirror, tmp_path / "exported"),
            "python api": py("import jsocmirror, sys\n"
                             "with jsocmirror.open(sys.argv[1]) as m:\n"
                             "    print(len(m.files('aia.lev1_euv_12s')), len(m.files('hmi.M_720s')))", mirror),
        }
        for name, result in checks.items():
            assert result.returncode == 0, (name, result.stdout, result.stderr)
        assert update.poll() is None, "the update should still be waiting on its export"
        assert json.loads(checks["sql"].stdout) == [{"n": 16}]
        status = {s["series"]: s for s in json.loads(checks["status"].stdout)["series"]}
        assert status["aia.lev1_euv_12s"]["files"] == landed and status["hmi.M_720s"]["files"] == 0
        diff = json.loads(checks["diff"].stdout)["counts"]
        assert diff["hmi.M_720s"]["missing"] == 16 and diff["aia.lev1_euv_12s"]["present"] == landed
        assert "hmi.M_720s" in checks["series list"].stdout and "16" in checks["series list"].stdout
        assert "records 16" in checks["series show"].stdout
        assert (tmp_path / "exported" / "kw_hmi_m_720s.parquet").is_file()
        assert checks["python api"].stdout.split() == [str(landed), "0"]
    finally:
        update.send_signal(signal.SIGKILL)
        update.wait(timeout=30)
        log.close()
    # what readers saw is what the writer had committed
    with Catalog(config.catalog_path, read_only=True) as catalog:
        assert catalog.execute("SELECT count(*) FROM hmi_m_720s").fetchall()[0][0] == 16
        assert catalog.execute("SELECT count(*) FROM local_files").fetchall()[0][0] == landed


def test_a_reader_holding_the_copy_open_never_delays_the_update(tmp_path, emu):
    config = make_mirror(tmp_path / "m", emu.url)
    assert update_mirror(config, emu.url, options()).exit_code == 0
    before = read_count(config.read_root, "SELECT count(*) FROM hmi_m_720s")
    holder = subprocess.Popen(
        [PY, "-c", "import duckdb, sys\n"
                   "con = duckdb.connect(sys.argv[1], read_only=True)\n"
                   "q = 'SELECT count(*), max(generation) FROM hmi_m_720s, jsocmirror_publication'\n"
                   "print(*con.execute(q).fetchall()[0], flush=True)\n"
                   "sys.stdin.readline()\n"
                   "print(*con.execute(q).fetchall()[0], flush=True)\n",
         os.path.join(config.read_root, "catalog.duckdb")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        first = holder.stdout.readline().split()
        emu.world.advance(3600 * 3)  # three more hours of records upstream
        started = time.monotonic()
        night = jm("update", "-m", config.mirror_dir, timeout=120)
        took = time.monotonic() - started
        assert night.returncode == 0, night.stdout + night.stderr
        after = read_count(config.read_root, "SELECT count(*) FROM hmi_m_720s")
        assert after == before + 15
        holder.stdin.write("\n")
        holder.stdin.flush()
        second = holder.stdout.readline().split()
        assert first == second == [str(before), first[1]]  # its generation, whole, for as long as it stays open
    finally:
        holder.kill()
        holder.wait()
    assert took < 60


def _readable_tree(path: Path) -> None:
    for dirpath, dirs, files in os.walk(path):
        os.chmod(dirpath, 0o755)
        for name in files:
            os.chmod(os.path.join(dirpath, name), 0o644)


#: Runs the CLI as uid/gid 65534 (nobody). The interpreter lives under /root here, which nobody
#: cannot read, so the code is imported first and the process drops to nobody before it touches
#: the mirror: everything jsocmirror then does, it does with nobody's permissions.
AS_NOBODY = """
import os, runpy, sys
import csv, duckdb, json, pyarrow, pyarrow.compute, click, tomllib
import importlib.readers, importlib.resources
import jsocmirror.api, jsocmirror.catalog, jsocmirror.cli, jsocmirror.diff, jsocmirror.layout, jsocmirror.scan
jsocmirror.catalog.migrations(), jsocmirror.catalog.queries()
os.environ["HOME"] = sys.argv.pop(1)
os.setgroups([])
os.setgid(65534)
os.setuid(65534)
sys.argv[0] = "jsocmirror"
runpy.run_module("jsocmirror", run_name="__main__")
"""


def as_nobody(home: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-c", AS_NOBODY, str(home), *map(str, args)], capture_output=True, text=True,
                          timeout=60)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to run as another uid")
def test_a_user_who_can_only_read_the_mirror_runs_sql_status_diff(emu):
    base = Path(tempfile.mkdtemp(prefix="jsocmirror-ro-", dir="/tmp"))
    try:
        config = make_mirror(base / "m", emu.url)
        assert update_mirror(config, emu.url, options()).exit_code == 0
        _readable_tree(base)
        home = base / "home"
        home.mkdir()
        os.chown(home, 65534, 65534)
        mirror = config.mirror_dir
        refused = as_nobody(home, "sql", "-m", mirror, "--write", "DELETE FROM runs")
        assert refused.returncode != 0  # nobody really cannot write the mirror
        sql = as_nobody(home, "sql", "-m", mirror, "--format", "json", "SELECT count(*) AS n FROM hmi_m_720s")
        status = as_nobody(home, "status", "-m", mirror)
        diff = as_nobody(home, "diff", "-m", mirror, "--format", "json")
        for result in (sql, status, diff):
            assert result.returncode == 0, result.stderr
        assert json.loads(sql.stdout) == [{"n": 16}]
        assert "hmi.M_720s: 16 files" in status.stdout
        assert json.loads(diff.stdout)["counts"]["hmi.M_720s"]["present"] == 16
        written = [p for p in base.rglob("*") if p.stat().st_uid == 65534 and home not in p.parents and p != home]
        assert written == []
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=False)


# -- publishing ------------------------------------------------------------------------------------
def test_publishing_writes_only_what_changed_and_keeps_held_generations(tmp_path, emu):
    config = make_mirror(tmp_path / "m", emu.url)
    assert update_mirror(config, emu.url, options()).exit_code == 0
    store = pub._Store(config.read_root)
    manifest_path = Path(config.read_root, "manifest.json")
    pub.collect_garbage(store, json.loads(manifest_path.read_text()), keep_seconds=0)  # the night's earlier steps
    with Catalog(config.catalog_path) as catalog:
        again = pub.publish(catalog, config)
        assert not again.changed and again.parts_written == 0  # nothing moved: nothing written
        generation = again.generation
        held = duckdb.connect(os.path.join(config.read_root, "catalog.duckdb"), read_only=True)
        old_count = held.execute("SELECT count(*) FROM local_files").fetchall()[0][0]
        catalog.execute("UPDATE local_files SET size = size + 1 WHERE series = 'hmi.M_720s'")
        changed = pub.publish(catalog, config)
        # HMI's files sit in two month folders (2024/06, 2024/07): those two parts, nothing else
        assert changed.generation == generation + 1 and changed.tables == {"local_files": 2}
        manifest = json.loads(manifest_path.read_text())
        assert manifest["generation"] == changed.generation
        old_gen = Path(config.read_root, "gens", f"{generation:06d}.duckdb")
        assert pub.in_use(str(old_gen))  # this process's own read connection counts
        # a collector that ignores age still keeps what the held generation reads
        assert pub.collect_garbage(store, manifest, keep_seconds=0) == 0
        assert held.execute("SELECT count(*) FROM local_files").fetchall()[0][0] == old_count
        held.close()
        assert not pub.in_use(str(old_gen))
        removed = pub.collect_garbage(store, manifest, keep_seconds=0)
        assert removed >= 3 and not old_gen.exists()  # its views file, manifest and superseded part
        files = {p.relative_to(config.read_root).as_posix() for p in Path(config.read_root, "tables").rglob("*.parquet")}
        assert files == {info["file"] for parts in manifest["tables"].values() for info in parts.values()}
    with duckdb.connect(os.path.join(config.read_root, "catalog.duckdb"), read_only=True) as fresh:
        assert fresh.execute("SELECT count(*) FROM local_files").fetchall()[0][0] == old_count


def test_a_change_to_an_even_number_of_rows_of_a_part_is_published(tmp_path, emu):
    """DuckDB's hash(a, b, c) XORs its last column in, so a bit_xor of it over a part cancelled a
    new value that an even number of rows took: two records synced again looked unchanged."""
    config = make_mirror(tmp_path / "m", emu.url)
    assert update_mirror(config, emu.url, options()).exit_code == 0
    last = pub.KEYWORD_FINGERPRINT[-1]
    with Catalog(config.catalog_path) as catalog:
        keys = [k for (k,) in catalog.execute("SELECT _key FROM kw_hmi_m_720s ORDER BY _key LIMIT 2").fetchall()]
        catalog.execute(f"UPDATE kw_hmi_m_720s SET {last} = TIMESTAMP '2030-01-01 00:00:00' WHERE _key IN "
                        "(SELECT unnest($k))", {"k": keys})
        assert pub.publish(catalog, config).changed
    with duckdb.connect(os.path.join(config.read_root, "catalog.duckdb"), read_only=True) as readers:
        changed = readers.execute(f"SELECT _key FROM kw_hmi_m_720s WHERE {last} = TIMESTAMP '2030-01-01' "
                                  "ORDER BY _key").fetchall()
    assert [k for (k,) in changed] == keys


def test_sql_write_changes_the_writer_and_republishes(tmp_path, emu):
    config = make_mirror(tmp_path / "m", emu.url)
    assert update_mirror(config, emu.url, options()).exit_code == 0
    done = jm("sql", "-m", config.mirror_dir, "--write", "UPDATE kw_hmi_m_720s SET \"QUALITY\" = 7")
    assert done.returncode == 0, done.stderr
    assert read_count(config.read_root, "SELECT count(*) FROM hmi_m_720s WHERE QUALITY = 7") == 16
    refused = jm("sql", "-m", config.mirror_dir, f"COPY (SELECT 1) TO '{tmp_path / 'x.csv'}'")
    assert refused.returncode == 2 and "add --write" in refused.stderr and not (tmp_path / "x.csv").exists()
    assert len(refused.stderr.strip().splitlines()) == 1
    prepared = jm("sql", "-m", config.mirror_dir, f"PREPARE p AS COPY (SELECT 1) TO '{tmp_path / 'x.csv'}'; EXECUTE p")
    assert prepared.returncode == 2 and "PREPARE" in prepared.stderr and not (tmp_path / "x.csv").exists()


def test_reading_an_unpublished_mirror_says_how_to_publish(tmp_path, emu):
    config = make_mirror(tmp_path / "m", emu.url)
    for leftover in sorted(Path(config.read_root).rglob("*"), reverse=True):
        leftover.unlink() if leftover.is_file() else leftover.rmdir()
    result = jm("status", "-m", config.mirror_dir)
    assert result.returncode == 1 and "jsocmirror publish" in result.stderr
    assert jm("publish", "-m", config.mirror_dir).returncode == 0
    assert jm("status", "-m", config.mirror_dir).returncode == 0
    assert stat.S_ISDIR(os.stat(config.read_root).st_mode)
