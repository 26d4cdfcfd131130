"""Upgrading a mirror's catalog: a backup first, then the migrations, then the readers' copy.

``jsocmirror migrate`` (``migrate_mirror``) does it by hand; a writing command that opens a
catalog with pending migrations does the same by itself (``Catalog.__init__`` calls
``upgrade_file``), so a nightly job keeps running after ``pip install -U`` (docs/upgrading.md).

An upgrade of ``catalog.duckdb`` (checkpointed and closed, under the mirror's lock):

1. The backup: ``backups/catalog-schema<NNNN>-<UTC time>.duckdb`` beside the catalog, a hard
   link to the closed file (a copy where links are not possible), fsynced. It is the catalog as
   it was, byte for byte, and opens with the jsocmirror that wrote it. A newest backup of the same
   schema that already holds those bytes (a failed upgrade retried each night) serves again.
2. The migrations run on a working copy (``.catalog.duckdb.migrating-<pid>``), each in its own
   transaction, and the copy replaces ``catalog.duckdb`` by one rename only when all of them
   succeeded; from then on the backup's file is the old catalog's alone.
3. If one fails, the working copy is deleted and ``catalog.duckdb`` is still the old file (made a
   file of its own again, so later writes never reach the backup); the backup stays.
"""

from __future__ import annotations

import filecmp
import logging
import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from jsocmirror.catalog import Catalog, MigrationError
from jsocmirror.errors import CatalogError, JsocMirrorError

log = logging.getLogger("jsocmirror.upgrade")

BACKUPS = "backups"


@dataclass
class Upgrade:
    """What one upgrade of a catalog file did."""

    catalog: str
    from_schema: int
    to_schema: int
    backup: str
    applied: list[str] = field(default_factory=list)


@dataclass
class MigrateResult:
    """What ``jsocmirror migrate`` found and did."""

    catalog: str
    from_schema: int
    to_schema: int
    pending: list[str]  # what this jsocmirror has and the catalog lacked
    dry_run: bool
    backups: str  # the folder backups go to
    applied: list[str] = field(default_factory=list)
    backup: str | None = None
    generation: int | None = None  # the readers' copy published afterwards
    read_root: str | None = None


def backups_dir(catalog_path: str | Path) -> Path:
    """Where a catalog's backups go: ``backups/`` beside it (in the mirror directory by default)."""
    return Path(catalog_path).parent / BACKUPS


def upgrade_file(path: str | Path, from_schema: int) -> Upgrade:
    """Back up the closed, checkpointed catalog at ``path``, then migrate it (see the module doc)."""
    path = Path(path)
    if Path(f"{path}.wal").exists():  # a checkpoint on close leaves none: something else has it open
        raise CatalogError(f"cannot upgrade {path}: its write-ahead log {path}.wal is still there")
    backup = _write_backup(path, from_schema)
    work = path.with_name(f".{path.name}.migrating-{os.getpid()}")
    try:
        _copy_synced(path, work)
        with Catalog(work, migrate=False) as catalog:
            applied = catalog.migrate()
            catalog.record_meta()
            to_schema = catalog.schema_version()
            catalog.execute("CHECKPOINT")
        _fsync(work)
        os.replace(work, path)
        _fsync(path.parent)
    except BaseException as exc:
        for leftover in (work, Path(f"{work}.wal")):
            leftover.unlink(missing_ok=True)
        kept = f"its backup {backup} stays" if _detach(path, backup) else "no backup was kept"
        if isinstance(exc, MigrationError):
            raise CatalogError(f"migration {exc.migration} failed: {exc.reason}; {path} is as it was "
                               f"(schema {from_schema:04d}) and {kept}") from None
        if isinstance(exc, OSError):
            raise CatalogError(f"cannot upgrade {path}: {exc.strerror or exc}; it is as it was and {kept}") from None
        raise
    return Upgrade(str(path), from_schema, to_schema, str(backup), applied)


