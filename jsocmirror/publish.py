"""The readers' copy of the catalog: Parquet files behind a small views-only DuckDB file.

DuckDB lets one process write a database file, and a read-only connection locks the file
against that writer, so readers cannot share the writer's ``catalog.duckdb``. After every
committed step the writer *publishes* instead:

    <read>/catalog.duckdb           views only (one per catalog table and view), opened read-only
    <read>/manifest.json            generation, time, and every table's Parquet files
    <read>/mirror.json              the config a reader needs (data root, series entries)
    <read>/tables/<table>/<part>.g<generation>.parquet
    <read>/gens/<generation>.duckdb the views file of each generation still kept

Keyword tables are split by calendar month of their first time prime key, ``local_files`` and
``file_checks`` by the first three folders of the path (series/year/month in the default
layouts), the other tables are one part each. A part is written again only when its fingerprint
(row count and a hash of the columns every change touches) moved, so publishing costs what
changed, not what exists. New files get new names and ``catalog.duckdb`` is replaced by one
rename, so a reader sees one whole generation or the one before, never a mix; a reader that
keeps an old generation open keeps reading it. Superseded files are removed once no reader
holds their generation's views file (DuckDB keeps a read lock on it while a connection is
open) and it is older than ``KEEP_SECONDS``; on object storage, where there are no locks,
age alone decides.

The writer's own file is never touched by a reader, so neither waits for the other.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import struct
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from jsocmirror.catalog import Catalog, quote_ident, series_slug
from jsocmirror.errors import CatalogError

log = logging.getLogger("jsocmirror.publish")

READ_DB = "catalog.duckdb"
ROWID = "_rowid"  # local_files' stored row number (the view calls it rowid)
MANIFEST = "manifest.json"
MIRROR_INFO = "mirror.json"
FORMAT = 1

#: How long a superseded generation is kept at least: readers that hold no lock (pyarrow or
#: polars reading the manifest's files) get this long to finish a query.
KEEP_SECONDS = 3600.0

#: DuckDB's memory for a publish of its own (measured: a 0.1% night of a 10M-row catalog took
#: +650 MB with DuckDB's default of 80% of RAM, +430 MB under this limit, in the same time).
PUBLISH_MEMORY = "400MB"

#: Connections writing parts at once in a publish of its own (the machine has two cores).
PART_WRITERS = 2

#: The columns every change of a keyword-table row touches: sync rewrites ``_synced_at`` on each
#: row it stores and marks deletions in ``_gone_at``; a new or reprocessed record has a new
#: ``_recnum`` (JSOC never reuses one), so ``_key`` adds nothing. Hashing these alone is what
#: makes an unchanged 10M-row catalog cheap to check (all 64 columns cost ~3x more).
KEYWORD_FINGERPRINT = ("_recnum", "_sunum", "_online", "_size", "_prev_recnum", "_gone_at", "_synced_at")


@dataclass
class PublishResult:
    generation: int
    root: str
    changed: bool  # False: nothing moved since the last generation, nothing was written
    parts_written: int = 0
    rows_written: int = 0
    parts_kept: int = 0
    files_removed: int = 0
    seconds: float = 0.0
    tables: dict[str, int] = field(default_factory=dict)  # table -> parts written


@dataclass(frozen=True)
class _Part:
    table: str
    name: str  # 2024-06, hmi_m_720s_2024_06, all, none
    where: str  # SQL selecting the part's rows
    key: Any  # the part key as the partitioning SQL gives it (None for a table's one part)
    fingerprint: str
    rows: int


# -- the location ------------------------------------------------------------------------------
class _Store:
    """Where a generation's files go: a local directory, or an fsspec location (object storage)."""

    def __init__(self, root: str, storage_options: dict | None = None):
        self.url = root
        if "://" in root and not root.startswith("file://"):
            from jsocmirror.scan import open_root  # fsspec and friends: only for object storage

            self.fs, self.root = open_root(root, storage_options)
        else:
            self.fs, self.root = None, os.path.abspath(os.path.expanduser(root.removeprefix("file://")))
        self.local = self.fs is None
        self._made: set[str] = set()

    def path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts]) if not self.local else os.path.join(self.root, *parts)

    def makedirs(self, path: str) -> None:
        if path in self._made:  # once per folder and publish (on S3 each call is a request)
            return
        if self.local:
            os.makedirs(path, exist_ok=True)
        else:
            self.fs.makedirs(path, exist_ok=True)
        self._made.add(path)

    def read_text(self, path: str) -> str | None:
        try:
            if self.local:
                return Path(path).read_text(encoding="utf-8")
            with self.fs.open(path, "r", encoding="utf-8") as fh:
                return fh.read()
        except FileNotFoundError:
            return None

    def put(self, local_file: str, path: str) -> None:
        """Move a finished local file to ``path`` (rename locally, upload on object storage)."""
        if self.local:
            os.replace(local_file, path)
        else:
            self.fs.put_file(local_file, path)
            os.unlink(local_file)

    def write_text(self, path: str, text: str, tmp_dir: str) -> None:
        fd, tmp = tempfile.mkstemp(dir=tmp_dir, prefix=".publish-", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        self.put(tmp, path)

    def listing(self, path: str) -> list[tuple[str, float]]:
        """(path, mtime) of every file under ``path``."""
        out = []
        if self.local:
            for dirpath, _dirs, files in os.walk(path):
                for name in files:
                    full = os.path.join(dirpath, name)
                    try:
                        out.append((full, os.stat(full).st_mtime))
                    except FileNotFoundError:
                        continue
            return out
        try:  # a fresh listing: s3fs's find never answers from its cache
            found = self.fs.find(path, detail=True)
        except FileNotFoundError:
            return out
        for name, info in found.items():
            if info.get("type") == "directory":
                continue
            out.append((name, _stamp(info)))
        return out

    def remove(self, path: str) -> None:
        try:
            if self.local:
                os.unlink(path)
            else:
                self.fs.rm_file(path)
        except FileNotFoundError:
            pass

    def url_of(self, path: str) -> str:
        """What a views file names a data file by: an absolute path, or a full URL."""
        if self.local:
            return path
        return self.fs.unstrip_protocol(path)


def _stamp(info: dict) -> float:
    """An fsspec listing entry's modification time (S3 ``LastModified``, gcsfs ``updated``, ``mtime``).

    Unknown: infinitely young, so the collector keeps the file rather than remove one a publish
    in progress may have just written.
    """
    for name in ("LastModified", "mtime", "updated", "created"):
        stamp = info.get(name)
        if stamp is None:
            continue
        if isinstance(stamp, str):
            try:
                stamp = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
            except ValueError:
                continue
        if isinstance(stamp, datetime):
            return (stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)).timestamp()
        try:
            return float(stamp)
        except (TypeError, ValueError):
            continue
    return float("inf")


