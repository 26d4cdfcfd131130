"""The export governor: turn planned queries into files to download, politely and resumably.

Two ways to get a record's file URL (docs/nightly.md):

- **direct** (``url_quick`` + ``as-is``, the default where data are online): ``jsoc_info rs_list``
  with ``seg=`` returns each record's SUMS path, which is downloaded straight from
  ``<server>/SUM...``. No export request, no queue: what JSOC asks clients to prefer. Records
  whose data are offline (on tape) fall back to an export, which makes JSOC stage them.
- **export** (``url``/``fits``, ``url-tar``, and offline data): ``jsoc_fetch exp_request``, then
  ``exp_status`` until the request is done.

Every export request is written to the catalog's ``export_requests`` *before* it is submitted
and updated as it moves, so a restarted run resumes pending request ids (``export_from_id``)
instead of asking again. At most ``max_pending_per_email`` requests are pending at once (JSOC
allows one per email); status 7 waits and retries; 3 splits the query in two; 4 fails the
request (its records are reported); 5 (expired) asks again once; 6 is retried a few times (JSOC's
request is not visible yet). Polling honours the server's ``wait`` and never goes faster than
``poll_interval``. All JSOC traffic goes through the ``ExportAPI`` that ``jsoc.py`` implements,
one call at a time (one connection).
"""

from __future__ import annotations

import json
import logging
import re
import time
from datetime import datetime, timezone
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence

from jsocmirror.catalog import Catalog
from jsocmirror.download import FileTask
from jsocmirror.errors import DeadlineError, JsocError, SourceUnavailable, quoted
from jsocmirror.plan import Gap, PlanLimits, PlannedQuery, plan_gaps
from jsocmirror.series import SeriesDef

log = logging.getLogger("jsocmirror.stage")

#: What we ask the server to name exported files: series, RECNUM and the segment file, so the
#: segment and the version can be read back without trusting the name as a path.
FILENAME_FORMAT = "{seriesname}.{recnum:%lld}.{segment}"
PENDING_STATUSES = (1, 2, 6)


class ExportAPI(Protocol):
    """The JSOC calls the governor needs (implemented in jsoc.py over drms)."""

    base_url: str

    def exp_request(self, ds: str, *, method: str, protocol: str, email: str, filenamefmt: str | None) -> dict: ...

    def exp_status(self, requestid: str) -> dict: ...

    def export_from_id(self, requestid: str) -> dict: ...

    def rs_list_paths(self, ds: str, *, keys: Sequence[str], segments: Sequence[str]) -> dict: ...


@dataclass(frozen=True)
class StagePolicy:
    """How patient and how polite the governor is. Defaults suit the real JSOC."""

    #: Seconds between exp_status polls (the server's ``wait`` is honoured when longer).
    poll_interval: float = 5.0
    #: Seconds one run waits on one export (its polls, or its status-7 resubmissions) before it
    #: leaves the request pending for the next run.
    export_wait: float = 3600.0
    #: A request still pending this many hours after it was submitted is abandoned (JSOC lost it or
    #: it is stuck) and its records are asked for again.
    export_max_hours: float = 48.0
    #: Runs in which a stored export's files failed (404, bad checksums) before the request is
    #: discarded and its records asked for anew.
    max_file_failures: int = 3
    #: Status 7 ("pending export requests"): resubmissions, first wait, cap on the wait.
    busy_retries: int = 12
    busy_wait: float = 30.0
    max_busy_wait: float = 600.0
    #: Status 6 (request not found yet): polls before giving up.
    notfound_retries: int = 5
    #: JSOC allows one pending export per email.
    max_pending_per_email: int = 1
    #: Status 3 (too large): how many times a query may be halved.
    max_split_depth: int = 10
    #: Retries of a JSOC call that failed at the HTTP level.
    call_retries: int = 3


@dataclass(frozen=True)
class RecordProblem:
    """A gap record this run could not turn into a file to download, and why."""

    series: str
    record_key: str
    segment: str
    reason: str
    kind: str = "failed"  # failed | offline | vanished | pending


@dataclass
class Batch:
    """Files ready to download from one listing or one finished export."""

    source: str  # "rs_list" or the export request's requestid
    export_id: int | None  # export_requests.id, or None for direct listings
    tasks: list[FileTask] = field(default_factory=list)
    tar_url: str | None = None  # url-tar: the archive holding the tasks (members by file name)
    tar_members: dict[str, FileTask] = field(default_factory=dict)


