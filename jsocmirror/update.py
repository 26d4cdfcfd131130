"""The nightly job: sync, scan, diff, stage, download, under the mirror's lock.

``update_mirror`` runs every stage; ``fetch_mirror`` skips the sync (it fetches the gaps the
catalog already knows of). Both return an ``UpdateSummary`` (errors as data: the unrecoverable
records are listed with their reason) and never raise for a single file. The order converges
after any crash: the scan first picks up files a killed run renamed into place, export requests
a killed run left behind are resumed before anything new is asked, and downloads resume their
``.part`` files.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from jsocmirror import download as dl
from jsocmirror.catalog import Catalog, keyword_table, quote_ident
from jsocmirror.config import MirrorConfig, check_writable_root
from jsocmirror.download import FileTask, Landed, Results, RetryPolicy
from jsocmirror.net import NetPolicy
from jsocmirror.errors import DeadlineError, JsocMirrorError
from jsocmirror.jsoc import ExportClient, JsocClient
from jsocmirror.layout import Layout, relative_path
from jsocmirror.lock import mirror_lock, reading_lock
from jsocmirror.plan import Gap, PlanLimits, plan_gaps
from jsocmirror.publish import publishing
from jsocmirror.recordset import split_record_key
from jsocmirror.scan import INVENTORY_TABLES, shadow_inventory
from jsocmirror.retention import human_bytes, run_retention
from jsocmirror.series import SeriesDef
from jsocmirror.stage import Governor, StagePolicy, StageResult, Transfer

log = logging.getLogger("jsocmirror.update")

#: Diff states the nightly job fetches. (no_image and offline are never gaps: JSOC has no file,
#: or the file is on tape and an export would be queued for staff; orphans go only as retention says.)
FETCH_STATES = ("missing", "stale", "corrupt")
#: Names of the files the downloader verifies as it writes them (and the rotation re-reads).
FITS_SUFFIXES = (".fits", ".fts", ".fit")


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
    # the rotating re-verification; None: the config's [verify] enabled, for `update` runs of every gap
    verify: bool | None = None
    # UTC "now" (naive) stamping verifications and landings; None: the real clock (tests advance nights)
    clock: Callable[[], datetime] | None = None


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
    exports_abandoned: int = 0  # pending past [transfer] export_max_hours: their records asked for again
    exports_discarded: int = 0  # their files failed in too many runs: replaced by a new request
    exports_refused: int = 0  # a finished export's answer failed the checks: nothing of it kept
    files_downloaded: int = 0
    bytes_downloaded: int = 0  # bytes of the files that landed
    bytes_transferred: int = 0  # bytes read from the network, retries and failed attempts included
    records_downloaded: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)  # unrecoverable this run
    notes: list[dict[str, str]] = field(default_factory=list)  # vanished upstream, left pending...
    jsoc_requests: int = 0
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase
    # the rotating re-verification: files, bytes, damaged, seconds, due, left, mirror_covered_since
    # (dry run: the files and bytes it would read)
    verify: dict[str, Any] = field(default_factory=dict)
    planned_bytes: int = 0  # estimated bytes of the plan's queries
    retention: dict[str, Any] = field(default_factory=dict)  # retention.RetentionResult.as_dict() ({}: none set)
    _failed_tasks: list = field(default_factory=list, repr=False)  # FailedFile objects (not serialised)

    @property
    def exit_code(self) -> int:
        return 1 if self.failures else 0

    @property
    def needs_a_person(self) -> bool:
        """Something to tell even with -q: failures, or retention that was refused, failed or did not run."""
        retention = self.retention or {}
        return bool(self.failures or retention.get("refused") or retention.get("failures") or retention.get("error"))

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
        if self.verify:
            lines.append("  verify: " + _verify_text(self.verify, self.dry_run))
        if self.timings:
            lines.append("  time: " + ", ".join(f"{k} {v:.1f} s" for k, v in self.timings.items()))
        if self.dry_run:
            for item in self.plan:
                lines.append(f"    {item['recordset']}  ({item['records']} records, ~{human_bytes(item['est_bytes'])})")
        else:
            retired = ", ".join(f"{n} {what}" for n, what in ((self.exports_abandoned, "abandoned"),
                                                               (self.exports_discarded, "discarded"),
                                                               (self.exports_refused, "refused")) if n)
            lines.append(f"  staged: {self.listings} listings, {self.exports_submitted} exports submitted, "
                         f"{self.exports_resumed} resumed" + (f", {retired}" if retired else ""))
            lines.append(f"  downloaded: {self.files_downloaded} files, {human_bytes(self.bytes_downloaded)}")
        if self.retention:
            lines.append("  retention: " + self.retention.get("summary", ""))
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


def _verify_text(verify: dict[str, Any], dry_run: bool) -> str:
    size = human_bytes(verify.get("bytes"))
    if dry_run:
        text = f"would verify {verify.get('files', 0)} files ({size}) within {verify.get('budget_seconds', 0):g} s"
    else:
        text = (f"{verify.get('files', 0)} files ({size}) in {verify.get('seconds', 0.0):.1f} s, "
                f"{verify.get('damaged', 0)} damaged")
        if verify.get("left"):
            text += f", {verify['left']} left for the next night"
    since = verify.get("mirror_covered_since")
    never = verify.get("never_verified", 0)
    return text + (f"; every file verified since {since}" if since else
                   f"; {never} files not verified yet" if never else "")


# -- entry points ---------------------------------------------------------------------------------
def update_mirror(config: MirrorConfig, url: str, options: UpdateOptions | None = None, *,
                  progress: Any = None, command: str = "update", wait: float = 0.0) -> UpdateSummary:
    """The nightly job. Takes the mirror lock (LockedError if another run holds it after ``wait`` s).

    A JsocMirrorError raised part way carries the summary so far as ``exc.summary`` (a dict).
    """
    options = options or UpdateOptions()
    if options.dry_run:
        return _dry_run_update(config, url, options, progress, command, wait)
    for name in ("data", "read"):  # an unwritable root is the config's fault: say so before the run starts
        check_writable_root(getattr(config, f"{name}_root"), f"{name} = {getattr(config, name)!r}")
    summary = UpdateSummary(run_id=uuid.uuid4().hex[:12], command=command, dry_run=options.dry_run,
                            started_at=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    with mirror_lock(config.mirror_dir, command, wait=wait):
        try:
            return _run(config, url, options, progress, summary)
        except JsocMirrorError as exc:
            exc.summary = summary.as_dict()
            raise


def fetch_mirror(config: MirrorConfig, url: str, options: UpdateOptions | None = None, *,
                 progress: Any = None) -> UpdateSummary:
    """Stage and download the current gaps (no sync)."""
    options = options or UpdateOptions()
    options.sync = False
    return update_mirror(config, url, options, progress=progress, command="fetch")


def _run(config: MirrorConfig, url: str, options: UpdateOptions, progress: Any, summary: UpdateSummary) -> UpdateSummary:
    started = time.monotonic()
    client = JsocClient(url, email=config.email, policy=config.network)
    # readers see each committed step (sync transactions, scan, batches of landed files, the end)
    with Catalog(config.catalog_path) as catalog:
        from jsocmirror.sync import check_entries

        # a hand-edited entry the known definitions refuse: exit 2 before the run leaves a trace
        # (publishing would hand the entry to the readers)
        check_entries(catalog, [config.get_series(n) for n in options.series] if options.series else config.series)
        _run_stages(config, catalog, client, options, progress, summary, started)
    return summary


def _run_stages(config: MirrorConfig, catalog: Catalog, client: JsocClient, options: UpdateOptions, progress: Any,
                summary: UpdateSummary, started: float) -> None:
    with publishing(catalog, config) as publisher:
        # the run's row first, so a run killed in any stage is marked 'died' by the next one
        catalog.start_run(summary.run_id, summary.command)
        status = "failed"
        hours = config.run.max_hours
        deadline = started + hours * 3600 if hours else None
        try:
            _stages(config, catalog, publisher, client, options, summary, progress, deadline)
            status = "ok" if not summary.failures else "failed"
        except DeadlineError as exc:
            status = "deadline"
            raise DeadlineError(f"{summary.command} stopped at its deadline, [run] max_hours = {hours:g}, while "
                                f"{exc}: what it finished is kept, the rest waits for the next run") from None
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        finally:
            summary.seconds = time.monotonic() - started
            summary.jsoc_requests = client.requests
            try:
                catalog.finish_run(summary.run_id, status, json.dumps(_short(summary)))
            except Exception:  # bookkeeping must never hide the real outcome
                log.warning("could not record the end of run %s", summary.run_id)


def _stages(config: MirrorConfig, catalog: Catalog, publisher, client: JsocClient, options: UpdateOptions,
            summary: UpdateSummary, progress: Any, deadline: float | None = None) -> None:
    command = summary.command
    phase = time.monotonic()
    if options.sync:
        _sync(config, catalog, client, options, summary, progress)
        phase = _lap(summary, "sync", phase)
        _check_deadline(deadline, "starting the scan after the sync")
    from jsocmirror import diff as diff_mod

    registry = diff_mod.series_definitions(catalog)
    layout = diff_mod.layout_for_config(config, registry)
    _scan(config, catalog, layout, summary, progress)
    publisher.step()
    phase = _lap(summary, "scan", phase)
    _check_deadline(deadline, "starting the verification after the scan")
    if _verify_enabled(config, options, command):
        _verify(config, catalog, layout, options, summary)
        publisher.step()
        phase = _lap(summary, "verify", phase)
    gaps = _gaps(config, catalog, options, summary, registry)
    phase = _lap(summary, "diff", phase)
    _check_deadline(deadline, "starting the downloads after the diff")
    options = replace(options, limits=_planning_limits(catalog, registry, gaps, options.limits))
    _stage_and_download(config, catalog, client, layout, registry, gaps, options, summary, progress, deadline)
    phase = _lap(summary, "stage_download", phase)
    _check_deadline(deadline, "starting retention after the downloads")
    if summary.verify:  # the files landed tonight count as verified at landing
        _coverage(catalog, summary)
    # retention is the nightly job's: a fetch (or the sunpy client's fetch of a few gaps) never deletes
    if command == "update" and options.only is None:
        summary.retention = run_retention(catalog, config, series=options.series, had_errors=bool(summary.failures),
                                          run_id=summary.run_id, registry=registry, layout=layout)
        if summary.retention:
            _lap(summary, "retention", phase)


def _check_deadline(deadline: float | None, doing: str) -> None:
    if deadline is not None and time.monotonic() >= deadline:
        raise DeadlineError(doing)


def _lap(summary: UpdateSummary, name: str, since: float) -> float:
    now = time.monotonic()
    summary.timings[name] = round(now - since, 3)
    figures = {"sync": summary.sync, "scan": summary.scan, "verify": summary.verify, "diff": summary.gaps or "no gaps",
               "retention": summary.retention.get("summary", summary.retention),
               "stage_download": {"files": summary.files_downloaded, "bytes": summary.bytes_downloaded,
                                  "exports_submitted": summary.exports_submitted, "failed": len(summary.failures)}}
    log.info("%s done in %.1f s: %s", name, now - since, figures.get(name, ""))
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
    _record_plan(plan, summary)


def _record_plan(plan, summary: UpdateSummary) -> None:
    summary.plan = [{"series": q.series, "recordset": q.recordset, "records": q.n_records, "est_bytes": q.est_bytes}
                    for q in plan.queries]
    summary.planned_bytes = plan.est_bytes


def _stage_and_download(config, catalog, client, layout: Layout, definitions, gaps: list[Gap],
                        options: UpdateOptions, summary: UpdateSummary, progress, deadline: float | None = None) -> None:
    transfers = _transfers(config)
    header_fill = _fill_series(config, options.header_fill)
    connections = options.connections or config.transfer.max_connections
    transfer = config.transfer
    policy = options.stage_policy or StagePolicy(poll_interval=float(transfer.poll_interval),
                                                 max_pending_per_email=transfer.max_pending_exports,
                                                 export_wait=float(transfer.export_wait),
                                                 export_max_hours=float(transfer.export_max_hours))
    governor = Governor(catalog, ExportClient(client), definitions, _path_for(config), email=config.email,
                        run_id=summary.run_id, policy=policy, limits=options.limits, deadline=deadline)
    plan = plan_gaps(gaps, definitions, options.limits)
    summary.planned_queries, summary.planned_records = len(plan.queries), plan.n_records
    _record_plan(plan, summary)  # what a dry run would have shown: the run log and --json keep it
    _log_plan(plan)
    pending = {(g.series, g.record_key, g.segment): g for g in gaps}
    stage = StageResult()
    landed_records: set[tuple[str, str]] = set()
    files_bar = getattr(progress, "files", None)
    bytes_bar = getattr(progress, "bytes", None)
    if files_bar is not None:
        files_bar.total = len(pending)
        files_bar.refresh()
    if bytes_bar is not None and plan.queries and all(q.est_bytes for q in plan.queries):
        bytes_bar.total = sum(q.est_bytes for q in plan.queries)  # the planner's estimate: close enough for a bar
        bytes_bar.refresh()
    root = config.data_root

    recorder = _LandedRecorder(catalog, root, layout, clock=options.clock)

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

    retry = options.retry_policy
    if retry.net == NetPolicy():  # the caller did not choose: the mirror's [network] settings
        retry = replace(retry, net=config.network)
    try:
        batches = list(governor.resume(pending, transfers, stage))
        for batch in batches:
            _download_batch(batch, governor, root, connections, retry, header_fill, catalog,
                            on_landed, on_bytes, summary, config, recorder, deadline)
        for batch in governor.stage(list(pending.values()), transfers, stage):
            _download_batch(batch, governor, root, connections, retry, header_fill, catalog,
                            on_landed, on_bytes, summary, config, recorder, deadline)
    finally:
        recorder.flush()
        summary.listings += stage.listings
        summary.exports_submitted += stage.exports_submitted
        summary.exports_resumed += stage.exports_resumed
        summary.exports_abandoned += stage.exports_abandoned
        summary.exports_discarded += stage.exports_discarded
        summary.exports_refused += stage.exports_refused
    summary.records_downloaded = len(landed_records)
    for problem in stage.problems:
        entry = {"series": problem.series, "record_key": problem.record_key, "segment": problem.segment,
                 "reason": problem.reason, "kind": problem.kind}
        (summary.notes if problem.kind == "vanished" else summary.failures).append(entry)
        log.log(logging.INFO if problem.kind == "vanished" else logging.WARNING, "%s%s %s: %s",
                problem.series, problem.record_key, problem.segment, problem.reason)
    if "://" not in root:
        # Leftover parts (records no longer wanted, a killed run's strays) go; the parts of files
        # that failed for a transient reason stay, so the next run resumes them with Range.
        keep = [dl.part_name(f.task.dest, f.task) for f in summary_failed_tasks(summary) if f.retryable]
        dl.sweep_parts(root, keep=keep)


def _log_plan(plan) -> None:
    log.info("plan: %d queries for %d records, ~%s", len(plan.queries), plan.n_records,
             human_bytes(sum(q.est_bytes or 0 for q in plan.queries)))
    for query in plan.queries:
        log.info("plan: %s (%d records, ~%s)", query.recordset, query.n_records, human_bytes(query.est_bytes))


def summary_failed_tasks(summary: UpdateSummary) -> list:
    return summary._failed_tasks


def _download_batch(batch, governor: Governor, root: str, connections: int, policy: RetryPolicy,
                    header_fill: set[str], catalog: Catalog, on_landed, on_bytes, summary: UpdateSummary,
                    config: MirrorConfig, recorder: _LandedRecorder, deadline: float | None = None) -> None:
    _check_deadline(deadline, f"about to download the files of {batch.source}")
    if header_fill:
        _with_headers(catalog, batch, header_fill)
    if batch.tar_url:
        results = _download_tar(batch, root, policy, on_landed, on_bytes, config)
    else:
        results = dl.download_files(batch.tasks, root, connections=connections, policy=policy,
                                    on_landed=on_landed, on_bytes=on_bytes, storage_options=config.storage_options(),
                                    stop_at=deadline)
    for failed in results.errors:
        summary.failures.append({"series": failed.task.series, "record_key": failed.task.record_key,
                                 "segment": failed.task.segment, "reason": failed.error, "kind": "download"})
        summary._failed_tasks.append(failed)
    # Each batch's files commit as the batch ends, so readers see them even if the next batch
    # waits an hour on an export; and the inventory before the export is marked downloaded: a
    # crash in between re-lists the export, never loses files.
    recorder.flush()
    if batch.export_id is not None:
        if results.errors:
            governor.count_file_failures(batch.export_id)  # a few such runs and the request is replaced
        elif not results.unstarted:
            governor.mark_downloaded(batch.export_id)
    if results.unstarted:
        raise DeadlineError(f"downloading ({len(results.unstarted)} files of {batch.source} not started)")


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

    def __init__(self, catalog: Catalog, root: str, layout: Layout, batch: int = 500, seconds: float = 2.0,
                 clock: Callable[[], datetime] | None = None):
        self.catalog, self.root, self.layout = catalog, root, layout
        self.clock = clock or _utc_now
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
                "recnum": [], "checksum": [], "verified": []}
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
            rows["checksum"].append(item.checksum)
            # the downloader checked a FITS file's structure and sums as it wrote it (FitsSums)
            rows["verified"].append(item.path.lower().endswith(FITS_SUFFIXES))
        types = {"mtime": pa.float64(), "size": pa.int64(), "recnum": pa.int64(), "verified": pa.bool_()}
        table = pa.table({k: pa.array(v, type=types.get(k, pa.string())) for k, v in rows.items()})
        self.catalog.con.register("landed_batch", table)
        now = self.clock()
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


def _utc_now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


# -- the rotating re-verification (issue 12, item 6) ------------------------------------------------
def _verify_enabled(config: MirrorConfig, options: UpdateOptions, command: str) -> bool:
    """The nightly job verifies (as [verify] says); ``fetch`` and a fetch of named gaps (``only``)
    do not, unless asked (``UpdateOptions.verify``)."""
    if options.verify is not None:
        return options.verify
    return config.verify.enabled and command == "update" and options.only is None


def _verify(config: MirrorConfig, catalog: Catalog, layout: Layout, options: UpdateOptions,
            summary: UpdateSummary) -> None:
    """Re-read tonight's slice; what fails becomes a corrupt gap of this same run."""
    from jsocmirror import scan as scan_mod

    settings = config.verify
    result = scan_mod.verify_rotation(catalog, config.data_root, layout, cycle_days=settings.cycle_days,
                                      budget_seconds=settings.budget_seconds, now=(options.clock or _utc_now)(),
                                      storage_options=config.storage_options(), coverage=False)  # _run asks once the night's files have landed
    summary.verify = {"files": result.files, "bytes": result.bytes, "damaged": result.damaged,
                      "seconds": round(result.seconds, 3), "due": result.due, "left": result.left}
    for path, state, problem in result.problems:
        parsed = layout.parse(path)
        if parsed is not None:
            summary.notes.append({"series": parsed.series, "record_key": parsed.record_key,
                                  "segment": parsed.segment, "reason": f"damaged on disk ({state}: {problem}); refetching"})


