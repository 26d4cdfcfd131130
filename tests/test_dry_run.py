"""``UpdateOptions(dry_run=True)`` changes nothing anywhere (catalog bytes, run rows, files under
the mirror, JSOC's export queue) and still shows the plan the real run then carries out."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from conftest import hold_lock, quick_emulator
from test_update import make_mirror, options

from jsocmirror import config as cfg
from jsocmirror.catalog import Catalog
from jsocmirror.errors import CatalogError, LockedError
from jsocmirror.update import update_mirror


@pytest.fixture()
def emu():
    with quick_emulator() as emulator:
        yield emulator


def tree(config: cfg.MirrorConfig) -> dict[str, tuple[int, int]]:
    """Every file and folder under the mirror directory: (size, mtime) by relative path. The
    scratch folder's own mtime is left out: a dry run's sync works in a copy there, removed after."""
    root = config.mirror_dir
    return {str(p.relative_to(root)): (p.stat().st_size if p.is_file() else -1,
                                       0 if p == root / ".tmp" else p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def runs(config: cfg.MirrorConfig) -> int:
    with Catalog(config.catalog_path, read_only=True) as catalog:
        return catalog.execute("SELECT count(*) FROM runs").fetchall()[0][0]


def night_with_gaps(tmp_path: Path, emu) -> cfg.MirrorConfig:
    """A mirror after one night, then a new hour upstream and two files lost on disk."""
    config = make_mirror(tmp_path / "m", emu.url)
    first = update_mirror(config, emu.url, options())
    assert first.exit_code == 0, first.render()
    for path in sorted(Path(config.data_root).rglob("*.fits"))[2:4]:
        path.unlink()
    emu.world.next_night(seconds=3600)
    return config


def plan_of(summary) -> list[tuple[str, int]]:
    return [(q["recordset"], q["records"]) for q in summary.plan]


def assert_unchanged(config, before_tree, before_hash, before_runs, exports, emu) -> None:
    assert tree(config) == before_tree
    assert digest(config.catalog_path) == before_hash
    assert not Path(str(config.catalog_path) + ".wal").exists()
    assert runs(config) == before_runs
    assert len(emu.exports.store.all()) == exports


@pytest.mark.parametrize("sync", [False, True], ids=["catalog-only", "with-sync"])
def test_dry_run_changes_nothing_and_its_plan_is_what_the_real_run_does(tmp_path, emu, sync):
    config = night_with_gaps(tmp_path, emu)
    before = (tree(config), digest(config.catalog_path), runs(config), len(emu.exports.store.all()))
    dry = update_mirror(config, emu.url, options(dry_run=True, sync=sync))
    assert_unchanged(config, *before, emu)
    assert dry.dry_run and dry.exit_code == 0
    assert dry.gaps["missing"] >= 2 and dry.planned_records == dry.gaps["missing"]
    assert dry.planned_bytes == sum(q["est_bytes"] for q in dry.plan) > 0
    assert bool(dry.sync) == sync and (dry.sync.get("new", 0) > 0) == sync
    assert dry.verify["files"] >= 1 and "would verify" in dry.render()
    text = dry.render()
    assert "(dry run)" in text and all(q["recordset"] in text for q in dry.plan)
    if not sync:
        assert dry.jsoc_requests == 0
    real = update_mirror(config, emu.url, options(sync=sync))
    assert real.exit_code == 0, real.render()
    assert plan_of(real) == plan_of(dry) and real.gaps == dry.gaps
    assert real.planned_bytes == dry.planned_bytes
    assert real.files_downloaded == dry.planned_records  # one segment per record here
    assert real.verify["files"] == dry.verify["files"]


def test_dry_run_of_a_new_mirror_with_sync_plans_everything_and_leaves_no_catalog(tmp_path, emu):
    config = make_mirror(tmp_path / "m", emu.url)
    config.catalog_path.unlink()
    before = tree(config)
    dry = update_mirror(config, emu.url, options(dry_run=True))
    assert tree(config) == before and not config.catalog_path.exists()
    assert dry.sync["new"] == 31 and dry.planned_records == 31 and dry.planned_queries == 2
    with pytest.raises(CatalogError, match="no catalog at .* nothing to plan from"):
        update_mirror(config, emu.url, options(dry_run=True, sync=False))
    assert tree(config) == before


def test_dry_run_refuses_to_migrate_and_says_so(tmp_path, emu):
    config = make_mirror(tmp_path / "m", emu.url)
    with Catalog(config.catalog_path) as catalog:  # as if written by a jsocmirror before 0020
        catalog.execute("DELETE FROM schema_migrations WHERE number = 20")
        catalog.execute("CHECKPOINT")
    before = (tree(config), digest(config.catalog_path))
    for sync in (False, True):  # stops before asking JSOC anything
        assert emu.world is not None
        with pytest.raises(CatalogError) as info:
            update_mirror(config, emu.url, options(dry_run=True, sync=sync))
        assert "needs migration 0020_export_requests" in str(info.value) and "dry run" in str(info.value)
        assert (tree(config), digest(config.catalog_path)) == before
    assert len(emu.exports.store.all()) == 0


def test_dry_run_waits_for_no_one_but_refuses_while_a_run_holds_the_mirror(tmp_path, emu):
    config = night_with_gaps(tmp_path, emu)
    holder = hold_lock(config.mirror_dir, 30, command="update")
    try:
        before = tree(config)
        with pytest.raises(LockedError, match="another jsocmirror run 'update'"):
            update_mirror(config, emu.url, options(dry_run=True, sync=False))
        assert tree(config) == before
    finally:
        holder.kill()
        holder.wait()
    assert update_mirror(config, emu.url, options(dry_run=True, sync=False)).gaps["missing"] == 2


def test_dry_run_of_a_data_root_not_made_yet_plans_every_file(tmp_path, emu):
    config = night_with_gaps(tmp_path, emu)
    config.data = "elsewhere"  # a new, empty data root: the real run would create it
    before = tree(config)
    dry = update_mirror(config, emu.url, options(dry_run=True, sync=False))
    assert tree(config) == before and not Path(config.data_root).exists()
    assert dry.scan == {"files": 0, "added": 0, "removed": 0} and dry.gaps["missing"] == dry.planned_records > 2
