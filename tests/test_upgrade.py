"""Upgrades: a catalog from an older jsocmirror is backed up and migrated (by `jsocmirror migrate`, or by a
writing command on its own); reading commands never migrate and say a migration is pending; a catalog
from a newer jsocmirror is refused with one line and left alone; a failed migration changes nothing."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import duckdb
from click.testing import CliRunner

import jsocmirror
import jsocmirror.catalog as catalog_mod
from jsocmirror import config as cfg
from jsocmirror.catalog import Catalog, migrations
from jsocmirror.cli import cli
from jsocmirror.publish import publish

PY = sys.executable
OLD_SCHEMA = 20  # the last migration before 0030_catalog_meta
NEW = [name for number, name, _ in migrations() if number > OLD_SCHEMA]  # what an upgrade from it applies
LATEST = max(number for number, _, _ in migrations())


def jm(*args) -> subprocess.CompletedProcess:
    """The real CLI in a subprocess (its own logging to stderr, as cron sees it)."""
    return subprocess.run([PY, "-m", "jsocmirror", *map(str, args)], capture_output=True, text=True, timeout=120)


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def tree(root: Path) -> dict[str, str]:
    """Every file under root and its hash, but the (empty) run lock file, which taking the lock creates."""
    return {str(p.relative_to(root)): digest(p) for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != ".jsocmirror.lock"}


def write_old_catalog(path: Path) -> None:
    """A catalog as jsocmirror made it before 0030: only the older migrations, applied by hand, and some data."""
    for leftover in (path, Path(f"{path}.wal")):
        leftover.unlink(missing_ok=True)
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE schema_migrations (number INTEGER PRIMARY KEY, name VARCHAR NOT NULL,"
                " applied_at TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'))")
    for number, name, sql in migrations():
        if number > OLD_SCHEMA:
            break
        con.execute(sql)
        con.execute("INSERT INTO schema_migrations (number, name) VALUES (?, ?)", [number, name])
    con.execute("INSERT INTO runs (run_id, command, started_at, status) "
                "SELECT 'old-' || i, 'update', TIMESTAMP '2026-01-01' + i * INTERVAL 1 DAY, 'ok' FROM range(300) t(i)")
    con.close()


def old_mirror(root: Path) -> cfg.MirrorConfig:
    """A mirror whose catalog and readers' copy are both at the old schema."""
    assert run("init", root, "--offline").exit_code == 0
    config = cfg.load_config(root)
    write_old_catalog(config.catalog_path)
    with Catalog(config.catalog_path, migrate=False) as catalog:  # publish as the old jsocmirror did
        assert catalog.schema_version() == OLD_SCHEMA and catalog.pending == NEW
        publish(catalog, config)
    return config