def _coverage(catalog: Catalog, summary: UpdateSummary) -> None:
    from jsocmirror import scan as scan_mod

    since, never = scan_mod.rotation_coverage(catalog)
    summary.verify["mirror_covered_since"] = since.strftime("%Y-%m-%dT%H:%M:%SZ") if since else None
    summary.verify["never_verified"] = never


# -- the dry run (issue 12, item 4): the plan, and nothing changed anywhere ------------------------
def _dry_run_update(config: MirrorConfig, url: str, options: UpdateOptions, progress: Any,
                    command: str, wait: float = 0.0) -> UpdateSummary:
    """The plan a real run would make now, from the catalog as it is (and, with ``sync``, from
    what JSOC would add), changing nothing: the catalog is opened read-only with the disk's
    inventory in temporary tables, or, to sync, copied to a scratch file that is removed after.
    No run row, no publish, no lock file; JSOC is asked nothing unless ``sync``."""
    started = time.monotonic()
    summary = UpdateSummary(run_id=uuid.uuid4().hex[:12], command=command, dry_run=True,
                            started_at=_utc_now().strftime("%Y-%m-%dT%H:%M:%SZ"))
    with reading_lock(config.mirror_dir, wait=wait):
        _refuse_pending_migrations(config, sync=options.sync)
        if options.sync:
            client = JsocClient(url, email=config.email, policy=config.network)
            with _catalog_copy(config) as catalog:
                from jsocmirror import sync as sync_mod

                phase = time.monotonic()
                result = sync_mod.sync(config, catalog, client, options.series, command=f"{command}-sync",
                                       progress=getattr(progress, "sync", None), publish=False)
                summary.sync = {name: result.total(name) for name in ("new", "reprocessed", "gone")}
                _dry_plan(config, catalog, options, summary, _lap(summary, "sync", phase))
            summary.jsoc_requests = client.requests
        else:
            with Catalog(config.catalog_path, read_only=True) as catalog:
                shadow_inventory(catalog)
                _dry_plan(config, catalog, options, summary, time.monotonic())
    summary.seconds = time.monotonic() - started
    return summary