# -- partitions and fingerprints ----------------------------------------------------------------
def _tables(catalog: Catalog) -> list[str]:
    return [r[0] for r in catalog.q("publish_tables").fetchall()]


def _time_column(columns: dict[str, str]) -> str | None:
    """The first time prime key of a keyword table: the column X that has an ``X_str`` twin."""
    for name in columns:
        if name.endswith("_str") and columns.get(name[:-4]) == "TIMESTAMP":
            return name[:-4]
    return None


def _partitioning(table: str, columns: dict[str, str]) -> tuple[str, Callable[[Any], str], tuple[str, ...]]:
    """(SQL of the part key, part key -> SQL condition, fingerprint columns) of a table."""
    if table.startswith("kw_") and (col := _time_column(columns)) is not None:
        c = quote_ident(col)

        def month_where(month: Any) -> str:
            if month is None:
                return f"{c} IS NULL"
            nxt = f"{month.year + (month.month == 12):04d}-{month.month % 12 + 1:02d}-01"
            return f"{c} >= TIMESTAMP '{month:%Y-%m}-01' AND {c} < TIMESTAMP '{nxt}'"

        fp = tuple(n for n in KEYWORD_FINGERPRINT if n in columns)
        # the raw month, formatted in Python for the few parts: strftime on every row cost 3x the hash
        return f"date_trunc('month', {c})", month_where, fp
    if table in _FOLDER_PARTS:
        # by the first three folders of the path (series/year/month in the default layouts), so a
        # night of landed files rewrites the new month's part, not the inventory
        key = _folder_key(table)
        return key, lambda prefix: f"{key} = {_literal(prefix)}", tuple(columns)
    return "'all'", lambda part: "TRUE", tuple(columns)


#: Tables split by the folders of their files' paths: table -> the column holding the path.
_FOLDER_PARTS = {"local_files": "path", "file_checks": "path"}