@dataclass
class StageResult:
    batches: list[Batch] = field(default_factory=list)
    problems: list[RecordProblem] = field(default_factory=list)
    exports_submitted: int = 0
    exports_resumed: int = 0
    listings: int = 0
    exports_abandoned: int = 0  # pending past export_max_hours: their records asked for again
    exports_discarded: int = 0  # files failed in max_file_failures runs: replaced by a new request
    exports_refused: int = 0  # a finished export's reply failed validation: nothing of it kept


@dataclass(frozen=True)
class Transfer:
    """Per-series transfer settings from the config."""

    method: str = "url_quick"
    protocol: str = "as-is"
    template: str | None = None  # layout template

    @property
    def direct(self) -> bool:
        return self.method == "url_quick" and self.protocol == "as-is"


PathFor = Callable[[SeriesDef, str, str], str]  # (definition, record_key, segment) -> relative path


class Governor:
    """Stages gaps into download batches, journaling every export request in the catalog."""

    def __init__(self, catalog: Catalog, api: ExportAPI, definitions: Mapping[str, SeriesDef] | Any,
                 path_for: PathFor, *, email: str | None, run_id: str | None = None,
                 policy: StagePolicy | None = None, limits: PlanLimits | None = None,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                 deadline: float | None = None):
        self.catalog = catalog
        self.api = api
        self.definitions = definitions
        self.path_for = path_for
        self.email = email
        self.run_id = run_id
        self.policy = policy or StagePolicy()
        self.limits = limits or PlanLimits()
        self.sleep = sleep
        self.clock = clock
        #: ``clock()`` value at which the run must stop ([run] max_hours): no wait goes past it
        self.deadline = deadline
        # catalog RECNUMs of the gaps, for exports that do not say which version they sent (url_quick)
        self._recnums: dict[tuple[str, str], int] = {}

    def _remember(self, gaps: Iterable[Gap]) -> None:
        for gap in gaps:
            if gap.recnum is not None:
                self._recnums[(gap.series.lower(), gap.record_key)] = int(gap.recnum)

    # -- public ------------------------------------------------------------------------------
    def unfinished(self) -> list[dict]:
        """Export requests a previous run left unfinished (planned, submitting, pending, done)."""
        return _rows(self.catalog.q("export_unfinished"))

    def resume(self, gaps: dict[tuple[str, str, str], Gap], transfers: Mapping[str, Transfer],
               result: StageResult) -> Iterable[Batch]:
        """Finish what earlier runs started, for the records that are still gaps.

        Yields one batch per request as it becomes ready; removes the records it covers from
        ``gaps``. Requests whose records are no longer gaps are closed without downloading.
        """
        self._remember(gaps.values())
        for row in self.unfinished():
            keys = set(json.loads(row["record_keys"] or "[]"))
            segments = tuple(json.loads(row["segments"] or "[]"))
            wanted = {(row["series"], k, s) for k in keys for s in segments} & set(gaps)
            if not wanted:
                self._set(row["id"], "downloaded", row["jsoc_status"], None, "no longer needed")
                continue
            retired = self._retirement(row)
            if retired is not None:
                # its records stay gaps: stage() asks JSOC for them anew
                status, reason = retired
                self._set(row["id"], status, row["jsoc_status"], None, reason)
                log.warning("export %s: %s", row["requestid"] or row["id"], reason)
                if status == "abandoned":
                    result.exports_abandoned += 1
                else:
                    result.exports_discarded += 1
                continue
            result.exports_resumed += 1
            for item in wanted:
                gaps.pop(item, None)
            yield from self._drive(row, transfers.get(row["series"].lower(), Transfer()), result, wanted)

    def stage(self, gaps: Iterable[Gap], transfers: Mapping[str, Transfer], result: StageResult) -> Iterable[Batch]:
        """Plan ``gaps`` and yield download batches one query at a time (so at most one export
        is pending while the previous batch downloads)."""
        gaps = list(gaps)
        self._remember(gaps)
        plan = plan_gaps(gaps, self.definitions, self.limits)
        for query in plan.queries:
            transfer = transfers.get(query.series.lower(), Transfer())
            if transfer.direct:
                yield from self._direct(query, transfer, result)
            else:
                yield from self._export(query, transfer, transfer.method, transfer.protocol, result)

    def mark_downloaded(self, export_id: int) -> None:
        self._set(export_id, "downloaded", 0, None, None)

    def count_file_failures(self, export_id: int) -> None:
        """This run's download of the export's files had failures: after ``max_file_failures``
        such runs the next one discards the request instead of trusting its answer again."""
        self.catalog.q("export_count_file_failure", id=export_id)

    def _retirement(self, row: dict) -> tuple[str, str] | None:
        """('abandoned' | 'discarded', why) for a journaled request no longer worth waiting on."""
        if row["status"] in ("submitting", "pending") and row["submitted_at"] is not None:
            hours = (_utc_now() - row["submitted_at"]).total_seconds() / 3600
            if hours >= self.policy.export_max_hours:
                return "abandoned", (f"still pending {hours:.1f} h after it was submitted (more than "
                                     f"export_max_hours = {self.policy.export_max_hours:g}); its records are asked "
                                     "for again")
        failures = row.get("file_failures") or 0
        if row["status"] == "done" and failures >= self.policy.max_file_failures:
            return "discarded", (f"its files failed in {failures} runs; its records are asked for again in a "
                                 "new request")
        return None

    # -- direct: rs_list seg= gives SUMS paths --------------------------------------------------
    def _direct(self, query: PlannedQuery, transfer: Transfer, result: StageResult) -> Iterable[Batch]:
        definition = self._definition(query.series)
        keys = list(definition.primekeys) + ["*recnum*", "*online*"]
        try:
            reply = self._call(self.api.rs_list_paths, query.recordset, keys=keys, segments=query.segments)
        except JsocError as exc:
            result.problems.extend(self._problems(query.series, query.record_keys, query.segments, str(exc)))
            return
        result.listings += 1
        rows = _rs_list_rows(reply, definition, query.segments)
        wanted = set(query.record_keys)
        batch = Batch("rs_list", None)
        offline: list[str] = []
        seen: set[str] = set()
        for key, recnum, online, paths in rows:
            if key not in wanted:
                continue  # never fetch what was not asked for
            seen.add(key)
            if not online or any(not paths.get(seg) for seg in query.segments):
                offline.append(key)
                continue
            for seg in query.segments:
                url = self.api.base_url + paths[seg].lstrip("/")
                batch.tasks.append(FileTask(url=url, dest=self.path_for(definition, key, seg), series=definition.name,
                                            record_key=key, segment=seg, recnum=recnum))
        gone = sorted(wanted - seen)
        result.problems.extend(self._problems(definition.name, gone, query.segments,
                                              "JSOC no longer lists this record (deleted upstream?)", kind="vanished"))
        if batch.tasks:
            yield batch
        if offline:
            # Offline data: an export (url_quick + as-is) makes JSOC stage it from tape.
            sub = plan_gaps([Gap(definition.name, k, s) for k in offline for s in query.segments],
                            self.definitions, self.limits)
            for part in sub.queries:
                yield from self._export(part, transfer, "url_quick", "as-is", result)

    # -- exports ---------------------------------------------------------------------------------
    def _export(self, query: PlannedQuery, transfer: Transfer, method: str, protocol: str,
                result: StageResult, parent_id: int | None = None, depth: int = 0) -> Iterable[Batch]:
        export_id = self._insert(query, method, protocol, parent_id)
        row = self._row(export_id)
        wanted = {(query.series, k, s) for k in query.record_keys for s in query.segments}
        yield from self._drive(row, transfer, result, wanted, depth=depth)

    def _drive(self, row: dict, transfer: Transfer, result: StageResult, wanted: set[tuple[str, str, str]],
               depth: int = 0) -> list[Batch]:
        """Move one journaled request to 'done' (or a final failure) and return its batches
        (several when JSOC made us split it)."""
        export_id = row["id"]
        status = row["status"]
        if status == "done" and row["result"]:
            if row["requestid"] and row["run_id"] != self.run_id:
                # Finished in an earlier run: make sure JSOC still has it (results expire after ~7 days).
                try:
                    reply = self._call(self.api.exp_status, row["requestid"])
                except JsocError:
                    reply = {"status": 0}  # cannot tell; the downloads will say
                code = _status(reply)
                if code == 5 or (code not in (0, *PENDING_STATUSES) and code != -1):
                    return self._expired(row, transfer, result, wanted, depth)
                if code == 0 and reply.get("data"):
                    # asked again: JSOC's answer of tonight (checked) replaces the stored one
                    return self._accept(row, reply, wanted, result)
            # the stored answer is checked again too: a catalog from before the checks may hold a bad one
            return self._accept(row, json.loads(row["result"]), wanted, result)
        if status in ("planned", "submitting"):
            reply = self._submit(row, result)
            if reply is None:
                return []
            code = _status(reply)
            if code == 0:
                return self._accept(self._row(export_id), reply, wanted, result)
            if code == 3:
                return self._split(row, transfer, result, wanted, depth, reply)
            if code not in PENDING_STATUSES:
                self._fail(row, code, reply, result, wanted)
                return []
            row = self._row(export_id)
        return self._poll(row, transfer, result, wanted, depth)

    def _submit(self, row: dict, result: StageResult) -> dict | None:
        """exp_request, waiting out status 7 (busy) politely. None if it never got in."""
        wait = self.policy.busy_wait
        began = self.clock()
        for attempt in range(self.policy.busy_retries + 1):
            if not self._email_slot_free(row["id"]):
                result.problems.extend(self._row_problems(
                    row, "another export request is still pending at JSOC (one per email); asked next run",
                    kind="pending"))
                return None
            self.catalog.q("export_mark_submitting", id=row["id"])
            try:
                reply = self._call(self.api.exp_request, row["query"], method=row["method"],
                                   protocol=row["protocol"], email=self.email or "",
                                   filenamefmt=None if row["method"] == "url_quick" else FILENAME_FORMAT)
            except JsocError as exc:
                # Unknown whether JSOC got it: stay 'submitting'; JSOC returns the same id for the
                # same request within 24 h, so asking again later never duplicates it.
                self._set(row["id"], "submitting", None, None, str(exc))
                result.problems.extend(self._row_problems(row, str(exc), kind="pending"))
                return None
            code = _status(reply)
            if code == 4 and _refuses_email(reply):
                # Every later request would be refused the same way: stop the run (exit code 4).
                self._set(row["id"], "planned", 4, None, reply.get("error"))
                raise SourceUnavailable(f"JSOC refused exports for {self.email!r}: {reply.get('error')} "
                                        "(register it at http://jsoc.stanford.edu/ajax/register_email.html)")
            # status 7 is retried within export_wait: a blocked email must not hold the night for hours
            if code == 7 and attempt < self.policy.busy_retries and self.clock() - began + wait <= self.policy.export_wait:
                self._set(row["id"], "planned", 7, None, reply.get("error"))
                log.info("export %d: JSOC says busy (status 7); waiting %.0f s", row["id"], wait)
                self._nap(wait, f"export {row['id']} waiting out JSOC's status 7")
                wait = min(self.policy.max_busy_wait, wait * 2)
                continue
            if code == 7:
                self._set(row["id"], "planned", 7, None, reply.get("error"))
                result.problems.extend(self._row_problems(row, f"JSOC stayed busy (status 7): {reply.get('error')}",
                                                          kind="pending"))
                return None
            result.exports_submitted += 1
            requestid = reply.get("requestid") or ""
            if code in PENDING_STATUSES:
                self._set(row["id"], "pending", code, requestid, None)
            return reply
        return None

    def _poll(self, row: dict, transfer: Transfer, result: StageResult, wanted: set, depth: int) -> list[Batch]:
        export_id, requestid = row["id"], row["requestid"]
        if not requestid:
            self._set(export_id, "planned", None, None, "no request id recorded; will ask again")
            return self._drive(self._row(export_id), transfer, result, wanted, depth)
        started = self.clock()
        notfound = 0
        first = row["status"] == "pending" and row["run_id"] != self.run_id
        while True:
            try:
                reply = self._call(self.api.export_from_id if first else self.api.exp_status, requestid)
            except JsocError as exc:
                self._set(export_id, "pending", None, None, str(exc))
                result.problems.extend(self._keys_problems(row, wanted, f"export {requestid}: {exc}", kind="pending"))
                return []
            first = False
            code = _status(reply)
            if code == 0:
                return self._accept(row, reply, wanted, result)
            if code == 6:
                notfound += 1
                if notfound > self.policy.notfound_retries:
                    self._fail(row, code, reply, result, wanted)
                    return []
            elif code == 3:
                return self._split(row, transfer, result, wanted, depth, reply)
            elif code == 5:
                return self._expired(row, transfer, result, wanted, depth)
            elif code not in PENDING_STATUSES:
                self._fail(row, code, reply, result, wanted)
                return []
            else:
                self._set(export_id, "pending", code, None, None)
            if self.clock() - started >= self.policy.export_wait:
                msg = (f"export {requestid} still pending after {self.policy.export_wait:g} s (export_wait); "
                       "resumed next run")
                log.warning(msg)
                result.problems.extend(self._keys_problems(row, wanted, msg, kind="pending"))
                return []
            server_wait = _float(reply.get("wait"))
            self._nap(max(self.policy.poll_interval, min(server_wait, 600.0)), f"waiting on export {requestid}")

    def _split(self, row: dict, transfer: Transfer, result: StageResult, wanted: set, depth: int,
               reply: dict) -> list[Batch]:
        keys = sorted(json.loads(row["record_keys"] or "[]"))
        segments = json.loads(row["segments"] or "[]")
        if len(keys) < 2 or depth >= self.policy.max_split_depth:
            self._fail(row, 3, reply, result, wanted)
            return []
        self._set(row["id"], "split", 3, None, reply.get("error"))
        half = len(keys) // 2
        batches: list[Batch] = []
        for part in (keys[:half], keys[half:]):
            sub = plan_gaps([Gap(row["series"], k, s) for k in part for s in segments], self.definitions, self.limits)
            for query in sub.queries:
                part_wanted = {item for item in wanted if item[1] in set(query.record_keys)}
                export_id = self._insert(query, row["method"], row["protocol"], row["id"])
                batches.extend(self._drive(self._row(export_id), transfer, result, part_wanted, depth + 1))
        return batches

    def _expired(self, row: dict, transfer: Transfer, result: StageResult, wanted: set, depth: int) -> list[Batch]:
        self._set(row["id"], "expired", 5, None, "JSOC expired the request")
        if row["parent_id"] is not None and self._row(row["parent_id"])["status"] == "expired":
            result.problems.extend(self._keys_problems(row, wanted, "export expired twice", kind="failed"))
            return []
        keys = sorted({k for _, k, _ in wanted})
        segments = sorted({s for _, _, s in wanted})
        query = PlannedQuery(row["series"], row["query"], tuple(segments), tuple(keys), row["est_bytes"] or 0)
        export_id = self._insert(query, row["method"], row["protocol"], row["id"])
        return self._drive(self._row(export_id), transfer, result, wanted, depth)

    def _fail(self, row: dict, code: int, reply: dict, result: StageResult, wanted: set) -> None:
        error = reply.get("error") or reply.get("errmsg") or f"JSOC status {code}"
        self._set(row["id"], "failed", code, None, error)
        result.problems.extend(self._keys_problems(row, wanted, f"export failed (status {code}): {error}"))

    def _email_slot_free(self, export_id: int) -> bool:
        """At most ``max_pending_per_email`` requests pending at JSOC. This process drives one
        request at a time and resumes leftovers first, so a taken slot means an export that an
        earlier run (or this one) gave up waiting for: wait one poll, then leave it for next run."""
        for attempt in range(2):
            busy = self.catalog.q("export_pending_for_email", email=self.email).fetchall()[0][0]
            own = 1 if self._row(export_id)["status"] in ("submitting", "pending") else 0
            if busy - own < self.policy.max_pending_per_email:
                return True
            if attempt == 0:
                self._nap(self.policy.poll_interval, "waiting for the email's export slot")
        return False

    def _accept(self, row: dict, reply: dict, wanted: set, result: StageResult) -> list[Batch]:
        """A finished export's answer: checked before any of it is stored or used. A refused one
        leaves its records gaps, so the next run asks JSOC again."""
        problem = check_export_reply(reply, self._definition(row["series"]))
        if problem is not None:
            source = row["requestid"] or "url_quick"
            self._set(row["id"], "refused", 0, None, f"reply refused: {problem}")
            result.exports_refused += 1
            log.warning("export %s: reply refused: %s", source, problem)
            result.problems.extend(self._keys_problems(
                row, wanted, f"export {source}: JSOC's reply refused ({problem}); asked again next run"))
            return []
        self._result(row["id"], reply)
        return [self._batch(self._row(row["id"]), reply, wanted, result)]

    def _nap(self, seconds: float, doing: str) -> None:
        """Sleep, but never past the run's deadline: there, stop the run (DeadlineError)."""
        if self.deadline is not None:
            left = self.deadline - self.clock()
            if left <= seconds:
                self.sleep(max(0.0, left))
                raise DeadlineError(doing)
        self.sleep(seconds)

    # -- results -> download tasks -------------------------------------------------------------------
    def _batch(self, row: dict, reply: dict, wanted: set[tuple[str, str, str]], result: StageResult) -> Batch:
        definition = self._definition(row["series"])
        batch = Batch(row["requestid"] or "url_quick", row["id"])
        base = self.api.base_url
        folder = (reply.get("dir") or "").strip("/")
        landed: set[tuple[str, str, str]] = set()
        pending_link: dict[str, list[str]] = {}
        entries = []
        for item in reply.get("data") or []:
            record, filename = str(item.get("record", "")), str(item.get("filename", ""))
            if not filename or filename == "NoDataFile":
                continue
            key, seg_hint = _parse_record(record)
            entries.append((key, seg_hint, filename))
        named = [(key, filename, *_segment_and_recnum(filename, seg_hint, definition))
                 for key, seg_hint, filename in entries]
        # files whose name says their segment first: a record's one file left unnamed is then the
        # one segment left (JSOC's default names of AIA's image are "...image_lev1.fits")
        named.sort(key=lambda entry: entry[2] is None)
        for key, filename, segment, recnum in named:
            if segment is None:
                options = [s for (_, k, s) in wanted if k == key and (definition.name, k, s) not in landed]
                pending_link.setdefault(key, [])
                unmatched = [s for s in options if s not in pending_link[key]]
                segment = unmatched[0] if len(unmatched) == 1 else None
            if segment is None or (definition.name, key, segment) not in wanted:
                continue
            landed.add((definition.name, key, segment))
            pending_link.setdefault(key, []).append(segment)
            dest = self.path_for(definition, key, segment)
            if filename.startswith("/"):
                url = base + filename.lstrip("/")
            else:
                url = base + (folder + "/" if folder else "") + filename
            if recnum is None:
                recnum = self._recnums.get((definition.name.lower(), key))
            task = FileTask(url=url, dest=dest, series=definition.name, record_key=key, segment=segment,
                            recnum=recnum)
            if reply.get("tarfile"):
                batch.tar_members[filename] = task
            else:
                batch.tasks.append(task)
        if reply.get("tarfile"):
            batch.tar_url = base + str(reply["tarfile"]).lstrip("/")
        missing = wanted - landed
        for series, key, segment in sorted(missing):
            result.problems.append(RecordProblem(series, key, segment,
                                                 f"export {batch.source} returned no file for it (no image, or gone)",
                                                 kind="vanished"))
        return batch

    # -- catalog journal --------------------------------------------------------------------------
    def _insert(self, query: PlannedQuery, method: str, protocol: str, parent_id: int | None) -> int:
        rows = self.catalog.q(
            "export_insert", run_id=self.run_id, series=query.series, query=query.recordset, method=method,
            protocol=protocol, email=self.email, n_records=query.n_records, est_bytes=query.est_bytes,
            parent_id=parent_id, record_keys=json.dumps(list(query.record_keys)),
            segments=json.dumps(list(query.segments)),
        ).fetchall()
        return int(rows[0][0])

    def _row(self, export_id: int) -> dict:
        rows = _rows(self.catalog.q("export_get", id=export_id))
        return rows[0]

    def _set(self, export_id: int, status: str, jsoc_status: int | None, requestid: str | None,
             error: str | None) -> None:
        self.catalog.q("export_update", id=export_id, status=status, jsoc_status=jsoc_status,
                       requestid=requestid, error=error)

    def _result(self, export_id: int, reply: dict) -> None:
        keep = {k: reply.get(k) for k in ("requestid", "method", "protocol", "dir", "tarfile", "data", "count")}
        self.catalog.q("export_set_result", id=export_id, result=json.dumps(keep))

    # -- helpers ------------------------------------------------------------------------------------
    def _definition(self, series: str) -> SeriesDef:
        definition = self.definitions.get(series)
        if definition is None:
            raise JsocError(f"no series definition for {series!r}")
        return definition

    def _call(self, fn, *args, **kwargs):
        """One JSOC call, retried a few times on HTTP-level failures with growing pauses."""
        last: Exception | None = None
        for attempt in range(self.policy.call_retries):
            try:
                return fn(*args, **kwargs)
            except JsocError as exc:
                last = exc
                if attempt + 1 < self.policy.call_retries:
                    self._nap(min(60.0, self.policy.poll_interval * (2 ** attempt)), "retrying a JSOC call")
        assert last is not None
        raise last

    def _problems(self, series: str, keys: Iterable[str], segments: Iterable[str], reason: str,
                  kind: str = "failed") -> list[RecordProblem]:
        segments = list(segments)
        return [RecordProblem(series, k, s, reason, kind) for k in keys for s in segments]

    def _row_problems(self, row: dict, reason: str, kind: str = "failed") -> list[RecordProblem]:
        keys = json.loads(row["record_keys"] or "[]")
        return self._problems(row["series"], keys, json.loads(row["segments"] or "[]"), reason, kind)

    def _keys_problems(self, row: dict, wanted: set, reason: str, kind: str = "failed") -> list[RecordProblem]:
        return [RecordProblem(series, key, seg, reason, kind) for series, key, seg in sorted(wanted)]


