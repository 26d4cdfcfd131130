"""The nightly job: sync, scan, diff, stage, download, under the mirror's lock.

``update_mirror`` runs every stage; ``fetch_mirror`` skips the sync (it fetches the gaps the
catalog already knows of). Both return an ``UpdateSummary`` (errors as data: the unrecoverable
records are listed with their reason) and never raise for a single file. The order converges
after any crash: the scan first picks up files a killed run renamed into place, export requests
a killed run left behind are resumed before anything new is asked, and downloads resume their
``.part`` files.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

from jsocmirror import download as dl
from jsocmirror.catalog import Catalog, keyword_table, quote_ident
from jsocmirror.config import MirrorConfig
from jsocmirror.download import FileTask, Landed, Results, RetryPolicy
from jsocmirror.jsoc import ExportClient, JsocClient
from jsocmirror.layout import Layout, relative_path
from jsocmirror.lock import mirror_lock
from jsocmirror.plan import Gap, PlanLimits, plan_gaps
from jsocmirror.publish import publishing
from jsocmirror.recordset import split_record_key
from jsocmirror.series import SeriesDef
from jsocmirror.stage import Governor, StagePolicy, StageResult, Transfer

log = logging.getLogger("jsocmirror.update")

#: Diff states the nightly job fetches. (no_image and offline are never gaps: JSOC has no file,
#: or the file is on tape and an export would be queued for staff; orphans are never deleted.)
FETCH_STATES = ("missing", "stale", "corrupt")


@dataclass
class UpdateOptions:
    series: list[str] | None = None  # None: every configured series
    sync: bool = True
    dry_run: bool = False
    connections: int | None = None  # None: the config's [transfer] max_connections
    stage_policy: StagePolicy | None = None  # None: defaults with the config's poll_interval/max_pending_exports
    retry_policy: RetryPolicy = field(default_factory=RetryPolicy)
    limits: PlanLimits = field(default_factory=PlanLimits)
    header_fill: bool | None = None  # None: per series, the config's header_fill (as-is files only)
    include_offline: bool = False  # also fetch records on tape (JSOC stages them through an export)
    # only these (series, record key, segment) gaps, None: all (the sunpy client's fetch_missing)
    only: frozenset[tuple[str, str, str]] | None = None


@dataclass
class UpdateSummary:
    """What one run did. ``exit_code`` is 0 when every gap was filled, 1 otherwise."""

    run_id: str
    command: str
    dry_run: bool = False
    started_at: str = ""
    seconds: float = 0.0
    sync: dict[str, Any] = field(default_factory=dict)
    scan: dict[str, Any] = field(default_factory=dict)
    gaps: dict[str, int] = field(default_factory=dict)  # state -> (record, segment) count
    plan: list[dict[str, Any]] = field(default_factory=list)  # queries (dry run: all; else count only)
    planned_queries: int = 0
    planned_records: int = 0
    listings: int = 0
    exports_submitted: int = 0
    exports_resumed: int = 0
    files_downloaded: int = 0
    bytes_downloaded: int = 0  # bytes of the files that landed
    bytes_transferred: int = 0  # bytes read from the network, retries and failed attempts included
    records_downloaded: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)  # unrecoverable this run
    notes: list[dict[str, str]] = field(default_factory=list)  # vanished upstream, left pending...
    jsoc_requests: int = 0
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase
    _failed_tasks: list = field(default_factory=list, repr=False)  # FailedFile objects (not serialised)

    @property
    def exit_code(self) -> int:
        return 1 if self.failures else 0

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if not k.startswith("_")}
        out["exit_code"] = self.exit_code
        return out

    def render(self) -> str:
        lines = [f"{self.command} {self.run_id}{' (dry run)' if self.dry_run else ''}: {self.seconds:.1f} s"]
        if self.sync:
            lines.append("  sync: " + ", ".join(f"{k} {v}" for k, v in self.sync.items()))
        if self.gaps:
            lines.append("  gaps: " + ", ".join(f"{k} {v}" for k, v in sorted(self.gaps.items())))
        else:
            lines.append("  gaps: none")
        lines.append(f"  plan: {self.planned_queries} queries for {self.planned_records} records")
        if self.timings:
            lines.append("  time: " + ", ".join(f"{k} {v:.1f} s" for k, v in self.timings.items()))
        if self.dry_run:
            for item in self.plan:
                lines.append(f"    {item['recordset']}  ({item['records']} records, ~{_human(item['est_bytes'])})")
        else:
            lines.append(f"  staged: {self.listings} listings, {self.exports_submitted} exports submitted, "
                         f"{self.exports_resumed} resumed")
            lines.append(f"  downloaded: {self.files_downloaded} files, {_human(self.bytes_downloaded)}")
        for note in self.notes[:20]:
            lines.append(f"  note: {note['series']}{note['record_key']} {note['segment']}: {note['reason']}")
        if len(self.notes) > 20:
            lines.append(f"  ... and {len(self.notes) - 20} more notes (see --json)")
        for fail in self.failures[:50]:
            lines.append(f"  FAILED: {fail['series']}{fail['record_key']} {fail['segment']}: {fail['reason']}")
        if len(self.failures) > 50:
            lines.append(f"  ... and {len(self.failures) - 50} more failures (see --json)")
        lines.append("  result: " + ("all done" if not self.failures else f"{len(self.failures)} failed"))
        return "\n".join(lines)


def _human(n: int | None) -> str:
    value = float(n or 0)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


# -- entry points ---------------------------------------------------------------------------------
def update_mirror(config: MirrorConfig, url: str, options: UpdateOptions | None = None, *,
                  progress: Any = None, command: str = "update") -> UpdateSummary:
    """The nightly job. Takes the mirror lock (LockedError if another run holds it)."""
    options = options or UpdateOptions()
    with mirror_lock(config.mirror_dir, command):
        return _run(config, url, options, progress, command)


def fetch_mirror(config: MirrorConfig, url: str, options: UpdateOptions | None = None, *,
                 progress: Any = None) -> UpdateSummary:
    """Stage and download the current gaps (no sync)."""
    options = options or UpdateOptions()
    options.sync = False
    return update_mirror(config, url, options, progress=progress, command="fetch")


def _run(config: MirrorConfig, url: str, options: UpdateOptions, progress: Any, command: str) -> UpdateSummary:
    started = time.monotonic()
    summary = UpdateSummary(run_id=uuid.uuid4().hex[:12], command=command, dry_run=options.dry_run,
                            started_at=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    client = JsocClient(url, email=config.email)
    # readers see each committed step (sync transactions, scan, batches of landed files, the end)
    with Catalog(config.catalog_path) as catalog, publishing(catalog, config) as publisher:
        phase = time.monotonic()
        if options.sync:
            _sync(config, catalog, client, options, summary, progress)
            phase = _lap(summary, "sync", phase)
        from jsocmirror import diff as diff_mod

        registry = diff_mod.series_definitions(catalog)
        layout = diff_mod.layout_for_config(config, registry)
        _scan(config, catalog, layout, summary, progress)
        publisher.step()
        phase = _lap(summary, "scan", phase)
        gaps = _gaps(config, catalog, options, summary, registry)
        phase = _lap(summary, "diff", phase)
        definitions = registry
        options = replace(options, limits=_planning_limits(catalog, definitions, gaps, options.limits))
        if options.dry_run:
            _dry_run(gaps, definitions, options, summary)
            summary.seconds = time.monotonic() - started
            return summary
        catalog.q("run_start", run_id=summary.run_id, command=command).fetchall()
        status = "failed"
        try:
            _stage_and_download(config, catalog, client, layout, definitions, gaps, options, summary, progress)
            _lap(summary, "stage_download", phase)
            status = "ok" if not summary.failures else "failed"
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        finally:
            summary.seconds = time.monotonic() - started
            summary.jsoc_requests = client.requests
            try:
                catalog.q("run_finish", run_id=summary.run_id, status=status,
                          summary=json.dumps(_short(summary))).fetchall()
            except Exception:  # bookkeeping must never hide the real outcome
                log.warning("could not record the end of run %s", summary.run_id)
    return summary


def _lap(summary: UpdateSummary, name: str, since: float) -> float:
    now = time.monotonic()
    summary.timings[name] = round(now - since, 3)
    return now


def _short(summary: UpdateSummary) -> dict[str, Any]:
    out = summary.as_dict()
    out["failures"] = out["failures"][:100]
    out["notes"] = out["notes"][:100]
    out["plan"] = out["plan"][:100]
    return out


# -- stages ----------------------------------------------------------------------------------------
def _sync(config, catalog, client, options, summary, progress) -> None:
    from jsocmirror import sync as sync_mod

    result = sync_mod.sync(config, catalog, client, options.series, command="update-sync",
                           progress=getattr(progress, "sync", None))
    summary.sync = {name: result.total(name) for name in ("new", "reprocessed", "gone")}


def _scan(config, catalog, layout, summary, progress) -> None:
    from jsocmirror import scan as scan_mod
    from jsocmirror.diff import refresh_file_views

    root = config.data_root
    if "://" not in root:
        Path(root).mkdir(parents=True, exist_ok=True)
    result = scan_mod.scan_tree(catalog, root, layout, storage_options=config.storage_options())
    summary.scan = {"files": result.files, "added": result.added, "removed": result.removed}
    # the nightly job keeps the <slug>_files views as current as `jsocmirror scan` does
    refresh_file_views(catalog, [entry.series for entry in config.series])


def _gaps(config: MirrorConfig, catalog: Catalog, options: UpdateOptions, summary: UpdateSummary,
          registry) -> list[Gap]:
    from jsocmirror import diff as diff_mod

    result = diff_mod.diff_mirror(catalog, config, options.series, registry=registry)
    gaps = []
    states = FETCH_STATES + (("offline",) if options.include_offline else ())
    for row in result.gaps(states=states):
        if options.only is not None and (row.series, row.record_key, row.segment) not in options.only:
            continue
        summary.gaps[row.state] = summary.gaps.get(row.state, 0) + 1
        gaps.append(Gap(row.series, row.record_key, row.segment, row.size, row.recnum))
    for state in ("no_image", "offline", "orphan"):
        if result.total(state) and state not in states:
            summary.gaps[state] = result.total(state)
    return gaps


def _planning_limits(catalog: Catalog, definitions, gaps: list[Gap], limits: PlanLimits | None) -> PlanLimits:
    """The caps, plus the prime keys the catalog shows to identify a record on their own (FSN)."""
    candidates: dict[str, list[str]] = {}
    for series in {g.series for g in gaps}:
        definition = definitions.get(series)
        if definition is not None:
            candidates[series] = [kw.name for kw in definition.primekey_keywords
                                  if kw.is_int and kw.name not in definition.slottings]
    limits = limits or PlanLimits()
    unique = catalog.unique_prime_keys({s: keys for s, keys in candidates.items() if keys})
    return replace(limits, unique_keys=limits.unique_keys + unique) if unique else limits


def _dry_run(gaps: list[Gap], definitions, options: UpdateOptions, summary: UpdateSummary) -> None:
    plan = plan_gaps(gaps, definitions, options.limits)
    summary.planned_queries = len(plan.queries)
    summary.planned_records = plan.n_records
    summary.plan = [{"series": q.series, "recordset": q.recordset, "records": q.n_records, "est_bytes": q.est_bytes}
                    for q in plan.queries]


def _stage_and_download(config, catalog, client, layout: Layout, definitions, gaps: list[Gap],
                        options: UpdateOptions, summary: UpdateSummary, progress) -> None:
    transfers = _transfers(config)
    header_fill = _fill_series(config, options.header_fill)
    connections = options.connections or config.transfer.max_connections
    policy = options.stage_policy or StagePolicy(poll_interval=float(config.transfer.poll_interval),
                                                 max_pending_per_email=config.transfer.max_pending_exports)
    governor = Governor(catalog, ExportClient(client), definitions, _path_for(config), email=config.email,
                        run_id=summary.run_id, policy=policy, limits=options.limits)
    plan = plan_gaps(gaps, definitions, options.limits)
    summary.planned_queries, summary.planned_records = len(plan.queries), plan.n_records
    pending = {(g.series, g.record_key, g.segment): g for g in gaps}
    stage = StageResult()
    landed_records: set[tuple[str, str]] = set()
    files_bar = getattr(progress, "files", None)
    bytes_bar = getattr(progress, "bytes", None)
    if files_bar is not None:
        files_bar.total = len(pending)
        files_bar.refresh()
    root = config.data_root

    recorder = _LandedRecorder(catalog, root, layout)

    def on_landed(item: Landed) -> None:
        recorder.add(item)
        landed_records.add((item.task.series, item.task.record_key))
        summary.files_downloaded += 1
        summary.bytes_downloaded += item.size
        if files_bar is not None:
            files_bar.update(1)

    lock = threading.Lock()

    def on_bytes(n: int) -> None:
        with lock:
            summary.bytes_transferred += n
        if bytes_bar is not None:
            bytes_bar.update(n)

    try:
        batches = list(governor.resume(pending, transfers, stage))
        for batch in batches:
            _download_batch(batch, governor, root, connections, options.retry_policy, header_fill, catalog,
                            on_landed, on_bytes, summary, config, recorder)
        for batch in governor.stage(list(pending.values()), transfers, stage):
            _download_batch(batch, governor, root, connections, options.retry_policy, header_fill, catalog,
                            on_landed, on_bytes, summary, config, recorder)
    finally:
        recorder.flush()
    summary.listings += stage.listings
    summary.exports_submitted += stage.exports_submitted
    summary.exports_resumed += stage.exports_resumed
    summary.records_downloaded = len(landed_records)
    for problem in stage.problems:
        entry = {"series": problem.series, "record_key": problem.record_key, "segment": problem.segment,
                 "reason": problem.reason, "kind": problem.kind}
        (summary.notes if problem.kind == "vanished" else summary.failures).append(entry)
    if "://" not in root:
        # Leftover parts (records no longer wanted, a killed run's strays) go; the parts of files
        # that failed for a transient reason stay, so the next run resumes them with Range.
        keep = [dl.part_name(f.task.dest, f.task) for f in summary_failed_tasks(summary) if f.retryable]
        dl.sweep_parts(root, keep=keep)


def summary_failed_tasks(summary: UpdateSummary) -> list:
    return summary._failed_tasks


def _download_batch(batch, governor: Governor, root: str, connections: int, policy: RetryPolicy,
                    header_fill: set[str], catalog: Catalog, on_landed, on_bytes, summary: UpdateSummary,
                    config: MirrorConfig, recorder: _LandedRecorder) -> None:
    if header_fill:
        _with_headers(catalog, batch, header_fill)
    if batch.tar_url:
        results = _download_tar(batch, root, policy, on_landed, on_bytes, config)
    else:
        results = dl.download_files(batch.tasks, root, connections=connections, policy=policy,
                                    on_landed=on_landed, on_bytes=on_bytes, storage_options=config.storage_options())
    for failed in results.errors:
        summary.failures.append({"series": failed.task.series, "record_key": failed.task.record_key,
                                 "segment": failed.task.segment, "reason": failed.error, "kind": "download"})
        summary._failed_tasks.append(failed)
    # Each batch's files commit as the batch ends, so readers see them even if the next batch
    # waits an hour on an export; and the inventory before the export is marked downloaded: a
    # crash in between re-lists the export, never loses files.
    recorder.flush()
    if batch.export_id is not None and not results.errors:
        governor.mark_downloaded(batch.export_id)


def _download_tar(batch, root: str, policy: RetryPolicy, on_landed, on_bytes, config: MirrorConfig) -> Results:
    workdir = Path(tempfile.mkdtemp(prefix="tar-", dir=config.scratch_dir()))
    try:
        tar_task = FileTask(url=batch.tar_url, dest="export.tar", series="", record_key=batch.source, segment="tar")
        fetched = dl.download_files([tar_task], workdir, policy=policy, on_bytes=on_bytes)
        if fetched.errors:
            out = Results()
            for task in batch.tar_members.values():
                out.errors.append(dl.FailedFile(task, f"tar {batch.source}: {fetched.errors[0].error}", 1))
            return out
        return dl.extract_tar(workdir / "export.tar", batch.tar_members, root, on_landed=on_landed,
                              storage_options=config.storage_options())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# -- helpers ---------------------------------------------------------------------------------------
class _LandedRecorder:
    """Records landed files in ``local_files`` in batches, one transaction each.

    One auto-committed MERGE per file costs ~60 ms (a commit each); a batch costs about one.
    A crash loses at most the unflushed rows, and the next run's scan finds those files anyway.
    """

    def __init__(self, catalog: Catalog, root: str, layout: Layout, batch: int = 500, seconds: float = 2.0):
        self.catalog, self.root, self.layout = catalog, root, layout
        self.batch, self.seconds = batch, seconds
        self.items: list[Landed] = []
        self.last = time.monotonic()

    def add(self, item: Landed) -> None:
        self.items.append(item)
        if len(self.items) >= self.batch or time.monotonic() - self.last >= self.seconds:
            self.flush()

    def flush(self) -> None:
        items, self.items = self.items, []
        self.last = time.monotonic()
        if not items:
            return
        import pyarrow as pa

        rows = {"path": [], "dir": [], "series": [], "record_key": [], "segment": [], "size": [], "mtime": [],
                "recnum": []}
        local = "://" not in self.root
        for item in items:
            parsed = self.layout.parse(item.path)
            if parsed is None:  # the layout made this path, so this would be a bug: never record junk
                log.error("landed file %s is not a layout path; not recorded", item.path)
                continue
            if local:
                st = os.stat(os.path.join(self.root, item.path))
                size, mtime = st.st_size, st.st_mtime
            else:
                size, mtime = item.size, None
            rows["path"].append(item.path)
            rows["dir"].append(item.path.rsplit("/", 1)[0] if "/" in item.path else "")
            rows["series"].append(parsed.series)
            rows["record_key"].append(parsed.record_key)
            rows["segment"].append(parsed.segment)
            rows["size"].append(size)
            rows["mtime"].append(mtime)
            rows["recnum"].append(item.task.recnum)
        table = pa.table({k: pa.array(v, type=pa.float64() if k == "mtime" else
                                      (pa.int64() if k in ("size", "recnum") else pa.string()))
                          for k, v in rows.items()})
        self.catalog.con.register("landed_batch", table)
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        try:
            with self.catalog.transaction():
                self.catalog.q("record_landed_files", now=now)
                self.catalog.q("record_landed_checks", now=now)
        finally:
            self.catalog.con.unregister("landed_batch")


def _path_for(config: MirrorConfig) -> Callable[[SeriesDef, str, str], str]:
    templates = {entry.series.lower(): entry.layout for entry in config.series}

    def path_for(definition: SeriesDef, record_key: str, segment: str) -> str:
        return relative_path(definition, split_record_key(record_key), segment, templates.get(definition.name.lower()))

    return path_for


def _transfers(config: MirrorConfig) -> dict[str, Transfer]:
    return {entry.series.lower(): Transfer(method=config.method_for(entry), protocol=config.protocol_for(entry),
                                           template=entry.layout)
            for entry in config.series}


def catalog_keywords(catalog: Catalog, series: str, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The catalog's keyword values of some records (for the as-is header fill), by record key.

    Each record's values also hold ``_recnum``, the version they describe. Dynamic SQL: the table
    name comes from ``keyword_table`` through ``quote_ident``.
    """
    keys = list(keys)
    if not keys:
        return {}
    table = quote_ident(keyword_table(series))
    cursor = catalog.execute(f"SELECT * FROM {table} WHERE _key IN (SELECT unnest($keys)) AND _gone_at IS NULL",
                             {"keys": keys})
    names = [d[0] for d in cursor.description]
    out = {}
    for row in cursor.fetchall():
        values = dict(zip(names, row))
        key = values.pop("_key")
        out[key] = {name: _header_value(value) for name, value in values.items()
                    if not name.startswith("_") and not name.endswith(("_index", "_str"))}
        for name, value in values.items():
            if name.endswith("_str") and value is not None:
                out[key][name[:-4]] = value  # the time prime key as JSOC prints it
        out[key]["_recnum"] = values.get("_recnum")
    return out