def _folder_key(table: str, alias: str = "") -> str:
    """Up to three leading folders of a row's path ('' for a file at the root): never the file name."""
    column = f"{alias}.{_FOLDER_PARTS[table]}" if alias else _FOLDER_PARTS[table]
    return f"regexp_extract({column}, '^([^/]*(/[^/]*){{0,2}})/', 1)"


def _literal(text: str) -> str:
    return "'" + str(text).replace("'", "''") + "'"


def _part_name(table: str, key: Any) -> str:
    if table.startswith("kw_"):
        return "none" if key is None else f"{key:%Y-%m}"
    if table in _FOLDER_PARTS:
        return series_slug(str(key)) or "_root"
    return str(key)


def _fingerprints(catalog: Catalog, table: str) -> list[_Part]:
    columns = catalog.table_columns(table)
    key_sql, where_of, fp_cols = _partitioning(table, columns)
    schema = ",".join(f"{n}:{t}" for n, t in columns.items())
    hashed = ", ".join(quote_ident(c) for c in fp_cols)
    # hash(a, b, c) XORs its last column's hash in, so a bit_xor of it over rows cancels a value an
    # even number of rows share (two records synced again at once looked unchanged): hash it again.
    rows = catalog.execute(
        f"SELECT {key_sql} AS part, count(*), bit_xor(hash(hash({hashed}))) FROM {quote_ident(table)} GROUP BY ALL"
    ).fetchall()
    parts = [_Part(table, _part_name(table, key), where_of(key), key, f"{schema}|{n}|{h}", n) for key, n, h in rows]
    if not parts:  # an empty table still needs one (empty) file: its schema
        parts.append(_Part(table, "all", "FALSE", None, f"{schema}|0|0", 0))
    names = [p.name for p in parts]
    if len(set(names)) != len(names):  # two folders with one slug: fall back to one part
        parts = [_Part(table, "all", "TRUE", None, f"{schema}|" + "|".join(sorted(p.fingerprint for p in parts)),
                       sum(p.rows for p in parts))]
    return sorted(parts, key=lambda p: p.name)


# -- publishing --------------------------------------------------------------------------------
def publish(catalog: Catalog, config, *, force: bool = False, storage_options: dict | None = None,
            memory_limit: str | None = PUBLISH_MEMORY) -> PublishResult:
    """Make the catalog's committed state the readers' current generation (see the module doc).

    ``memory_limit`` bounds DuckDB while it publishes (it spills beyond). DuckDB's settings are
    the process's, so a publish beside a running writer passes None and shares the writer's.
    """
    start = time.perf_counter()
    if storage_options is None:
        storage_options = config.storage_options()
    store = _Store(config.read_root, storage_options)
    try:  # (a publish only reads the catalog and ends with a rollback: no commit, so no step)
        if memory_limit is None:  # beside a running writer: one snapshot, one connection
            return _publish(catalog, config, store, force=force, start=start, writers=1)
        with catalog.setting("memory_limit", memory_limit):
            return _publish(catalog, config, store, force=force, start=start, writers=PART_WRITERS)
    except OSError as exc:
        raise CatalogError(f"cannot publish the readers' catalog to {config.read_root}: "
                           f"{exc.strerror or exc}") from None


class Publisher:
    """Publishes a writer's committed steps while it goes on writing.

    ``attach`` makes every commit of the catalog a step. Steps only wake a thread that publishes
    from a cursor of its own (a DuckDB snapshot of the last commit), so the writer never waits
    for a publish; it publishes at most every ``interval`` seconds and at most a tenth of the
    time, so a long first sync spends under ~10% of a core on it. ``finish`` publishes whatever
    is left and stops the thread. A failed publish is logged and retried at the next step (the
    writer's work is safe in its own file); a failed ``finish`` raises.
    """

    def __init__(self, catalog: Catalog, config, *, interval: float = 2.0):
        self.catalog, self.config, self.interval = catalog, config, interval
        self._cost = 0.0  # seconds the last background publish took
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None

    def attach(self) -> Publisher:
        self.catalog.after_commit = self.step
        self.catalog.publisher = self
        self._thread = threading.Thread(target=self._run, name="jsocmirror-publish", daemon=True)
        self._thread.start()
        return self

    def step(self) -> None:
        self._wake.set()

    def finish(self) -> PublishResult:
        """Stop stepping, then publish everything committed so far (in the caller's thread)."""
        self.catalog.after_commit = self.catalog.publisher = None
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        return publish(self.catalog, self.config)

    def _run(self) -> None:
        cursor = self.catalog.cursor()
        try:
            while True:
                self._wake.wait()
                if self._stop:
                    return
                self._wake.clear()
                try:  # beside the writer: its DuckDB settings (sync's bulk_load limit) hold
                    self._cost = publish(cursor, self.config, memory_limit=None).seconds
                except Exception as exc:  # the writer goes on; the next step tries again
                    log.warning("%s (readers keep the previous generation; retrying at the next step)", exc)
                pause = max(self.interval, 9 * self._cost)
                deadline = time.monotonic() + pause
                while not self._stop and time.monotonic() < deadline:
                    time.sleep(min(0.05, pause))
        finally:
            cursor.close()