# -- module helpers ------------------------------------------------------------------------------
def _rows(cursor) -> list[dict]:
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def _refuses_email(reply: dict) -> bool:
    """JSOC's status-4 answer to an address it does not know (jsoc_fetch: "email address has been
    neither validated nor registered")."""
    error = str(reply.get("error") or "").lower()
    return "email" in error and ("regist" in error or "validat" in error)


def _status(reply: Mapping[str, Any]) -> int:
    try:
        return int(reply.get("status", -1))
    except (TypeError, ValueError):
        return -1


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _parse_record(record: str) -> tuple[str, str | None]:
    """``hmi.M_45s[2012...][2]{magnetogram}`` -> (``[2012...][2]``, ``magnetogram``)."""
    start = record.find("[")
    if start < 0:
        return "", None
    brace = record.find("{", start)
    key = record[start:brace] if brace >= 0 else record[start:]
    seg = record[brace + 1:record.rfind("}")] if brace >= 0 else None
    return key.strip(), (seg.strip() if seg else None)


def _segment_and_recnum(filename: str, seg_hint: str | None, definition: SeriesDef) -> tuple[str | None, int | None]:
    """Segment and RECNUM of an export file: from the record's ``{seg}`` when JSOC gives it,
    else from our filenamefmt ``{seriesname}.{recnum}.{segment}``. SUMS paths (url_quick) end
    in the segment's file name."""
    base = filename.rsplit("/", 1)[-1]
    recnum = None
    segfile = base
    parts = base.split(".")
    series_parts = definition.name.split(".")
    if len(parts) > len(series_parts) + 1 and [p.lower() for p in parts[:len(series_parts)]] == [
            p.lower() for p in series_parts] and parts[len(series_parts)].isdigit():
        recnum = int(parts[len(series_parts)])
        segfile = ".".join(parts[len(series_parts) + 1:])
    if seg_hint and definition.segment(seg_hint):
        return definition.segment(seg_hint).name, recnum
    stem = segfile.rsplit(".", 1)[0] if "." in segfile else segfile
    # our own names end in the segment; JSOC's default ones (series.T_REC.WAVELNTH.spikes) too
    seg = definition.segment(stem) or definition.segment(stem.rsplit(".", 1)[-1])
    return (seg.name if seg else None), recnum