def _header_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
    return value


def _fill_series(config: MirrorConfig, override: bool | None) -> set[str]:
    """The series (lower-case) whose as-is FITS files get the catalog's keywords in their header."""
    out = set()
    for entry in config.series:
        wanted = config.header_fill_for(entry) if override is None else override
        if wanted and config.protocol_for(entry) == "as-is":
            out.add(entry.series.lower())
    return out


def _with_headers(catalog: Catalog, batch, fill: set[str]) -> None:
    """Give the batch's FITS tasks of ``fill`` series the catalog's keywords of the version they fetch."""
    wanted = [t for t in [*batch.tasks, *batch.tar_members.values()]
              if t.series.lower() in fill and t.dest.lower().endswith((".fits", ".fts", ".fit"))]
    by_series: dict[str, set[str]] = {}
    for task in wanted:
        by_series.setdefault(task.series, set()).add(task.record_key)
    values = {(series, key): row for series, keys in by_series.items()
              for key, row in catalog_keywords(catalog, series, keys).items()}

    def filled(task: FileTask) -> FileTask:
        row = values.get((task.series, task.record_key))
        if row is None:
            return task
        if task.recnum is not None and row["_recnum"] != task.recnum:
            # reprocessed since the sync: the catalog's keywords would describe other pixels
            log.warning("%s%s %s: JSOC serves RECNUM %s, the catalog has %s; landing it with JSOC's header",
                        task.series, task.record_key, task.segment, task.recnum, row["_recnum"])
            return task
        return replace(task, header={k: v for k, v in row.items() if k != "_recnum"})

    if wanted:
        batch.tasks = [filled(t) for t in batch.tasks]
        batch.tar_members = {name: filled(t) for name, t in batch.tar_members.items()}