def _dry_plan(config: MirrorConfig, catalog: Catalog, options: UpdateOptions, summary: UpdateSummary,
              phase: float) -> None:
    from jsocmirror import diff as diff_mod
    from jsocmirror import scan as scan_mod

    registry = diff_mod.series_definitions(catalog)
    layout = diff_mod.layout_for_config(config, registry)
    root = config.data_root
    if "://" in root or os.path.isdir(root):
        result = scan_mod.scan_tree(catalog, root, layout, storage_options=config.storage_options())
        summary.scan = {"files": result.files, "added": result.added, "removed": result.removed}
    else:  # the real run creates it empty: the inventory it then finds
        for table in INVENTORY_TABLES:
            catalog.execute(f"DELETE FROM {quote_ident(table)}")
        summary.scan = {"files": 0, "added": 0, "removed": 0}
    phase = _lap(summary, "scan", phase)
    if _verify_enabled(config, options, summary.command):
        now = (options.clock or _utc_now)()
        due = scan_mod.rotation_due(catalog, config.verify.cycle_days, now)
        files, size = catalog.q("verify_due_size", limit=due).fetchall()[0]
        summary.verify = {"files": files, "bytes": int(size), "budget_seconds": config.verify.budget_seconds}
        _coverage(catalog, summary)
    gaps = _gaps(config, catalog, options, summary, registry)
    _lap(summary, "diff", phase)
    options = replace(options, limits=_planning_limits(catalog, registry, gaps, options.limits))
    _dry_run(gaps, registry, options, summary)
    if summary.command == "update" and options.only is None:
        summary.retention = run_retention(catalog, config, series=options.series, dry_run=True, registry=registry)