def _rs_list_rows(reply: Mapping[str, Any], definition: SeriesDef, segments: Sequence[str]):
    """(record_key, recnum, online, {segment: path}) for each row of an rs_list reply."""
    count = int(reply.get("count", 0) or 0)
    if not count:
        return []
    columns = {str(k.get("name")): k.get("values") or [] for k in reply.get("keywords") or []}
    seg_paths = {str(s.get("name")).lower(): s.get("values") or [] for s in reply.get("segments") or []}
    out = []
    pk_columns = []
    for key in definition.primekeys:
        column = next((v for name, v in columns.items() if name.lower() == key.lower()), None)
        if column is None:
            raise JsocError(f"rs_list reply for {definition.name} lacks prime key {key}")
        pk_columns.append(column)
    recnums = columns.get("*recnum*", [])
    onlines = columns.get("*online*", [])
    for i in range(count):
        key = "".join(f"[{col[i]}]" for col in pk_columns)
        recnum = _int(recnums[i]) if i < len(recnums) else None
        online = str(onlines[i]).strip().upper() not in ("0", "N", "NO", "FALSE") if i < len(onlines) else True
        paths = {}
        for seg in segments:
            values = seg_paths.get(seg.lower(), [])
            path = str(values[i]) if i < len(values) else ""
            paths[seg] = "" if path in ("", "NoDataFile") or not path.startswith("/") else path
        out.append((key, recnum, online, paths))
    return out