def migrate_mirror(config, *, dry_run: bool = False, wait: float = 0.0) -> MigrateResult:
    """``jsocmirror migrate``: under the mirror's lock, back up, migrate and republish the catalog."""
    from jsocmirror.lock import mirror_lock
    from jsocmirror.publish import publish

    path = Path(config.catalog_path)
    if not path.exists():
        raise CatalogError(f"no catalog at {path}; run 'jsocmirror init'")
    if not dry_run:
        _require_writable(path)
    with mirror_lock(config.mirror_dir, "migrate", wait=wait):
        with Catalog(path, read_only=dry_run, migrate=False) as catalog:
            schema, pending = catalog.schema_version(), list(catalog.pending)
            if pending and not dry_run:  # a crashed run's write-ahead log into the file: the backup is whole
                catalog.execute("CHECKPOINT")
        result = MigrateResult(str(path), schema, schema, pending, dry_run, str(backups_dir(path)))
        if not pending or dry_run:
            return result
        if schema:
            upgrade = upgrade_file(path, schema)
            result.backup, result.applied = upgrade.backup, upgrade.applied
        else:  # a catalog with no migration at all has nothing to back up: the open below migrates it
            result.applied = pending
        with Catalog(path) as catalog:
            result.to_schema = catalog.schema_version()
            published = publish(catalog, config)
        result.generation, result.read_root = published.generation, published.root
    return result


def _require_writable(path: Path) -> None:
    """A one-line refusal before the lock or any backup, for a user who may only read the mirror."""
    for target in (path.parent, path):
        if not os.access(target, os.W_OK):
            raise JsocMirrorError(f"cannot migrate {path}: {target} is not writable by this user "
                                  "(run 'jsocmirror migrate' as the mirror's owner)")
    backups = backups_dir(path)
    if backups.exists() and not os.access(backups, os.W_OK):
        raise JsocMirrorError(f"cannot migrate {path}: its backup folder {backups} is not writable by this user")


def _write_backup(path: Path, schema: int) -> Path:
    folder = backups_dir(path)
    try:
        folder.mkdir(exist_ok=True)
        earlier = _earlier_backup(path, folder, schema)
        if earlier is not None:
            log.info("%s is unchanged since its backup %s (a retried upgrade): no new backup", path, earlier)
            return earlier
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        target = folder / f"{path.stem}-schema{schema:04d}-{stamp}.duckdb"
        n = 1
        while target.exists():  # a second upgrade within the same second (a retry)
            target = folder / f"{path.stem}-schema{schema:04d}-{stamp}-{n}.duckdb"
            n += 1
        try:
            os.link(path, target)
        except OSError:  # a filesystem without hard links: a copy, renamed into place when whole
            tmp = folder / f".{target.name}.tmp"
            _copy_synced(path, tmp)
            os.replace(tmp, target)
        _fsync(target)
        _fsync(folder)
    except OSError as exc:
        raise CatalogError(f"cannot write a backup of {path} to {folder}: {exc.strerror or exc}; "
                           "the catalog is unchanged") from None
    log.info("backed up %s (schema %04d) to %s", path, schema, target)
    return target


def _earlier_backup(path: Path, folder: Path, schema: int) -> Path | None:
    """The newest backup of this schema, if it holds the catalog's very bytes: a writing command that
    meets a failing migration every night then keeps one backup, not one more each night."""
    newest = sorted(folder.glob(f"{path.stem}-schema{schema:04d}-*.duckdb"), key=lambda p: p.stat().st_mtime)[-1:]
    if newest and newest[0].stat().st_size == path.stat().st_size and filecmp.cmp(path, newest[0], shallow=False):
        return newest[0]
    return None


def _detach(path: Path, backup: Path) -> bool:
    """After a failed upgrade: the catalog as a file of its own again, so its next writes spare the backup.

    False when that failed (a full disk): the backup, still the catalog's own file, is removed
    rather than left to drift with the catalog's next writes.
    """
    try:
        if not os.path.samefile(path, backup):
            return True
        tmp = path.with_name(f".{path.name}.restore-{os.getpid()}")
        try:
            _copy_synced(backup, tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        _fsync(path.parent)
        return True
    except OSError as exc:
        log.warning("could not copy %s apart from its backup (%s): backup removed", path, exc.strerror or exc)
        backup.unlink(missing_ok=True)
        return False


def _copy_synced(source: Path, target: Path) -> None:
    shutil.copyfile(source, target)
    _fsync(target)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