def schema_of(path: Path) -> tuple[int, bool, int]:
    """(highest migration, has catalog_meta, rows of runs) of a catalog file, read without jsocmirror."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        top = con.execute("SELECT max(number) FROM schema_migrations").fetchall()[0][0]
        meta = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'catalog_meta'"
                           ).fetchall()[0][0] > 0
        runs = con.execute("SELECT count(*) FROM runs").fetchall()[0][0]
    finally:
        con.close()
    return top, meta, runs


def one_line_error(result: subprocess.CompletedProcess, code: int, *fragments: str) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# -- jsocmirror migrate ------------------------------------------------------------------------------
def test_migrate_backs_up_the_old_catalog_then_migrates_and_republishes(tmp_path):
    config = old_mirror(tmp_path / "m")
    catalog_path = config.catalog_path
    before = digest(catalog_path)

    dry = jm("migrate", "-m", config.mirror_dir, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "schema 0020" in dry.stdout and "0030_catalog_meta" in dry.stdout
    assert digest(catalog_path) == before and not (config.mirror_dir / "backups").exists()

    done = jm("migrate", "-m", config.mirror_dir)
    assert done.returncode == 0, done.stderr
    backups = sorted((config.mirror_dir / "backups").glob("*.duckdb"))
    assert len(backups) == 1 and backups[0].name.startswith("catalog-schema0020-")
    assert f"backed up {catalog_path} (schema 0020) to {backups[0]}" in done.stdout
    assert "applied 0030_catalog_meta" in done.stdout and f"is at schema {LATEST:04d}" in done.stdout
    # the backup is the old catalog, byte for byte: it opens and holds the old data at the old schema
    assert digest(backups[0]) == before
    assert schema_of(backups[0]) == (OLD_SCHEMA, False, 300)
    assert schema_of(catalog_path) == (LATEST, True, 300)
    assert not os.path.samefile(backups[0], catalog_path)
    with Catalog(catalog_path) as catalog:
        meta = catalog.meta()
        catalog.execute("DELETE FROM runs")  # later writes never reach the backup
    assert meta["schema_version"] == f"{LATEST:04d}" and meta["jsocmirror_version"] == jsocmirror.__version__
    assert meta["duckdb_version"] == duckdb.__version__ and meta["storage_version"].startswith("v")
    assert digest(backups[0]) == before
    # the readers' copy was published again: it has the new table, and no warning any more
    read = jm("sql", "-m", config.mirror_dir, "SELECT value FROM catalog_meta WHERE key = 'schema_version'")
    assert read.returncode == 0 and f"{LATEST:04d}" in read.stdout and "pending" not in read.stderr, read.stderr

    again = jm("migrate", "-m", config.mirror_dir)
    assert again.returncode == 0 and "no migration pending" in again.stdout, again.stderr
    assert len(list((config.mirror_dir / "backups").glob("*.duckdb"))) == 1


def test_reading_commands_on_a_pending_catalog_change_nothing_and_say_so(tmp_path):
    config = old_mirror(tmp_path / "m")
    before = digest(config.catalog_path)
    for args in (["status"], ["sql", "SELECT count(*) AS n FROM runs"], ["diff"], ["export-catalog"]):
        result = jm(*args, "-m", config.mirror_dir)
        assert result.returncode == 0, (args, result.stderr)
        assert "a catalog migration is pending" in result.stderr and "jsocmirror migrate" in result.stderr, args
    assert "300" in jm("sql", "-m", config.mirror_dir, "SELECT count(*) AS n FROM runs").stdout
    # a query that needs the new schema cannot work: an error that says why
    needs_new = jm("sql", "-m", config.mirror_dir, "SELECT * FROM catalog_meta")
    assert needs_new.returncode == 2
    assert "catalog_meta" in needs_new.stderr and "run 'jsocmirror migrate" in needs_new.stderr.splitlines()[-1]
    assert digest(config.catalog_path) == before and not (config.mirror_dir / "backups").exists()


def test_a_writing_command_backs_up_and_migrates_by_itself(tmp_path):
    """What cron meets after `pip install -U`: the night's first writing command upgrades, logged."""
    config = old_mirror(tmp_path / "m")
    before = digest(config.catalog_path)
    result = jm("publish", "-m", config.mirror_dir)
    assert result.returncode == 0, result.stderr
    backups = sorted((config.mirror_dir / "backups").glob("catalog-schema0020-*.duckdb"))
    assert len(backups) == 1 and digest(backups[0]) == before
    assert "WARNING" in result.stderr and f"backed up to {backups[0]}" in result.stderr
    assert "applied 0030_catalog_meta" in result.stderr
    assert schema_of(config.catalog_path) == (LATEST, True, 300)
    assert "published generation" in result.stdout
    read = jm("sql", "-m", config.mirror_dir, "SELECT count(*) FROM catalog_meta")
    assert read.returncode == 0 and "pending" not in read.stderr, read.stderr
    # the next night: nothing pending, no backup, no warning
    quiet = jm("publish", "-m", config.mirror_dir)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    assert len(list((config.mirror_dir / "backups").iterdir())) == 1


def test_the_nightly_update_after_an_upgrade_migrates_logs_it_and_runs_its_night(tmp_path):
    from conftest import quick_emulator
    from test_update import make_mirror

    with quick_emulator() as emu:
        config = make_mirror(tmp_path / "m", emu.url)
        write_old_catalog(config.catalog_path)
        before = digest(config.catalog_path)
        night = jm("update", "-m", config.mirror_dir)
    assert night.returncode == 0, night.stdout + night.stderr
    (backup,) = (config.mirror_dir / "backups").glob("catalog-schema0020-*.duckdb")
    assert digest(backup) == before
    (log_file,) = (config.mirror_dir / "logs").glob("update-*.log")
    logged = log_file.read_text()
    assert f"backed up to {backup}, then applied {', '.join(NEW)}" in logged and "WARNING" in logged
    with Catalog(config.catalog_path, read_only=True) as catalog:
        assert catalog.pending == [] and catalog.q("sync_state_list").fetchall()  # the night synced