def _int(value: Any) -> int | None:
    try:
        return int(str(value), 0)
    except (TypeError, ValueError):
        return None


def _utc_now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)  # the journal's TIMESTAMPs are naive UTC


# -- checking a finished export's answer ---------------------------------------------------------
#: Longest file name component and whole name accepted in an export's answer (POSIX NAME_MAX, and
#: well past any SUMS path).
NAME_MAX = 255
PATH_MAX = 1024
#: Largest export size (MB) believed: 100 TB, far past JSOC's own request limit.
MAX_EXPORT_MB = 10**8
_SUMS_PATH = re.compile(r"^/SUM\d*/")
_UNSAFE = set("\\?#:") | {chr(c) for c in range(32)} | {"\x7f"}


def check_export_reply(reply: Mapping[str, Any], definition: SeriesDef) -> str | None:
    """Why a status-0 export answer cannot be trusted, or None. Names must be plain relative file
    names or SUMS paths that stay where they are put, counts must agree, sizes must be sizes."""
    data = reply.get("data")
    data = [] if data is None else data
    if not isinstance(data, list):
        return f"'data' is a {type(data).__name__}, not a list of files"
    return (_folders_problem(reply) or _size_problem(reply.get("size"))
            or _count_problem(reply.get("count"), data) or _entries_problem(data, definition))