def _refuse_pending_migrations(config: MirrorConfig, *, sync: bool) -> None:
    """A dry run applies no migration: it says which ones the catalog lacks, and stops."""
    from jsocmirror.errors import CatalogError

    path = config.catalog_path
    if not path.exists():
        if sync:
            return  # a new mirror: the scratch catalog starts empty, as the real run's would
        raise CatalogError(f"no catalog at {path} yet: a dry run without sync has nothing to plan from "
                           "(add sync, or run 'jsocmirror sync' first)")
    with Catalog(path, read_only=True) as catalog:
        pending = catalog.pending
    if pending:
        raise CatalogError(f"catalog {path} needs migration {', '.join(pending)}; a dry run changes nothing, so it "
                           "stops here (a run without --dry-run applies it)")


@contextmanager
def _catalog_copy(config: MirrorConfig) -> Iterator[Catalog]:
    """A writable scratch copy of the catalog under ``<mirror>/.tmp``, removed afterwards (with
    ``.tmp`` itself when this made it): what a dry run's sync writes is never committed to the mirror."""
    scratch = config.mirror_dir / ".tmp"
    made = not scratch.exists()
    workdir = Path(tempfile.mkdtemp(prefix="dry-run-", dir=config.scratch_dir()))
    try:
        copy = workdir / "catalog.duckdb"
        source = config.catalog_path
        if source.exists():
            shutil.copyfile(source, copy)
            wal = source.with_name(source.name + ".wal")
            if wal.exists():  # a killed writer's last commits: DuckDB replays them into the copy
                shutil.copyfile(wal, copy.with_name(copy.name + ".wal"))
        with Catalog(copy) as catalog:
            yield catalog
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if made:
            with contextlib.suppress(OSError):
                scratch.rmdir()