def test_a_new_catalog_is_made_at_the_current_schema_without_a_backup(tmp_path):
    with Catalog(tmp_path / "catalog.duckdb") as catalog:
        assert catalog.pending == [] and catalog.upgraded is None
        assert catalog.schema_version() == max(n for n, _, _ in migrations())
        assert catalog.meta()["jsocmirror_version"] == jsocmirror.__version__
    assert not (tmp_path / "backups").exists()


# -- a catalog from a newer jsocmirror ----------------------------------------------------------------
def make_newer(config: cfg.MirrorConfig) -> None:
    """What a future jsocmirror 9.9.0 leaves: a migration this one does not know, published for readers too."""
    con = duckdb.connect(str(config.catalog_path))
    con.execute("INSERT INTO schema_migrations (number, name) VALUES (9990, '9990_from_the_future')")
    con.execute("UPDATE catalog_meta SET value = '9.9.0' WHERE key = 'jsocmirror_version'")
    publish(Catalog.from_connection(con, str(config.catalog_path), read_only=False), config)
    con.close()


def test_a_newer_catalog_is_refused_with_one_line_and_left_unchanged(tmp_path):
    assert run("init", tmp_path / "m", "--offline").exit_code == 0
    config = cfg.load_config(tmp_path / "m")
    make_newer(config)
    before = tree(config.mirror_dir)
    newest = max(n for n, _, _ in migrations())
    for args in (["migrate"], ["migrate", "--dry-run"], ["publish"], ["sql", "--write", "SELECT 1"], ["scan"],
                 ["status"], ["sql", "SELECT 1"]):
        one_line_error(jm(*args, "-m", config.mirror_dir), 2, "schema 9990", "jsocmirror 9.9.0",
                       f"({jsocmirror.__version__}, schemas up to {newest:04d})", "pip install -U jsocmirror")
    after = tree(config.mirror_dir)
    logs = [name for name in after if name.startswith("logs/")]  # the run log of the refused scan says why
    assert [name for name in logs if "scan-" in name] == logs and len(logs) == 1
    assert "schema 9990" in (config.mirror_dir / logs[0]).read_text()
    assert {k: v for k, v in after.items() if k not in logs} == before  # catalog, readers' copy, no backups/


# -- a migration that fails ---------------------------------------------------------------------------
def test_a_failed_migration_leaves_the_catalog_as_it_was_and_the_backup_stays(tmp_path, monkeypatch):
    config = old_mirror(tmp_path / "m")
    before = digest(config.catalog_path)
    real = migrations()
    broken = (9999, "9999_broken", "CREATE TABLE half_done (a INTEGER);\nSELECT * FROM no_such_table;")
    monkeypatch.setattr(catalog_mod, "migrations", lambda: [*real, broken])
    result = CliRunner().invoke(cli, ["migrate", "-m", str(config.mirror_dir)], catch_exceptions=False)
    assert result.exit_code == 1, result.output
    line = result.stderr.strip()
    assert "\n" not in line and line.startswith("Error: migration 9999_broken failed")
    assert "no_such_table" in line and "is as it was (schema 0020)" in line
    # the real ones had succeeded on the working copy: none of it reached the catalog
    assert digest(config.catalog_path) == before
    assert schema_of(config.catalog_path) == (OLD_SCHEMA, False, 300)
    backups = list((config.mirror_dir / "backups").glob("*.duckdb"))
    assert len(backups) == 1 and str(backups[0]) in line and digest(backups[0]) == before
    assert not os.path.samefile(backups[0], config.catalog_path)  # the catalog's next writes spare it
    leftovers = [p.name for p in config.mirror_dir.iterdir() if "migrating" in p.name]
    assert leftovers == []
    # a writing command meets the same failure the same way (its night fails; the catalog stays usable),
    # night after night, and the catalog it did not change keeps its one backup
    for _night in range(2):
        publish_result = CliRunner().invoke(cli, ["publish", "-m", str(config.mirror_dir)], catch_exceptions=False)
        assert publish_result.exit_code == 1 and "9999_broken failed" in publish_result.stderr
        assert f"its backup {backups[0]} stays" in publish_result.stderr
    assert digest(config.catalog_path) == before
    assert list((config.mirror_dir / "backups").glob("*.duckdb")) == backups
    monkeypatch.setattr(catalog_mod, "migrations", lambda: real)
    assert run("migrate", "-m", config.mirror_dir).exit_code == 0
    assert schema_of(config.catalog_path) == (LATEST, True, 300)
    assert all(digest(b) == before for b in backups)