def _publish(catalog: Catalog, config, store: _Store, *, force: bool, start: float, writers: int) -> PublishResult:
    previous = _load_manifest(store)
    old_parts = {} if force or previous.get("root") != store.url else previous.get("tables", {})
    mirror_info = _mirror_info(config)
    tmp_dir = config.scratch_dir()
    catalog.begin()  # one snapshot: every part and view of a generation comes from one committed state
    try:
        parts = {table: _fingerprints(catalog, table) for table in _tables(catalog)}
        views = _views(catalog)
        fingerprints = {t: {p.name: p.fingerprint for p in ps} for t, ps in parts.items()}
        unchanged = not force and previous.get("format") == FORMAT and previous.get("views") == views \
            and previous.get("mirror") == mirror_info and fingerprints == _fingerprints_of(old_parts)
        if unchanged and _current_exists(store):
            return PublishResult(previous["generation"], store.url, False, parts_kept=sum(map(len, parts.values())),
                                 seconds=time.perf_counter() - start)
        result = PublishResult(_next_generation(store, previous), store.url, True)
        tables = {table: _table_files(catalog, store, table_parts, old_parts.get(table, {}), result, tmp_dir,
                                      writers)
                  for table, table_parts in parts.items()}
    finally:
        catalog.rollback()  # it only read
    manifest = {"format": FORMAT, "generation": result.generation, "root": store.url,
                "published_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "views": views, "mirror": mirror_info, "tables": tables}
    _write_generation(store, manifest, tmp_dir)
    result.files_removed = collect_garbage(store, manifest)
    result.seconds = time.perf_counter() - start
    log.info("published generation %d to %s: %d parts written (%d rows), %d kept, %.2f s", result.generation,
             store.url, result.parts_written, result.rows_written, result.parts_kept, result.seconds)
    return result


def _fingerprints_of(tables: dict) -> dict[str, dict[str, str]]:
    return {t: {name: info["fingerprint"] for name, info in ps.items()} for t, ps in tables.items()}


def _table_files(catalog: Catalog, store: _Store, parts: list[_Part], old: dict[str, dict],
                 result: PublishResult, tmp_dir: str, writers: int = 1) -> dict[str, dict]:
    """The files of a table's parts: the previous generation's where the fingerprint held, new ones elsewhere.

    Each part name keeps a number (``id``) for as long as it exists, so the row numbers stored in
    its file never meet another part's within a generation.
    """
    out: dict[str, dict] = {}
    changed: list[tuple[_Part, int]] = []
    next_id = max((info.get("id", -1) for info in old.values()), default=-1) + 1
    for part in parts:
        kept = old.get(part.name)
        if kept is not None and kept["fingerprint"] == part.fingerprint:
            out[part.name] = kept
            result.parts_kept += 1
            continue
        if kept is not None and "id" in kept:
            part_id = kept["id"]
        else:
            part_id, next_id = next_id, next_id + 1
        changed.append((part, part_id))
    if len(changed) > 1 and changed[0][0].table in _FOLDER_PARTS and changed[0][0].key is not None:
        # a folder key is no range a scan can skip to: one pass writes every changed part
        out.update(_write_folder_parts(catalog, store, changed, result.generation, tmp_dir))
    elif writers > 1 and len(changed) > 1:
        out.update(_write_parts_in_parallel(catalog, store, changed, result.generation, tmp_dir, writers))
    else:
        out.update({part.name: _write_part(catalog, store, part, result.generation, part_id, tmp_dir)
                    for part, part_id in changed})
    for part, _ in changed:
        result.parts_written += 1
        result.rows_written += part.rows
        result.tables[part.table] = result.tables.get(part.table, 0) + 1
    return dict(sorted(out.items()))


def _write_parts_in_parallel(catalog: Catalog, store: _Store, changed: list[tuple[_Part, int]], generation: int,
                             tmp_dir: str, writers: int) -> dict[str, dict]:
    """Parts written by ``writers`` connections at once: a part of a month is one COPY that DuckDB
    writes on one core, so two at a time use both (measured: 12 months 0.78 s -> 0.48 s).

    Only for a publish of its own: each connection has its own transaction, which sees the same
    state as the caller's only because nothing commits meanwhile (the writer is the caller).
    """
    from concurrent.futures import ThreadPoolExecutor

    local = threading.local()
    cursors: list[Catalog] = []
    guard = threading.Lock()

    def write(job: tuple[_Part, int]) -> tuple[str, dict]:
        if not hasattr(local, "catalog"):
            local.catalog = catalog.cursor()
            local.catalog.begin()
            with guard:
                cursors.append(local.catalog)
        part, part_id = job
        return part.name, _write_part(local.catalog, store, part, generation, part_id, tmp_dir)

    try:
        with ThreadPoolExecutor(max_workers=writers, thread_name_prefix="jsocmirror-publish-part") as pool:
            return dict(pool.map(write, changed))
    finally:
        for cursor in cursors:
            cursor.rollback()
            cursor.close()


def _write_folder_parts(catalog: Catalog, store: _Store, changed: list[tuple[_Part, int]], generation: int,
                        tmp_dir: str) -> dict[str, dict]:
    """Every changed part of a folder-split table in one scan (``COPY ... PARTITION_BY`` the part id)."""
    import pyarrow as pa

    table = changed[0][0].table
    ids = pa.table({"_jm_key": pa.array([p.key for p, _ in changed], pa.string()),
                    "_jm_id": pa.array([i for _, i in changed], pa.int64())})
    staging = os.path.join(tmp_dir, f".parts-{table}-{generation:06d}-{os.getpid()}")
    rowid = f", (k._jm_id::BIGINT << 31) + row_number() OVER (PARTITION BY k._jm_id) AS {ROWID}" \
        if table == "local_files" else ""
    catalog.con.register("_jm_part_ids", ids)
    try:
        catalog.execute(
            f"COPY (SELECT t.*{rowid}, k._jm_id FROM {quote_ident(table)} AS t "
            f"JOIN _jm_part_ids AS k ON {_folder_key(table, 't')} = k._jm_key) TO {_literal(staging)} (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (_jm_id), "
            "OVERWRITE_OR_IGNORE true)")
    finally:
        catalog.con.unregister("_jm_part_ids")
    store.makedirs(store.path("tables", table))
    out = {}
    try:
        for part, part_id in changed:
            written = sorted(Path(staging, f"_jm_id={part_id}").glob("*.parquet"))
            if len(written) != 1:  # DuckDB split it, or wrote none (no rows): the one-part way
                out[part.name] = _write_part(catalog, store, part, generation, part_id, tmp_dir)
                continue
            name = f"{part.name}.g{generation:06d}.parquet"
            store.put(str(written[0]), store.path("tables", table, name))
            out[part.name] = {"file": f"tables/{table}/{name}", "fingerprint": part.fingerprint,
                              "rows": part.rows, "id": part_id}
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _write_part(catalog: Catalog, store: _Store, part: _Part, generation: int, part_id: int, tmp_dir: str) -> dict:
    folder = store.path("tables", part.table)
    store.makedirs(folder)
    name = f"{part.name}.g{generation:06d}.parquet"
    final = store.path("tables", part.table, name)
    local = final if store.local else os.path.join(tmp_dir, name)
    extra = ""
    if part.table == "local_files":
        # The diff names files by rowid, which a Parquet scan lacks: (part id, row) stored with the rows.
        extra = f", ({int(part_id)}::BIGINT << 31) + row_number() OVER () AS {ROWID}"
    catalog.execute(f"COPY (SELECT *{extra} FROM {quote_ident(part.table)} WHERE {part.where}) "
                    f"TO {_literal(local)} (FORMAT parquet, COMPRESSION zstd)")
    if not store.local:
        store.put(local, final)
    return {"file": f"tables/{part.table}/{name}", "fingerprint": part.fingerprint, "rows": part.rows, "id": part_id}


def _views(catalog: Catalog) -> dict[str, str]:
    """The writer's own views (``hmi_m_720s``, ``hmi_m_720s_files``): name -> CREATE VIEW text."""
    return {name: sql for name, sql in catalog.q("publish_views").fetchall()}


def _mirror_info(config) -> dict:
    """What a reader elsewhere needs of the config: where the files are and what is mirrored."""
    return {"data_root": config.data_root,
            "series": [{"series": e.series, "segments": list(e.segments), "start": e.start, "end": e.end,
                        "cadence": e.cadence, "keys": {k: list(v) for k, v in e.keys.items()},
                        "filter": e.filter, "keywords": e.keywords, "layout": e.layout,
                        # retention changes what is wanted; only when set, so older readers still load it
                        **{k: getattr(e, k) for k in ("keep", "max_bytes") if getattr(e, k) is not None}}
                       for e in config.series]}


def _load_manifest(store: _Store) -> dict:
    text = store.read_text(store.path(MANIFEST))
    if not text:
        return {}
    try:
        manifest = json.loads(text)
    except ValueError:
        log.warning("the readers' manifest in %s is unreadable; publishing every table again", store.url)
        return {}
    return manifest if isinstance(manifest, dict) else {}


def _current_exists(store: _Store) -> bool:
    if store.local:
        return os.path.exists(store.path(READ_DB))
    return store.fs.exists(store.path(READ_DB))


_GEN_RE = re.compile(r"^(\d{6,})\.(duckdb|json)$")


def _next_generation(store: _Store, previous: dict) -> int:
    """One past every generation that exists or existed (a crash may have left a newer one)."""
    seen = [int(previous.get("generation", 0))]
    for path, _ in store.listing(store.path("gens")):
        match = _GEN_RE.match(os.path.basename(path))
        if match:
            seen.append(int(match[1]))
    return max(seen) + 1


def _write_generation(store: _Store, manifest: dict, tmp_dir: str) -> None:
    """The views file of the generation, then the switch: ``catalog.duckdb`` and ``manifest.json``."""
    generation = manifest["generation"]
    store.makedirs(store.path("gens"))
    local_db = os.path.join(tmp_dir, f".gen-{generation:06d}-{os.getpid()}.duckdb")
    build_views_file(local_db, manifest, lambda rel: store.url_of(store.path(*rel.split("/"))), store.fs)
    gen_db = store.path("gens", f"{generation:06d}.duckdb")
    text = json.dumps(manifest, indent=1, sort_keys=True)
    store.write_text(store.path("gens", f"{generation:06d}.json"), text, tmp_dir)
    if store.local:
        os.replace(local_db, gen_db)
        # catalog.duckdb is a second name of the generation's file: readers lock that inode, and
        # the collector can then ask gens/<n>.duckdb whether anyone still holds it.
        link = store.path(f".{READ_DB}.{generation:06d}.tmp")
        if os.path.lexists(link):
            os.unlink(link)
        os.link(gen_db, link)
        os.replace(link, store.path(READ_DB))
        from jsocmirror.download import _fsync_dir  # the downloader's: the renames survive a crash

        _fsync_dir(store.root)
    else:
        store.fs.put_file(local_db, gen_db)
        store.put(local_db, store.path(READ_DB))
    store.write_text(store.path(MIRROR_INFO), json.dumps(manifest["mirror"], indent=1), tmp_dir)
    store.write_text(store.path(MANIFEST), text, tmp_dir)


def build_views_file(path: str, manifest: dict, locate: Callable[[str], str], filesystem: Any = None) -> None:
    """A DuckDB file holding only views: one per table over its Parquet files, then the writer's views.

    ``filesystem`` (fsspec) is what DuckDB reads the parts through when ``locate`` gives URLs:
    creating a view binds it, which reads the files' schemas.
    """
    import duckdb

    for leftover in (path, path + ".wal"):
        if os.path.exists(leftover):
            os.unlink(leftover)
    con = duckdb.connect(path)
    if filesystem is not None:
        con.register_filesystem(filesystem)
    try:
        for table, parts in sorted(manifest["tables"].items()):
            files = [locate(info["file"]) for _, info in sorted(parts.items())]
            con.execute(f"CREATE VIEW {quote_ident(table)} AS {_table_select(table, files)}")
        _create_views(con, manifest["views"])
        con.execute("CREATE VIEW jsocmirror_publication AS SELECT "
                    f"{int(manifest['generation'])} AS generation, "
                    f"TIMESTAMP '{manifest['published_at'].replace('T', ' ').rstrip('Z')}' AS published_at")
        con.execute("CHECKPOINT")
    finally:
        con.close()


def _table_select(table: str, files: list[str]) -> str:
    listed = "[" + ", ".join(_literal(f) for f in files) + "]"
    if table != "local_files":
        return f"SELECT * FROM read_parquet({listed})"
    return f"SELECT * EXCLUDE ({ROWID}), {ROWID} AS rowid FROM read_parquet({listed})"


def _create_views(con, views: dict[str, str]) -> None:
    """The writer's views, in an order where each one's dependencies exist first."""
    pending = dict(views)
    while pending:
        progress = False
        for name, sql in list(pending.items()):
            try:
                con.execute(sql)
            except Exception:  # a view it selects from is not created yet
                continue
            del pending[name]
            progress = True
        if not progress:
            log.warning("views not published (they refer to something the readers' copy lacks): %s",
                        ", ".join(sorted(pending)))
            return


# -- garbage collection ------------------------------------------------------------------------
#: Probe descriptors of generations still in use, kept open: closing a descriptor of a file
#: drops every POSIX lock this process holds on it (DuckDB's own read lock of an in-process reader).
_probes: dict[str, int] = {}


def in_use(path: str) -> bool:
    """True if some connection (in any process, this one included) holds DuckDB's lock on ``path``.

    An open-file-description write lock conflicts with DuckDB's POSIX read lock even within one
    process; it is released at once when it was granted.
    """
    fd = _probes.get(path)
    if fd is None:
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return False
        except OSError:
            return True  # cannot tell: keep it
    lock_cmd = getattr(fcntl, "F_OFD_SETLK", fcntl.F_SETLK)
    try:
        fcntl.fcntl(fd, lock_cmd, struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0))
    except OSError:
        _probes[path] = fd
        return True
    fcntl.fcntl(fd, lock_cmd, struct.pack("hhqqi4x", fcntl.F_UNLCK, os.SEEK_SET, 0, 0, 0))
    _probes.pop(path, None)
    os.close(fd)
    return False


