"""The inventory of the data root: which files the mirror holds, into ``local_files``.

``scan_tree`` walks the root and records every file with its layout meaning (series, record
key, segment) or, for anything else, a state saying what it is (``unknown``, ``near_miss``,
``empty``, ``unreadable``, ``symlink_out``, ``special``). It never writes, moves or deletes
anything under the root, never follows a link out of it, and no single bad file stops it.

Local roots are walked with ``os.scandir`` (fsspec's ``find`` is ~10x slower, PERF_ANCHORS 4);
a re-scan lists again only the directories whose mtime changed (adding, removing or renaming
a file changes its directory's mtime), so an unchanged mirror re-scans in a fraction of the
time. Other roots (``s3://``, ``memory://``...) are listed through fsspec.

``verify=True`` then reads the headers of the layout files not verified since they last
changed (``fitsheader``): FITS structure, truncation, DATASUM over the data bytes, CHECKSUM,
the header's RECNUM, and that the header's prime keys agree with the path.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import logging
import os
import queue
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jsocmirror import drmstime, fitsheader
from jsocmirror.catalog import Catalog, quote_ident
from jsocmirror.errors import ScanError
from jsocmirror.layout import DirectoryMatcher, Layout, ParsedPath, directory_matcher

log = logging.getLogger("jsocmirror.scan")

#: Top-level entries of the data root that belong to the mirror itself, not to the data.
MIRROR_OWNED = frozenset({"_catalog"})
#: Temporary names the downloader writes before renaming (never data): skipped quietly.
TEMP_SUFFIXES = (".part", ".tmp")

#: Rows per DuckDB row group: a first scan inserts in multiples of it.
ROW_GROUP = 122880
#: Files gathered before a first scan hands them to its writer thread.
SINK_CHUNK = 100_000
STATES = ("layout", "unknown", "near_miss", "empty", "unreadable", "symlink_out", "special")
_URL_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


@dataclass
class ScanResult:
    """What one scan found and did (counts are of the whole inventory afterwards)."""

    root: str
    files: int = 0
    bytes: int = 0
    by_state: dict[str, int] = field(default_factory=dict)
    dirs_listed: int = 0
    dirs_unchanged: int = 0
    added: int = 0
    removed: int = 0
    skipped_temp: int = 0
    verified: int = 0
    by_verify_state: dict[str, int] = field(default_factory=dict)
    problems: list[tuple[str, str, str]] = field(default_factory=list)  # (path, state, why), first 1000
    elapsed: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["problems"] = [list(p) for p in self.problems]
        return out


# -- roots -------------------------------------------------------------------------------------
def open_root(root: str, storage_options: dict | None = None):
    """(filesystem or None, root path): None means a local directory walked with os.scandir."""
    if _URL_RE.match(root) and not root.startswith("file://"):
        import fsspec

        try:
            fs, path = fsspec.core.url_to_fs(root, **(storage_options or {}))
        except (ImportError, ValueError) as exc:
            raise ScanError(f"cannot open data root {root}: {exc}") from None
        return fs, path.rstrip("/")
    local = root[len("file://"):] if root.startswith("file://") else root
    return None, os.path.abspath(os.path.expanduser(local))


def _check_container(fs, root: str, root_path: str) -> None:
    """A missing prefix of an object store is an empty root (object stores have no directories: a
    new bucket prefix exists only once a file is under it); its bucket must exist, though."""
    container = root_path.strip("/").split("/", 1)[0]
    try:
        found = bool(container) and container != root_path.strip("/") and fs.exists(container)
    except OSError as exc:
        raise ScanError(f"cannot list data root {root}: {exc}") from None
    if not found:
        raise ScanError(f"data root {root} does not exist" + (f" (no bucket {container!r})" if container else ""))
    log.info("data root %s holds nothing yet (an empty prefix of bucket %s)", root, container)


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


# -- classification of one directory's names ----------------------------------------------------
class _Batch:
    """The files found, kept column-wise in runs per directory (becomes the Arrow table ``scan_batch``).

    Directory, series, state and problem are constant over a run, so they are stored once per
    run and expanded in C when the table is built; paths, keys and segments are extended in
    bulk, sizes and mtimes only by the runs that have them (a names-only scan has none).
    Per-file Python work stays at a few list operations (the scan's hot path).
    """

    def __init__(self, sink: Callable[[_Batch], None] | None = None, chunk: int | None = None,
                 fallback: Callable[[str, list[str], _Batch], int] | None = None):
        self.sink = sink  # when set, every ``chunk`` files go to it as a _Batch (and are forgotten here)
        self.chunk = chunk or SINK_CHUNK
        self.fallback = fallback  # classifies the names a deferred run's expression rejected
        self.total = 0
        self.skipped = 0  # rejected names that were temporary files (counted, not recorded)
        self._reset()

    def _reset(self) -> None:
        self.paths: list[str] = []
        self.keys: list[str | None] = []
        self.segs: list[str | None] = []
        self.stats: list[tuple[int, list | None, list | None]] = []  # (count, sizes, mtimes) per run
        self.has_stat = False
        self.runs: list[tuple[int, str, str | None, str, str | None]] = []  # (count, dir, series, state, problem)
        # whole directories whose names are matched later, off the walking thread:
        # (dir, series, matcher, the names joined by newlines, how many)
        self.deferred: list[tuple[str, str, DirectoryMatcher, str, int]] = []
        self.n = 0

    def add_many(self, dirpath, names, series, state, problem=None, keys=None, segs=None, sizes=None, mtimes=None):
        k = len(names)
        if not k:
            return
        self.paths.extend(map((dirpath + "/").__add__, names) if dirpath else names)
        if keys is None or segs is None:
            nones = [None] * k
        self.keys.extend(keys if keys is not None else nones)
        self.segs.extend(segs if segs is not None else nones)
        self.stats.append((k, sizes, mtimes))
        self.has_stat = self.has_stat or sizes is not None or mtimes is not None
        self.runs.append((k, dirpath, series, state, problem))
        self.n += k
        self.total += k
        if self.sink is not None and self.n >= self.chunk:
            self.flush()

    def add_deferred(self, dirpath: str, series: str, matcher: DirectoryMatcher, joined: str, k: int) -> None:
        """A directory's ``k`` names, joined by newlines (none has one), to match with ``matcher``
        when the table is built."""
        self.deferred.append((dirpath, series, matcher, joined, k))
        self.n += k
        self.total += k
        if self.sink is not None and self.n >= self.chunk:
            self.flush()

    def flush(self) -> None:
        """Hand the files gathered so far to the sink (which builds their table: ``table()``)."""
        if self.n:
            chunk = _Batch(fallback=self.fallback)
            chunk.paths, chunk.keys, chunk.segs, chunk.stats = self.paths, self.keys, self.segs, self.stats
            chunk.has_stat, chunk.runs, chunk.deferred, chunk.n = self.has_stat, self.runs, self.deferred, self.n
            self._reset()
            self.sink(chunk)

    def add(self, name, dirpath, series, key, seg, size, mtime, state, problem):
        self.add_many(dirpath, [name], series, state, problem, [key], [seg], [size], [mtime])

    def __len__(self) -> int:
        return self.total  # all files added, including those already handed to the sink

    def table(self) -> pa.Table:
        """The files as the Arrow table ``scan_batch`` (deferred runs matched now, in Arrow's C++)."""
        if self.deferred:
            deferred, self.deferred = self.deferred, []
            matched = _match_deferred(deferred, self)  # rejected names are added to self, eagerly
            return pa.concat_tables([matched, self.table()]) if self.runs else matched
        counts = np.array([r[0] for r in self.runs], dtype=np.int64)

        def expand(i: int) -> pa.Array:
            # per-run values as a dictionary column: DuckDB ingests it without re-reading each string
            ids: dict = {}
            run_ids = np.array([ids.setdefault(r[i], len(ids)) for r in self.runs], dtype=np.int32)
            dictionary = pa.array(list(ids), pa.string())
            indices = pa.array(np.repeat(run_ids, counts))
            if dictionary.null_count:
                indices = pc.if_else(pc.is_null(pc.take(dictionary, indices)), None, indices)
            return pa.DictionaryArray.from_arrays(indices, dictionary)

        def stat_column(i: int, kind: pa.DataType) -> pa.Array:
            if not self.has_stat:
                return pa.nulls(self.n, kind)
            values: list = []
            for run in self.stats:
                values.extend(run[i] if run[i] is not None else [None] * run[0])
            return pa.array(values, kind)

        return pa.table({
            "path": pa.array(self.paths, pa.string()), "dir": expand(1), "series": expand(2),
            "record_key": pa.array(self.keys, pa.string()), "segment": pa.array(self.segs, pa.string()),
            "size": stat_column(1, pa.int64()), "mtime": stat_column(2, pa.float64()),
            "state": expand(3), "problem": expand(4),
        }, schema=SCAN_BATCH_SCHEMA)


_DICT = pa.dictionary(pa.int32(), pa.string())
SCAN_BATCH_SCHEMA = pa.schema([
    ("path", pa.string()), ("dir", _DICT), ("series", _DICT), ("record_key", pa.string()), ("segment", pa.string()),
    ("size", pa.int64()), ("mtime", pa.float64()), ("state", _DICT), ("problem", _DICT),
])


def _match_deferred(runs: list[tuple[str, str, DirectoryMatcher, str, int]], rejects: _Batch) -> pa.Table:
    """Match deferred directories' names with their expressions in Arrow (RE2, without the GIL).

    The walking thread only lists directories; this runs in the first scan's parser thread. Names
    an expression rejects (or whose captured directory values differ) go to ``rejects.fallback``,
    which classifies them the slow way into ``rejects``, exactly as the walk would have.
    """
    by_pattern: dict[str, list[int]] = {}
    for i, run in enumerate(runs):
        by_pattern.setdefault(run[2].regex.pattern, []).append(i)
    tables = [_match_group([runs[i] for i in group], rejects) for group in by_pattern.values()]
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]


def _match_group(runs, rejects: _Batch) -> pa.Table:
    matcher = runs[0][2]
    counts = np.array([run[4] for run in runs], dtype=np.int64)
    run_of_row = pa.array(np.repeat(np.arange(len(runs), dtype=np.int32), counts))
    names = pc.split_pattern(pa.array([run[3] for run in runs], pa.string()), "\n").flatten()
    groups = pc.extract_regex(names, _named_pattern(matcher.regex.pattern))
    ok = groups.is_valid()
    for column, _ in matcher.fixed:  # the values the directory fixes, per run
        wanted = pc.take(pa.array([dict(run[2].fixed)[column] for run in runs], pa.string()), run_of_row)
        ok = pc.and_(ok, pc.fill_null(pc.equal(pc.struct_field(groups, [column]), wanted), False))
    if not pc.all(ok).as_py():
        bad = pc.invert(ok)
        for i, name in zip(pc.filter(run_of_row, bad).to_pylist(), pc.filter(names, bad).to_pylist()):
            rejects.skipped += rejects.fallback(runs[i][0], [name], rejects)
        run_of_row, names, groups = (pc.filter(a, ok) for a in (run_of_row, names, groups))
    dirs = pa.array([run[0] for run in runs], pa.string())
    columns = [pc.struct_field(groups, [i]) for i in range(groups.type.num_fields)]
    pieces = [run[2].key_format.split("%s") for run in runs]
    parts: list = []
    for j in range(len(pieces[0])):
        texts = [p[j].replace("%%", "%") for p in pieces]
        if len(set(texts)) == 1:  # the same in every run: no per-row copy of it
            parts.append(pa.scalar(texts[0], pa.string()))
        else:
            parts.append(pc.take(pa.array(texts, pa.string()), run_of_row))
        if j < len(matcher.key_groups):
            parts.append(columns[matcher.key_groups[j]])
    rows = len(names)
    dir_column = pa.DictionaryArray.from_arrays(run_of_row, dirs)
    series = pa.DictionaryArray.from_arrays(run_of_row, pa.array([run[1] for run in runs], pa.string()))
    return pa.table({
        "path": pc.binary_join_element_wise(pc.take(dirs, run_of_row), names, "/"),
        "dir": dir_column, "series": series,
        "record_key": pc.binary_join_element_wise(*parts, ""),
        "segment": columns[matcher.seg_group],
        "size": pa.nulls(rows, pa.int64()), "mtime": pa.nulls(rows, pa.float64()),
        "state": pa.DictionaryArray.from_arrays(pa.array(np.zeros(rows, np.int32)), pa.array(["layout"])),
        "problem": pa.DictionaryArray.from_arrays(pa.nulls(rows, pa.int32()), pa.array([], pa.string())),
    }, schema=SCAN_BATCH_SCHEMA)


@functools.lru_cache(maxsize=64)
def _named_pattern(pattern: str) -> str:
    """A matcher's expression with named groups, as Arrow's ``extract_regex`` wants them."""
    count = 0

    def name(_: re.Match) -> str:
        nonlocal count
        count += 1
        return f"(?P<g{count - 1}>"

    body = re.sub(r"(?<!\\)\((?!\?)", name, pattern.removeprefix("^").removesuffix("$"))
    return f"^{body}$"  # extract_regex searches: anchor it to the whole name


class _Classifier:
    def __init__(self, layout: Layout):
        self.layout = layout
        self._series_prefixes = {tpl.prefix for tpl in layout.templates.values() if tpl.prefix}
        self._name_prefixes = tuple(sorted({s.lower() + "." for s in (t.series_def.name for t in layout.templates.values())}))

    def first_matcher(self, dirpath: str) -> tuple[str, DirectoryMatcher] | None:
        """(series, matcher) of the first template with a fast matcher for ``dirpath``: the one
        ``names`` would try first."""
        for tpl in self.layout.candidates(dirpath + "/x"):
            matcher = directory_matcher(tpl, dirpath)
            if matcher is not None:
                return tpl.series_def.name, matcher
        return None

    def names(self, dirpath: str, names: list[str]) -> tuple[list[tuple[str, list, list, list]], list[tuple[str, str]]]:
        """([(series, names, record keys, segments)], [(name, why not)]) for the plain files in a directory."""
        found: list[tuple[str, list, list, list]] = []
        left = names
        prefix = (dirpath + "/") if dirpath else ""
        for tpl in self.layout.candidates(prefix + "x"):
            if not left:
                break
            matcher = directory_matcher(tpl, dirpath) if dirpath else None
            if matcher is not None:
                matched, keys, segs, left = matcher.match(left)
                if matched:
                    found.append((tpl.series_def.name, matched, keys, segs))
        others: list[tuple[str, str]] = []
        for name in left:
            parsed = self.layout.parse(prefix + name)
            if parsed is not None:
                found.append((parsed.series, [name], [parsed.record_key], [parsed.segment]))
            else:
                others.append((name, self.why_not(dirpath, name)))
        return found, others

    def why_not(self, dirpath: str, name: str) -> str:
        top = dirpath.split("/", 1)[0] if dirpath else ""
        if top in self._series_prefixes or name.lower().startswith(self._name_prefixes):
            return "near_miss"
        return "unknown"


# -- the walk ------------------------------------------------------------------------------------
#: The tables a scan writes: a dry run scans into temporary copies of them (``shadow_inventory``).
INVENTORY_TABLES = ("local_files", "file_checks", "scan_dirs", "scan_state")


def shadow_inventory(catalog: Catalog) -> None:
    """Temporary copies of the inventory tables, which a scan's unqualified names then resolve to
    (DuckDB looks in ``temp`` first): a read-only catalog can be scanned into, and nothing is kept."""
    database = catalog.execute("SELECT current_database()").fetchall()[0][0]
    for table in INVENTORY_TABLES:
        catalog.execute(f"CREATE TEMP TABLE {quote_ident(table)} AS "
                        f"SELECT * FROM {quote_ident(database)}.main.{quote_ident(table)}")


def scan_tree(
    catalog: Catalog,
    root: str,
    layout: Layout,
    *,
    stat: bool = True,
    verify: bool = False,
    full: bool = False,
    skip: Iterable[str] = (),
    storage_options: dict | None = None,
    progress: Callable[[int], Any] | None = None,
) -> ScanResult:
    """Inventory the files under ``root`` into ``local_files``; returns counts and problems.

    ``stat=False`` records names only (no size/mtime: fastest; empty files are not noticed);
    ``full=True`` lists every directory even if its mtime says it is unchanged; ``verify=True``
    (which implies ``full``) then checks the headers of files not verified since they changed. ``skip`` names paths
    (relative to the root) that belong to the mirror, such as a catalog file kept there.
    ``progress`` is called with the number of files found so far, now and then.
    """
    started = time.perf_counter()
    # verification must notice files rewritten in place, which leave their directory's mtime alone
    full = full or verify
    fs, root_path = open_root(root, storage_options)
    root_id = root if fs is not None else root_path
    if fs is None and not os.path.isdir(root_path):
        raise ScanError(f"data root {root_path} is not a directory (create it, or fix 'data' in jsocmirror.toml)")
    if fs is not None and not fs.exists(root_path):
        _check_container(fs, root, root_path)
    _adopt_root(catalog, root_id)
    result = ScanResult(root=root_id)
    skip_set = {s.strip("/") for s in skip} | set(MIRROR_OWNED)
    known = {} if full else {d: (m, s) for d, m, s in catalog.q("scan_known_dirs").fetchall()}
    first_scan = catalog.q("scan_file_count").fetchall()[0][0] == 0
    # a first scan inserts as it walks, from a thread: DuckDB's insert runs without the GIL,
    # alongside the walk (the insert is ~40% of a 1M-file first scan)
    # one DuckDB thread for the writer: the other core walks (two made it compete with the walk)
    settings = catalog.bulk_load(memory_limit="4GB", threads=1) if first_scan else contextlib.nullcontext()
    with settings:
        writer = _FirstScanWriter(catalog, _now()) if first_scan else None
        classifier = _Classifier(layout)
        batch = _Batch(sink=writer.put if writer is not None else None,
                       fallback=lambda rel, names, into: _add_names(rel, names, classifier, into, skip_set))
        listed: list[tuple[str, int | None, str]] = []
        walker = _walk_local if fs is None else _walk_fsspec
        # the walk makes millions of short-lived tuples and no reference cycles: the cyclic GC,
        # triggered by them every few hundred thousand, cost ~25% of a 1M-file first scan
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            visited = walker(
                fs if fs is not None else root_path, root_path, classifier, batch, listed, known, stat, skip_set, result,
                progress,
            )
            if writer is not None:
                batch.flush()
                writer.finish()
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        finally:
            if gc_was_enabled:
                gc.enable()
        previous = set(known) if not full else {d for d, _, _ in catalog.q("scan_known_dirs").fetchall()}
        gone = sorted(previous - visited)
        result.added, result.removed = _store(catalog, batch, listed, gone, writer)
        result.skipped_temp += batch.skipped + (writer.skipped if writer is not None else 0)
    result.dirs_listed = len(listed)
    if verify:
        verify_files(catalog, root, layout, fs=fs, root_path=root_path, result=result, progress=progress)
    _summarise(catalog, result)
    result.elapsed = time.perf_counter() - started
    catalog.q("scan_forget_state")
    catalog.q("scan_set_state", root=root_id, now=_now(), summary=json.dumps(
        {k: v for k, v in result.as_dict().items() if k != "problems"}))
    log.info("scanned %s: %d files in %.2f s (%d directories listed, %d unchanged)", root_id, result.files,
             result.elapsed, result.dirs_listed, result.dirs_unchanged)
    return result


def _adopt_root(catalog: Catalog, root_id: str) -> None:
    rows = catalog.q("scan_root").fetchall()
    if rows and rows[0][0] != root_id:
        log.warning("data root changed from %s to %s: starting a fresh inventory", rows[0][0], root_id)
        catalog.q("scan_forget_files")
        catalog.q("scan_forget_checks")
        catalog.q("scan_forget_dirs")


def _is_temp(name: str) -> bool:
    return name.startswith(".") or name.endswith(TEMP_SUFFIXES)


def _walk_local(base, root_path, classifier, batch, listed, known, stat, skip_set, result, progress) -> set[str]:
    """Walk with os.scandir; list only new or changed directories. Returns every directory seen."""
    children: dict[str, list[str]] = {}
    for d in known:
        if d:
            children.setdefault(d.rsplit("/", 1)[0] if "/" in d else "", []).append(d)
    visited: set[str] = set()
    stack = [""]
    real_root = os.path.realpath(root_path)
    while stack:
        rel = stack.pop()
        abs_dir = os.path.join(root_path, rel) if rel else root_path
        try:
            mtime_ns = os.stat(abs_dir, follow_symlinks=False).st_mtime_ns
        except FileNotFoundError:
            continue  # vanished while we walked
        except OSError as exc:
            mtime_ns = None
            log.debug("cannot stat %s: %s", abs_dir, exc)
        visited.add(rel)
        prev = known.get(rel)
        if prev is not None and prev[1] == "ok" and mtime_ns is not None and prev[0] == mtime_ns:
            result.dirs_unchanged += 1
            stack.extend(children.get(rel, ()))
            continue
        _list_local_dir(rel, abs_dir, real_root, classifier, batch, listed, mtime_ns, stat, skip_set, result, stack)
        if progress is not None and len(listed) % 64 == 0:
            progress(len(batch))
    return visited


def _list_local_dir(rel, abs_dir, real_root, classifier, batch, listed, mtime_ns, stat, skip_set, result, stack):
    prefix = rel + "/" if rel else ""
    try:
        with os.scandir(abs_dir) as it:
            entries = list(it)
        files = [e for e in entries if e.is_file(follow_symlinks=False)]
    except OSError as exc:
        listed.append((rel, mtime_ns, "unreadable"))
        batch.add("", rel, None, None, None, None, None, "unreadable", f"cannot list directory: {_why(exc)}")
        return
    listed.append((rel, mtime_ns, "ok"))
    names = [e.name for e in files]
    by_name = {e.name: e for e in files} if stat else {}
    if len(files) != len(entries):
        for entry in entries:
            if entry.is_file(follow_symlinks=False):
                continue
            name = entry.name
            if _is_temp(name) or (prefix + name) in skip_set:
                result.skipped_temp += 1
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(prefix + name)
                elif entry.is_symlink():
                    _symlink(entry, name, rel, real_root, batch, names, by_name, stat)
                else:
                    batch.add(name, rel, None, None, None, None, None, "special",
                              "not a regular file (device, FIFO or socket)")
            except OSError as exc:
                batch.add(name, rel, None, None, None, None, None, "unreadable", _why(exc))
    if not stat:
        if not _defer(rel, names, classifier, batch):
            result.skipped_temp += _add_names(rel, names, classifier, batch, skip_set)
        return
    found, others = classifier.names(rel, names)
    for series, matched, keys, segs in found:
        sizes, mtimes, odd = _stat_many([by_name[name] for name in matched])
        if not odd:
            batch.add_many(rel, matched, series, "layout", None, keys, segs, sizes, mtimes)
            continue
        groups: dict[tuple[str, str | None], list[int]] = {}
        for i in range(len(matched)):
            groups.setdefault(odd.get(i, ("layout", None)), []).append(i)
        for (state, problem), idx in groups.items():
            batch.add_many(rel, [matched[i] for i in idx], series, state, problem, [keys[i] for i in idx],
                           [segs[i] for i in idx], [sizes[i] for i in idx], [mtimes[i] for i in idx])
    for name, why in others:
        if _is_temp(name) or (prefix + name) in skip_set:
            result.skipped_temp += 1
            continue
        size, mtime, state, err = _stat_entry(by_name[name], why)
        problem = err if state == "unreadable" else _PROBLEMS[why]
        batch.add(name, rel, None, None, None, size, mtime, state if state == "unreadable" else why, problem)


_PROBLEMS = {"unknown": "name does not follow the layout", "near_miss": "name almost follows the layout"}


def _defer(rel: str, names: list[str], classifier: _Classifier, batch: _Batch) -> bool:
    """Leave a directory's names to be matched off the walking thread, when its template allows."""
    if not rel or not names or batch.fallback is None:
        return False
    first = classifier.first_matcher(rel)
    if first is None:
        return False
    joined = "\n".join(names)
    if joined.count("\n") != len(names) - 1:  # a name holds a newline, which separates them there
        return False
    batch.add_deferred(rel, first[0], first[1], joined, len(names))
    return True


def _add_names(rel: str, names: list[str], classifier: _Classifier, batch: _Batch, skip_set) -> int:
    """Record plain files by name only (no stat); returns how many were temporary files (skipped)."""
    prefix = rel + "/" if rel else ""
    found, others = classifier.names(rel, names)
    for series, matched, keys, segs in found:
        batch.add_many(rel, matched, series, "layout", None, keys, segs)
    skipped = 0
    for name, why in others:
        if _is_temp(name) or (prefix + name) in skip_set:
            skipped += 1
            continue
        batch.add(name, rel, None, None, None, None, None, why, _PROBLEMS[why])
    return skipped


def _symlink(entry, name, rel, real_root, batch, names, by_name, stat):
    try:
        target = os.path.realpath(entry.path)
    except OSError as exc:
        batch.add(name, rel, None, None, None, None, None, "unreadable", _why(exc))
        return
    if os.path.commonpath([real_root, target]) != real_root:
        batch.add(name, rel, None, None, None, None, None, "symlink_out", "symbolic link out of the data root (not followed)")
    elif not os.path.exists(target):
        batch.add(name, rel, None, None, None, None, None, "unreadable", "broken symbolic link")
    elif os.path.isdir(target):
        batch.add(name, rel, None, None, None, None, None, "unknown", "symbolic link to a directory (not followed)")
    else:
        names.append(name)
        if stat:
            by_name[name] = entry


def _stat_many(entries) -> tuple[list, list, dict[int, tuple[str, str]]]:
    """Sizes and mtimes of layout files; ``odd`` maps the index of each empty or unreadable one to its state."""
    sizes: list[int | None] = []
    mtimes: list[float | None] = []
    odd: dict[int, tuple[str, str]] = {}
    for i, entry in enumerate(entries):
        try:
            st = entry.stat()  # follows a link (only links inside the root get here)
        except OSError as exc:
            sizes.append(None)
            mtimes.append(None)
            odd[i] = ("unreadable", _why(exc))
            continue
        sizes.append(st.st_size)
        mtimes.append(st.st_mtime)
        if not st.st_size:
            odd[i] = ("empty", "zero-byte file")
    return sizes, mtimes, odd


def _stat_entry(entry, state: str) -> tuple[int | None, float | None, str, str | None]:
    try:
        st = entry.stat()  # follows a link (only links inside the root get here)
    except OSError as exc:
        return None, None, "unreadable", _why(exc)
    if st.st_size == 0 and state == "layout":
        return 0, st.st_mtime, "empty", "zero-byte file"
    return st.st_size, st.st_mtime, state, None


def _why(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _walk_fsspec(fs, root_path, classifier, batch, listed, known, stat, skip_set, result, progress) -> set[str]:
    """List an object store or other fsspec root (one listing of everything: no directory mtimes)."""
    try:
        entries = fs.find(root_path, withdirs=False, detail=True)
    except OSError as exc:
        raise ScanError(f"cannot list data root {root_path}: {exc}") from None
    by_dir: dict[str, dict[str, dict]] = {}
    strip = len(root_path) + 1
    for full_path, info in entries.items():
        rel = full_path[strip:] if full_path.startswith(root_path + "/") else full_path.lstrip("/")
        if info.get("type") not in (None, "file"):
            continue
        dirpath, _, name = rel.rpartition("/")
        if any(_is_temp(part) for part in rel.split("/")) or rel in skip_set or rel.split("/", 1)[0] in skip_set:
            result.skipped_temp += 1
            continue
        by_dir.setdefault(dirpath, {})[name] = info
    visited: set[str] = set()
    for dirpath in sorted(by_dir):
        parts = dirpath.split("/") if dirpath else []
        for i in range(len(parts) + 1):
            visited.add("/".join(parts[:i]))
    for dirpath in sorted(visited):
        infos = by_dir.get(dirpath, {})
        listed.append((dirpath, None, "ok"))
        found, others = classifier.names(dirpath, sorted(infos))
        for series, matched, keys, segs in found:
            for name, key, seg in zip(matched, keys, segs):
                size, mtime = _info_size_mtime(infos[name])
                state, problem = ("empty", "zero-byte file") if size == 0 else ("layout", None)
                batch.add(name, dirpath, series, key, seg, size, mtime, state, problem)
        for name, why in others:
            size, mtime = _info_size_mtime(infos[name])
            problem = "name does not follow the layout" if why == "unknown" else "name almost follows the layout"
            batch.add(name, dirpath, None, None, None, size, mtime, why, problem)
        if progress is not None:
            progress(len(batch))
    return visited


def _info_size_mtime(info: dict) -> tuple[int | None, float | None]:
    size = info.get("size")
    for key in ("mtime", "LastModified", "last_modified", "created", "updated"):
        value = info.get(key)
        if value is None:
            continue
        if isinstance(value, datetime):
            return size, value.timestamp()
        if isinstance(value, (int, float)):
            return size, float(value)
        if isinstance(value, str):
            try:
                return size, datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return size, None


class _FirstScanWriter:
    """Inserts a first scan's files into the empty inventory, chunk by chunk, from two threads.

    A parser thread turns each chunk the walk hands over into its Arrow table (matching the
    deferred directories' names in Arrow's C++, without the GIL), and an insert thread writes the
    tables to DuckDB (which also runs without the GIL): the walk, the matching and the insert
    overlap. Each insert is committed as it goes; the transaction left open at the end is the one
    ``_store`` commits with the directories (or ``abort`` rolls back), so a scan that stops half
    way leaves files but no directories, and the next scan lists every directory again. The
    walking thread does not touch the connection until ``finish`` has returned.
    """

    def __init__(self, catalog: Catalog, now: datetime):
        self.catalog, self.now = catalog, now
        self.rows = 0
        self.skipped = 0  # temporary files among the names the parser classified
        self.error: BaseException | None = None
        self._chunks: queue.Queue = queue.Queue(maxsize=2)
        self._tables: queue.Queue = queue.Queue(maxsize=2)
        catalog.execute("BEGIN TRANSACTION")
        self._threads = [threading.Thread(target=self._parse, name="jsocmirror-scan-parser", daemon=True),
                         threading.Thread(target=self._run, name="jsocmirror-scan-writer", daemon=True)]
        for thread in self._threads:
            thread.start()

    def put(self, chunk: _Batch) -> None:
        if self.error is not None:
            raise self.error
        self._chunks.put(chunk)

    def _parse(self) -> None:
        while True:
            chunk = self._chunks.get()
            if chunk is None:
                self._tables.put(None)
                return
            if self.error is not None:
                continue  # drain, so that put() never blocks for ever
            try:
                table = chunk.table()
                self.skipped += chunk.skipped
                self._tables.put(table)
            except BaseException as exc:  # handed to the walking thread
                self.error = exc

    def _run(self) -> None:
        pending: list[pa.Table] = []
        while True:
            table = self._tables.get()
            if self.error is not None:
                if table is None:
                    return
                continue  # drain, so that put() never blocks for ever
            try:
                if table is not None:
                    pending.append(table)
                rows = sum(t.num_rows for t in pending)
                # whole DuckDB row groups per insert: an insert that ends inside a row group has
                # it compressed again by the next one (1M rows took 2.2 s to store instead of 0.8 s)
                take = rows if table is None else rows - rows % ROW_GROUP
                if take:
                    both = pa.concat_tables(pending)
                    self._insert(both.slice(0, take))
                    pending = [both.slice(take)] if take < rows else []
            except BaseException as exc:  # handed to the walking thread
                self.error = exc
            if table is None:
                return

    def _insert(self, table: pa.Table) -> None:
        con = self.catalog.con
        con.register("scan_batch", table)
        try:
            self.catalog.q("scan_insert_all", now=self.now)
        finally:
            con.unregister("scan_batch")
        self.rows += table.num_rows
        # Commit as the walk goes: DuckDB's commit of 1M new rows costs ~0.3 s of CPU, which
        # here overlaps the walk instead of following it. A scan stopped half way leaves the
        # files inserted so far but none of the directories (scan_dirs is written at the end),
        # so the next scan lists every directory again and MERGEs: it converges all the same.
        self.catalog.execute("COMMIT")
        self.catalog.execute("BEGIN TRANSACTION")

    def finish(self) -> None:
        self._chunks.put(None)
        for thread in self._threads:
            thread.join()
        if self.error is not None:
            raise self.error

    def abort(self) -> None:
        if self._threads[0].is_alive():
            self._chunks.put(None)
        for thread in self._threads:
            thread.join()
        self.catalog.execute("ROLLBACK")


def _store(catalog: Catalog, batch: _Batch, listed, gone: list[str], writer: _FirstScanWriter | None) -> tuple[int, int]:
    """Apply one walk to the inventory in a transaction; returns (files added, files removed).

    After a first scan the files are already inserted (by ``writer``, in its open transaction):
    only the directories are left to record, and everything is committed here.
    """
    now = _now()
    con = catalog.con
    tables = {
        "scan_listed_dirs": pa.table({
            "dir": pa.array([d for d, _, _ in listed], pa.string()),
            "mtime_ns": pa.array([m for _, m, _ in listed], pa.int64()),
            "state": pa.array([s for _, _, s in listed], pa.string()),
        }),
        "scan_gone_dirs": pa.table({"dir": pa.array(gone, pa.string())}),
    }
    if writer is None:
        tables["scan_batch"] = batch.table()
    for name, table in tables.items():
        con.register(name, table)
    try:
        if writer is not None:
            # the inventory was empty: files under vanished directories cannot be in it
            added, removed = writer.rows, 0
        else:
            catalog.execute("BEGIN TRANSACTION")
            added = catalog.q("scan_count_new").fetchall()[0][0]
            catalog.q("scan_find_vanished")
            catalog.q("scan_drop_vanished_checks")
            removed = catalog.q("scan_drop_vanished").fetchall()[0][0]
            catalog.q("scan_forget_vanished")
            catalog.q("scan_drop_changed_checks")
            catalog.q("scan_merge", now=now)
        catalog.q("scan_replace_dirs")
        catalog.q("scan_insert_dirs", now=now)
        catalog.execute("COMMIT")
    except Exception:
        catalog.execute("ROLLBACK")
        raise
    finally:
        for name in tables:
            con.unregister(name)
    return added, removed


def _summarise(catalog: Catalog, result: ScanResult) -> None:
    for state, files, size in catalog.q("scan_state_counts").fetchall():
        result.by_state[state] = files
        result.files += files
        result.bytes += int(size or 0)
    result.by_verify_state = dict(catalog.q("verify_state_counts").fetchall())
    result.problems = [tuple(r) for r in catalog.q("scan_problem_files", limit=1000).fetchall()]


# -- verification ----------------------------------------------------------------------------
@dataclass
class VerifyOutcome:
    verify_state: str  # ok | not_fits | truncated | bad_checksum | bad_datasum | bad_fill | header_mismatch | unreadable
    problem: str | None = None
    header_recnum: int | None = None
    checksum: str | None = None
    datasum: str | None = None


def verify_file(f, parsed: ParsedPath | None, layout: Layout | None = None) -> VerifyOutcome:
    """Check one open FITS file (structure, sums, header vs. path). Never raises on bad data."""
    check = fitsheader.check_fits(f)
    if check.problem:
        return VerifyOutcome(check.problem, check.detail)
    recnum, mismatch = _header_vs_path(check, parsed, layout)
    outcome = VerifyOutcome("ok", None, recnum, check.checksum, check.datasum)
    if check.datasum == "bad":
        outcome.verify_state, outcome.problem = "bad_datasum", "DATASUM does not match the data"
    elif check.checksum == "bad":
        outcome.verify_state, outcome.problem = "bad_checksum", "CHECKSUM does not match the HDU"
    elif check.fill:
        outcome.verify_state, outcome.problem = "bad_fill", check.fill
    elif mismatch:
        outcome.verify_state, outcome.problem = "header_mismatch", mismatch
    return outcome


def _header_vs_path(check: fitsheader.FitsCheck, parsed: ParsedPath | None, layout) -> tuple[int | None, str | None]:
    """(the header's RECNUM of this series' record if it has one, why the header contradicts the path)."""
    recnum = check.integer("RECNUM")
    if parsed is None:
        return recnum, None
    drms_id = check.string("DRMS_ID")
    if drms_id:
        parts = drms_id.split(":")
        id_series = parts[0]
        if id_series.lower() == parsed.series.lower():
            if len(parts) >= 3 and parts[2] and parts[2].lower() != parsed.segment.lower():
                return recnum, f"header DRMS_ID {drms_id!r} is segment {parts[2]!r}, the path says {parsed.segment!r}"
        else:
            # a processed export (_mod) or a linked series numbers its records differently
            recnum = None
            base = id_series.lower().removesuffix("_mod")
            if base != parsed.series.lower() and layout is not None and layout.template(id_series) is not None:
                return None, f"header DRMS_ID {drms_id!r} is of series {id_series}, the path says {parsed.series}"
    tpl = layout.template(parsed.series) if layout is not None else None
    keywords = {kw.name: kw for kw in tpl.series_def.primekey_keywords} if tpl is not None else {}
    for key, value in zip(parsed.keys, parsed.values):
        kw = keywords.get(key)
        if kw is None or len(key) > 8:
            continue
        text = check.string(key.upper())
        if text in (None, ""):
            continue  # an as-is file carries only a minimal header
        try:
            if kw.is_time:
                same = abs(drmstime.parse_time(text) - value) < 0.5
            elif kw.is_int:
                same = int(float(text)) == value
            elif kw.is_float:
                same = float(text) == value
            else:
                same = text == value
        except ValueError:
            same = False
        if not same:
            return recnum, f"header {key} = {text!r}, the path says {parsed.printed[parsed.keys.index(key)]!r}"
    return recnum, None


def verify_files(
    catalog: Catalog,
    root: str,
    layout: Layout,
    *,
    fs=None,
    root_path: str | None = None,
    result: ScanResult | None = None,
    progress: Callable[[int], Any] | None = None,
    storage_options: dict | None = None,
) -> int:
    """Verify the layout files whose verification is missing or stale; returns how many were read."""
    if root_path is None:
        fs, root_path = open_root(root, storage_options)
    todo = catalog.q("verify_todo").fetchall()
    checked: list[tuple[str, int | None, float | None, VerifyOutcome]] = []
    for i, (path, size, mtime) in enumerate(todo):
        outcome, size, mtime = _verify_one(fs, root_path, path, layout, size, mtime)
        checked.append((path, size, mtime, outcome))
        if progress is not None and i % 256 == 255:
            progress(i + 1)
    _store_checks(catalog, checked, _now())
    if result is not None:
        result.verified = len(todo)
    log.info("verified %d files", len(todo))
    return len(todo)


@dataclass
class RotationResult:
    """One night's slice of the rotating verification (``verify_rotation``)."""

    files: int = 0  # files read
    bytes: int = 0
    damaged: int = 0  # files that failed (they are corrupt gaps now)
    seconds: float = 0.0
    due: int = 0  # files due tonight: new or changed since their verification, tonight's share, overdue
    left: int = 0  # due files the time budget left to the next night (read first then)
    problems: list[tuple[str, str, str]] = field(default_factory=list)  # (path, state, problem), first 100
    covered_since: datetime | None = None  # every file has been read since then (None: some never were)
    never_verified: int = 0  # files not verified since they last changed (after tonight's slice)


def rotation_due(catalog: Catalog, cycle_days: int, now: datetime) -> int:
    """How many files tonight's slice holds: every file not verified since it last changed, plus
    1/cycle_days of the others (oldest first), or more where some are already overdue."""
    catalog.q("verify_candidates")
    # half a night of slack: a run that starts a little earlier than the last one still finds its share due
    overdue = now - timedelta(days=cycle_days) + timedelta(hours=12)
    fresh, verified, late = catalog.q("verify_due_counts", overdue=overdue).fetchall()[0]
    return fresh + max(-(-verified // cycle_days), late)


def rotation_coverage(catalog: Catalog) -> tuple[datetime | None, int]:
    """(the time since which every file has been verified, or None; how many never were)."""
    catalog.q("verify_candidates")
    never, oldest = catalog.q("verify_coverage").fetchall()[0]
    return (oldest if not never else None), never


def verify_rotation(
    catalog: Catalog,
    root: str,
    layout: Layout,
    *,
    cycle_days: int = 30,
    budget_seconds: float = 600.0,
    now: datetime | None = None,
    timer: Callable[[], float] = time.monotonic,
    storage_options: dict | None = None,
    batch: int = 256,
    coverage: bool = True,
) -> RotationResult:
    """Read tonight's slice of the mirror's FITS files, oldest verification first, and record what
    each holds (``verify_file``): a damaged file's ``verify_state`` makes it a corrupt gap.

    Stops once ``budget_seconds`` of ``timer`` have passed (after one file at least, so every
    night moves the rotation on); the files left are the oldest the next night. ``now`` stamps the
    verifications (a parameter, so a test can advance nights). Outcomes are committed every
    ``batch`` files, so a run killed half way keeps what it read. ``coverage=False`` leaves
    ``covered_since`` to the caller (a query over the whole inventory: ~1 s per million files).
    """
    now = now or _now()
    result = RotationResult()
    started = timer()
    result.due = rotation_due(catalog, cycle_days, now)
    fs, root_path = open_root(root, storage_options)
    catalog.q("verify_slice_create", limit=result.due)
    try:
        _read_slice(catalog, fs, root_path, layout, result, now, lambda: timer() - started >= budget_seconds, batch)
    finally:
        catalog.q("verify_slice_drop")
    result.left = result.due - result.files
    if coverage:
        result.covered_since, result.never_verified = rotation_coverage(catalog)
    result.seconds = timer() - started
    log.info("verified %d of %d due files (%d bytes) in %.1f s: %d damaged", result.files, result.due,
             result.bytes, result.seconds, result.damaged)
    return result


def _read_slice(catalog: Catalog, fs, root_path: str, layout: Layout, result: RotationResult, now: datetime,
                out_of_time: Callable[[], bool], batch: int) -> None:
    checked: list[tuple[str, int | None, float | None, VerifyOutcome]] = []
    page: list = []
    while True:
        if not page:
            page = catalog.q("verify_slice_page", after=result.files, page=4096).fetchall()
            if not page:
                break
            page.reverse()
        if result.files and out_of_time():
            break
        path, size, mtime = page.pop()
        outcome, size, mtime = _verify_one(fs, root_path, path, layout, size, mtime)
        checked.append((path, size, mtime, outcome))
        result.files += 1
        result.bytes += size or 0
        if outcome.verify_state != "ok":
            result.damaged += 1
            if len(result.problems) < 100:
                result.problems.append((path, outcome.verify_state, outcome.problem or ""))
        if len(checked) >= batch:
            _store_checks(catalog, checked, now)
            checked = []
    if checked:
        _store_checks(catalog, checked, now)


def _store_checks(catalog: Catalog, checked: list[tuple[str, int | None, float | None, VerifyOutcome]],
                  now: datetime) -> None:
    """Record verification outcomes (path, size, mtime seen, outcome) in one transaction, at ``now``."""
    outcomes = [c[3] for c in checked]
    table = pa.table({
        "path": pa.array([c[0] for c in checked], pa.string()), "size": pa.array([c[1] for c in checked], pa.int64()),
        "mtime": pa.array([c[2] for c in checked], pa.float64()),
        "verify_state": pa.array([o.verify_state for o in outcomes], pa.string()),
        "verify_problem": pa.array([o.problem for o in outcomes], pa.string()),
        "header_recnum": pa.array([o.header_recnum for o in outcomes], pa.int64()),
        "checksum": pa.array([o.checksum for o in outcomes], pa.string()),
        "datasum": pa.array([o.datasum for o in outcomes], pa.string()),
    })
    catalog.con.register("verify_batch", table)
    try:
        with catalog.transaction():
            catalog.q("verify_store_checks", now=now)
            catalog.q("verify_store_files")
    finally:
        catalog.con.unregister("verify_batch")


def _verify_one(fs, root_path: str, path: str, layout: Layout, size, mtime):
    parsed = layout.parse(path)
    try:
        if fs is None:
            full = os.path.join(root_path, path)
            with open(full, "rb") as f:
                st = os.fstat(f.fileno())
                outcome = verify_file(f, parsed, layout)
            return outcome, st.st_size, st.st_mtime
        full = root_path + "/" + path
        info = fs.info(full)
        with fs.open(full, "rb") as f:
            outcome = verify_file(f, parsed, layout)
        s, m = _info_size_mtime(info)
        return outcome, s, m
    except OSError as exc:
        return VerifyOutcome("unreadable", _why(exc)), size, mtime


# -- the downloader's side ---------------------------------------------------------------------
def record_landed_file(
    catalog: Catalog,
    root: str,
    relpath: str,
    recnum: int | None,
    layout: Layout,
    *,
    verified: VerifyOutcome | None = None,
    storage_options: dict | None = None,
) -> None:
    """Record a file the downloader has just put in place, and the RECNUM it fetched it for.

    Size and mtime are read from the file now (as a later scan will see them), so the scan
    keeps ``fetched_recnum`` for as long as the file is unchanged. ``verified`` is the
    downloader's own check (``verify_file``), if it made one.
    """
    parsed = layout.parse(relpath)
    if parsed is None:
        raise ScanError(f"{relpath!r} is not a layout path, so it cannot be recorded as a mirrored file")
    fs, root_path = open_root(root, storage_options)
    try:
        if fs is None:
            st = os.stat(os.path.join(root_path, relpath))
            size, mtime = st.st_size, st.st_mtime
        else:
            size, mtime = _info_size_mtime(fs.info(root_path + "/" + relpath))
    except OSError as exc:
        raise ScanError(f"cannot record {relpath}: {_why(exc)}") from None
    v = verified
    if v is not None and v.verify_state != "ok":
        raise ScanError(f"refusing to record {relpath} as landed: it failed verification ({v.problem})")
    facts = dict(path=relpath, size=size, mtime=mtime, recnum=recnum, verify_state=v.verify_state if v else None,
                 header_recnum=v.header_recnum if v else None, now=_now())
    with catalog.transaction():
        catalog.q("record_landed_file", **facts, checksum=v.checksum if v else None,
                  datasum=v.datasum if v else None)
        catalog.q("record_landed_file_row", **facts, dir=relpath.rpartition("/")[0], series=parsed.series,
                  record_key=parsed.record_key, segment=parsed.segment)