# -- DuckDB versions ----------------------------------------------------------------------------------
def test_a_catalog_last_written_by_another_duckdb_major_is_noticed(tmp_path, caplog):
    path = tmp_path / "catalog.duckdb"
    Catalog(path).close()
    con = duckdb.connect(str(path))  # as a jsocmirror on DuckDB 1.5.6 would have left it
    con.execute("UPDATE catalog_meta SET value = '1.5.6' WHERE key = 'duckdb_version'")
    con.close()
    with caplog.at_level(logging.WARNING, logger="jsocmirror"):
        with Catalog(path) as catalog:
            meta = catalog.meta()
    warned = [r.getMessage() for r in caplog.records if "DuckDB 1.5.6" in r.getMessage()]
    assert warned and f"this is DuckDB {duckdb.__version__}" in warned[0] and "another major" in warned[0]
    assert meta["duckdb_version"] == duckdb.__version__  # the writing open recorded this one
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="jsocmirror"):
        Catalog(path).close()
    assert not [r for r in caplog.records if "major" in r.getMessage()]


# -- a mirror this user cannot write -------------------------------------------------------------------


def test_migrate_on_a_read_only_mirror_is_one_line_and_changes_nothing():
    base = Path(tempfile.mkdtemp(prefix="jsocmirror-ro-", dir="/tmp"))
    try:
        config = old_mirror(base / "m")
        for dirpath, _dirs, files in os.walk(base):
            os.chmod(dirpath, 0o555)
            for name in files:
                os.chmod(os.path.join(dirpath, name), 0o444)
        before = tree(config.mirror_dir)
        if os.geteuid() == 0:  # root writes whatever the mode bits say: run it as nobody
            from test_read import as_nobody  # imports the CLI, then drops to uid 65534

            result = as_nobody(base, "migrate", "-m", config.mirror_dir)
        else:
            result = jm("migrate", "-m", config.mirror_dir)
        one_line_error(result, 1, "cannot migrate", str(config.catalog_path), "not writable")
        assert tree(config.mirror_dir) == before
        assert not (config.mirror_dir / "backups").exists()
    finally:
        for dirpath, _dirs, _files in os.walk(base):
            os.chmod(dirpath, 0o755)
        shutil.rmtree(base, ignore_errors=True)


def test_the_backup_holds_what_a_crashed_run_left_in_the_write_ahead_log(tmp_path):
    """A night killed mid-write leaves catalog.duckdb.wal: the backup is taken after a checkpoint, so it has those rows."""
    config = old_mirror(tmp_path / "m")
    crash = subprocess.run([PY, "-c", (
        "import duckdb, os, sys; con = duckdb.connect(sys.argv[1]); con.execute('PRAGMA disable_checkpoint_on_shutdown');"
        "con.execute(\"INSERT INTO runs (run_id, command, started_at) VALUES ('in-the-wal', 'update', now())\");"
        "os._exit(0)"), str(config.catalog_path)], capture_output=True, text=True, timeout=60)
    assert crash.returncode == 0, crash.stderr
    assert Path(f"{config.catalog_path}.wal").exists()
    done = jm("migrate", "-m", config.mirror_dir)
    assert done.returncode == 0, done.stderr
    (backup,) = (config.mirror_dir / "backups").glob("*.duckdb")
    assert schema_of(backup) == (OLD_SCHEMA, False, 301) and not Path(f"{backup}.wal").exists()
    assert schema_of(config.catalog_path) == (LATEST, True, 301)