def collect_garbage(store: _Store, manifest: dict, *, now: float | None = None,
                    keep_seconds: float = KEEP_SECONDS) -> int:
    """Remove superseded generations nobody can still read, and the data files only they used."""
    now = time.time() if now is None else now
    current = manifest["generation"]
    keep_files = {store.path(*info["file"].split("/")) for parts in manifest["tables"].values()
                  for info in parts.values()}
    removed = 0
    # generation -> when its record was written; a generation is superseded when the next one is
    published = {}
    for path, mtime in store.listing(store.path("gens")):
        match = _GEN_RE.match(os.path.basename(path))
        if match is not None and match[2] == "json":
            published[int(match[1])] = (path, mtime)
    superseded_at = now
    for generation in sorted(published, reverse=True):
        path, mtime = published[generation]
        if generation >= current:
            superseded_at = min(superseded_at, mtime)
            continue
        # a reader may have opened it until its successor was published, however old it is itself
        age, superseded_at = now - superseded_at, min(superseded_at, mtime)
        db = store.path("gens", f"{generation:06d}.duckdb")
        if age < keep_seconds or (store.local and in_use(db)):
            old = json.loads(store.read_text(path) or "{}")
            keep_files |= {store.path(*info["file"].split("/")) for parts in old.get("tables", {}).values()
                           for info in parts.values()}
            continue
        store.remove(db)
        store.remove(path)
        removed += 2
    for path, mtime in store.listing(store.path("tables")):
        # files of no kept generation; young ones may belong to a publish that is still writing
        if path not in keep_files and now - mtime >= keep_seconds:
            store.remove(path)
            removed += 1
    return removed


@contextmanager
def publishing(catalog: Catalog, config, *, interval: float = 2.0) -> Iterator[Publisher]:
    """Publish after each committed step of the block, and once more at its end.

    Inside another ``publishing`` block of the same catalog (update around sync) the outer
    publisher serves: the inner block's end is one more step of it. If the block fails, what it
    committed is still published (best effort: the block's own error is the one raised).
    """
    outer = catalog.publisher
    if outer is not None:
        yield outer
        outer.step()
        return
    publisher = Publisher(catalog, config, interval=interval).attach()
    try:
        yield publisher
    except BaseException:
        try:
            publisher.finish()
        except CatalogError as exc:
            log.warning("%s", exc)
        raise
    publisher.finish()