def _folders_problem(reply: Mapping[str, Any]) -> str | None:
    for name in ("dir", "tarfile"):
        value = reply.get(name)
        problem = _path_problem(value, absolute=True) if value not in (None, "") else None
        if problem:
            return f"{name} {quoted(value)} {problem}"
    return None


def _size_problem(size: Any) -> str | None:
    if size in (None, ""):
        return None
    try:
        mb = float(str(size))
    except ValueError:
        return f"size {quoted(size)} is not a number of MB"
    if not 0 <= mb <= MAX_EXPORT_MB:
        return f"size {quoted(size)} MB is not a believable export size (0 to {MAX_EXPORT_MB} MB)"
    return None


def _count_problem(count: Any, data: list) -> str | None:
    """JSOC's count is the files' (302 for 151 AIA records of two segments each)."""
    if count in (None, ""):
        return None
    try:
        said = int(str(count))
    except ValueError:
        return f"count {quoted(count)} is not an integer"
    files = sum(1 for item in data if not (isinstance(item, dict) and item.get("filename") == "NoDataFile"))
    if said < 0 or files > said:
        return f"{files} files listed for a count of {said}"
    return None


def _entries_problem(data: list, definition: SeriesDef) -> str | None:
    seen: set[str] = set()
    series = definition.name.lower()
    for item in data:
        if not isinstance(item, dict):
            return f"a 'data' entry is a {type(item).__name__}, not an object"
        record, filename = item.get("record"), item.get("filename")
        if not isinstance(record, str) or not record.lower().startswith(series + "[") or len(record) > PATH_MAX \
                or any(c in _UNSAFE and c != ":" for c in record):
            return f"record {quoted(record)} is not a record of {definition.name}"
        if filename == "NoDataFile":
            continue
        problem = _path_problem(filename, absolute=False)
        if problem:
            return f"file name {quoted(filename)} {problem}"
        if filename in seen:
            return f"file name {quoted(filename)} is listed twice"
        seen.add(filename)
    return None


def _path_problem(value: Any, *, absolute: bool) -> str | None:
    if not isinstance(value, str) or not value:
        return "is not a name"
    if len(value) > PATH_MAX:
        return f"is longer than {PATH_MAX} characters"
    bad = next((c for c in value if c in _UNSAFE), None)
    if bad is not None:
        return f"holds {bad!r}"
    if absolute and not value.startswith("/"):
        return "is not an absolute path"
    if value.startswith("/") and not _SUMS_PATH.match(value):
        return "is not a SUMS path (/SUM<n>/...)"
    parts = value.split("/")
    for i, part in enumerate(parts):
        if part in (".", ".."):
            return f"climbs with {part!r}"
        if not part and not (i == 0 and value.startswith("/")):
            return "has an empty component"
        if len(part.encode("utf-8", "surrogatepass")) > NAME_MAX:
            return f"has a component longer than {NAME_MAX} bytes"
    return None
