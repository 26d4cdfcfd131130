"""Retention: what the mirror no longer keeps, in the spirit of NetDRMS's ``sum_rm``.

Per series (``[[series]]`` in jsocmirror.toml):

- ``keep = "90d"``: records whose time prime key is older than now - keep are not wanted;
- ``max_bytes = "2 TB"``: when the series' files exceed it, the oldest records go (whole record
  times at once) until they fit;
- ``orphans = "keep" | "trash" | "delete"``: layout files no wanted record accounts for (records
  deleted upstream, series or segments dropped from the config, outside the window).

``plan_retention`` says what would go (pure data); ``apply_retention`` does it. The rules, from
rclone's and sum_rm's: nothing is removed in a run that had errors; never more than
``[retention] max_delete_fraction`` of a series' files in one run (a catalog that lost its rows
would make everything look orphaned); only files the inventory holds as layout files, whose path
the layout parses back to the same record, under the data root, are ever touched; trash goes to
``<trash>/<UTC date>/<layout path>`` and dated trash folders are emptied after ``trash_days``.
Each removal leaves the inventory (``local_files``) in the step that makes it, and the quota's
horizon is recorded first (``retention_horizons``), so the diff never wants a removed record
back as a gap and the nightly job never refetches what retention removed.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import stat
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any, Iterable, Iterator

import pyarrow as pa

from jsocmirror.catalog import Catalog, keyword_table, quote_ident
from jsocmirror.errors import JsocMirrorError

log = logging.getLogger("jsocmirror.retention")

REASONS = ("keep", "quota", "orphan")
#: Files removed per inventory transaction (each commit also publishes the readers' copy).
BATCH = 500
_DATED = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_clock: ContextVar[datetime | None] = ContextVar("jsocmirror_retention_clock", default=None)


def utc_now() -> datetime:
    """Now, as naive UTC (the catalog's TIMESTAMPs), or the time ``clock`` set."""
    return _clock.get() or datetime.now(timezone.utc).replace(tzinfo=None)


@contextmanager
def clock(now: datetime) -> Iterator[None]:
    """Run retention (and the diff's horizons) as if it were ``now`` (naive UTC): replays, tests."""
    token = _clock.set(now)
    try:
        yield
    finally:
        _clock.reset(token)


# -- results ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Removal:
    """One file that goes, and why."""

    series: str
    path: str  # relative to the data root
    size: int
    reason: str  # keep | quota | orphan
    action: str  # delete | trash
    record_key: str
    segment: str
    detail: str = ""


@dataclass
class SeriesPlan:
    series: str
    configured: bool
    files: int = 0  # layout files (zero-byte ones too) of the series now
    bytes: int = 0
    quota: int | None = None
    keep_before: datetime | None = None
    quota_before: datetime | None = None  # the quota horizon once the plan is applied
    stored_horizon: bool = False  # a retention_horizons row exists
    removals: list[Removal] = field(default_factory=list)
    kept_orphans: int = 0
    refused: str | None = None  # the guard's note: nothing of this series goes
    notes: list[str] = field(default_factory=list)

    def by_reason(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for r in self.removals:
            acc = out.setdefault(r.reason, {"files": 0, "bytes": 0})
            acc["files"] += 1
            acc["bytes"] += r.size
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"series": self.series, "configured": self.configured, "files": self.files, "bytes": self.bytes,
                "quota": self.quota, "keep_before": _iso(self.keep_before), "quota_before": _iso(self.quota_before),
                "remove": self.by_reason(), "kept_orphans": self.kept_orphans, "refused": self.refused,
                "notes": list(self.notes)}


@dataclass
class RetentionPlan:
    """What would go: per series and reason, and the trash folders due to be emptied."""

    now: datetime
    series: dict[str, SeriesPlan] = field(default_factory=dict)
    trash_folders: list[str] = field(default_factory=list)  # absolute paths of dated trash folders

    def removals(self) -> list[Removal]:
        """What would go (refused series left out)."""
        return [r for sp in self.series.values() if not sp.refused for r in sp.removals]

    def refused(self) -> dict[str, str]:
        return {name: sp.refused for name, sp in self.series.items() if sp.refused}

    def as_dict(self) -> dict[str, Any]:
        return {"now": _iso(self.now), "trash_folders": list(self.trash_folders),
                "series": [sp.as_dict() for sp in self.series.values() if sp.removals or sp.refused or sp.quota
                           or sp.keep_before or sp.notes]}


@dataclass
class RetentionResult:
    """What one retention run did (or, dry, would do)."""

    dry_run: bool = False
    skipped: str | None = None  # why nothing was done at all
    removed: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)  # series -> reason -> files/bytes
    deleted: int = 0
    trashed: int = 0
    bytes_freed: int = 0
    refused: dict[str, str] = field(default_factory=dict)
    trash_emptied: list[str] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)  # path, reason
    notes: list[str] = field(default_factory=list)

    @property
    def files(self) -> int:
        return sum(acc["files"] for reasons in self.removed.values() for acc in reasons.values())

    def summary_line(self, *, refusals: bool = True) -> str:
        """One line: what went (or would go); ``refusals=False`` names refused series without the note."""
        if self.skipped:
            return f"nothing removed: {self.skipped}"
        verb = "would remove" if self.dry_run else "removed"
        total = sum(acc["bytes"] for reasons in self.removed.values() for acc in reasons.values())
        by = {}
        for reasons in self.removed.values():
            for reason, acc in reasons.items():
                by[reason] = by.get(reason, 0) + acc["files"]
        parts = [f"{verb} {self.files} files ({human_bytes(total)})"
                 + (" (" + ", ".join(f"{k} {by[k]}" for k in REASONS if k in by) + ")" if by else "")]
        if not self.dry_run and self.files:
            parts.append(f"deleted {self.deleted}, trashed {self.trashed}")
        if self.trash_emptied:
            parts.append(f"{'would empty' if self.dry_run else 'emptied'} {len(self.trash_emptied)} trash folders")
        for name, note in self.refused.items():
            parts.append(f"REFUSED {name}: {note}" if refusals else f"REFUSED {name} (see above)")
        if self.failures:
            parts.append(f"{len(self.failures)} files could not be removed")
        return "; ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items()}
        out["files"] = self.files
        out["summary"] = self.summary_line()
        return out


def human_bytes(n: int | None) -> str:
    value = float(n or 0)
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if value < 1000 or unit == "PB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} PB"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(sep=" ") if value is not None else None


# -- the horizon the diff keeps to -------------------------------------------------------------------
def horizon_for(catalog: Catalog, entry, series_name: str) -> datetime | None:
    """The earliest record time (naive UTC) a series still wants: now - keep, or the recorded quota
    horizon, whichever is later; None when neither applies. ``diff.wanted_select_sql`` keeps to it."""
    horizon = utc_now() - timedelta(seconds=entry.keep_seconds) if entry.keep else None
    if entry.max_bytes is not None and catalog.has_table("retention_horizons"):
        rows = catalog.q("retention_horizon_get", series=series_name).fetchall()
        if rows and rows[0][0] is not None:
            horizon = rows[0][0] if horizon is None else max(horizon, rows[0][0])
    return horizon


def wants_retention(config, series: Iterable[str] | None = None) -> bool:
    """Whether any retention setting applies (else a run costs nothing, not even a diff)."""
    entries = config.series if series is None else [config.get_series(name) for name in series]
    if any(e.keep or e.max_bytes is not None or config.orphans_for(e) != "keep" for e in entries):
        return True
    return series is None and (config.retention.orphans != "keep" or os.path.isdir(config.trash_root))


# -- planning ---------------------------------------------------------------------------------------
def plan_retention(catalog: Catalog, config, series: str | Iterable[str] | None = None, *,
                   now: datetime | None = None, registry=None, force: bool = False) -> RetentionPlan:
    """What retention would remove now, per series and reason (nothing is changed).

    ``series`` limits it to those series (configured ones, or series the inventory still holds
    files of); trash folders are emptied only by a whole-mirror run. ``force`` lifts the
    ``max_delete_fraction`` guard (an operator who checked the plan).
    """
    if now is not None:
        with clock(now):
            return plan_retention(catalog, config, series, registry=registry, force=force)
    from jsocmirror import diff as diff_mod

    now = utc_now()
    registry = registry or diff_mod.series_definitions(catalog)
    totals = {name: (n, int(b)) for name, n, b in catalog.q("retention_series_totals").fetchall()}
    names = None if series is None else ([series] if isinstance(series, str) else list(series))
    plan = RetentionPlan(now=now)
    scope = _scope(config, registry, totals, names)
    for name, entry in scope:
        files, size = totals.get(name, (0, 0))
        plan.series[name] = SeriesPlan(name, configured=entry is not None, files=files, bytes=size,
                                       quota=config.quota_for(entry) if entry is not None else None)
    entries = {name: entry for name, entry in scope if entry is not None}
    for name, entry in entries.items():
        _plan_keep(catalog, entry, registry.get(name), plan.series[name], now)
    _plan_orphans(catalog, config, plan, registry, whole=names is None)
    for name, entry in entries.items():
        _plan_quota(catalog, entry, registry.get(name), plan.series[name])
    fraction = float(config.retention.max_delete_fraction)
    for sp in plan.series.values():
        if sp.removals and not force and len(sp.removals) > fraction * sp.files:
            sp.refused = (f"would remove {len(sp.removals)} of its {sp.files} files ({len(sp.removals) / sp.files:.0%}), "
                          f"more than [retention] max_delete_fraction = {fraction:g} allows in one run; if the catalog "
                          f"is right, run 'jsocmirror prune --force {sp.series}' (or raise max_delete_fraction)")
            log.info("retention refused for %s: %s", sp.series, sp.refused)
    if names is None:
        plan.trash_folders = _due_trash(config, now)
    return plan


def _scope(config, registry, totals: dict[str, tuple[int, int]], names: list[str] | None):
    """(canonical series name, its entry or None) of the series a plan covers."""
    configured = {}
    for entry in config.series:
        sd = registry.get(entry.series)
        configured[entry.series.lower()] = (sd.name if sd is not None else entry.series, entry)
    on_disk = {name.lower(): name for name in totals}
    if names is None:
        wanted = list(configured) + [k for k in on_disk if k not in configured]
    else:
        wanted = []
        for name in names:
            key = name.strip().lower()
            if key not in configured and key not in on_disk:
                config.get_series(name)  # raises, listing the configured series
            wanted.append(key)
    out = []
    for key in dict.fromkeys(wanted):
        out.append(configured[key] if key in configured else (on_disk[key], None))
    return out


def _time_view(catalog: Catalog, sd, sp: SeriesPlan) -> bool:
    """Define retention_times for a series (record key -> time prime key); False if it cannot be."""
    table = keyword_table(sd.name) if sd is not None else None
    columns = {c.lower(): c for c in catalog.table_columns(table)} if table else {}
    time_kw = next((kw for kw in sd.primekey_keywords if kw.is_time and kw.name.lower() in columns), None) if sd else None
    if time_kw is None:
        sp.notes.append("no keyword table with a time prime key yet (run 'jsocmirror sync'): keep and max_bytes wait")
        return False
    catalog.execute(f"CREATE OR REPLACE TEMP VIEW retention_times AS SELECT _key AS record_key, "
                    f"{quote_ident(columns[time_kw.name.lower()])} AS t FROM {quote_ident(table)}")
    return True


def _plan_keep(catalog: Catalog, entry, sd, sp: SeriesPlan, now: datetime) -> None:
    rows = catalog.q("retention_horizon_get", series=sp.series).fetchall()
    sp.stored_horizon = bool(rows)
    sp.quota_before = rows[0][0] if rows and entry.max_bytes is not None else None
    if not entry.keep:
        return
    sp.keep_before = now - timedelta(seconds=entry.keep_seconds)
    if sp.files and _time_view(catalog, sd, sp):
        for path, size, key, segment, t in catalog.q("retention_keep_files", series=sp.series,
                                                      before=sp.keep_before).fetchall():
            sp.removals.append(Removal(sp.series, path, size, "keep", "delete", key, segment,
                                       f"record time {t:%Y-%m-%d %H:%M:%S} UTC is older than keep = {entry.keep}"))


def _plan_quota(catalog: Catalog, entry, sd, sp: SeriesPlan) -> None:
    if entry.max_bytes is None or not sp.files or not _time_view(catalog, sd, sp):
        return
    quota = sp.quota
    with _registered(catalog, "retention_planned", _rows_table(sp.removals)):
        left, untimed, newest = catalog.q("retention_quota_totals", series=sp.series).fetchall()[0]
        cut = sp.quota_before
        if left > quota and newest is not None:
            fit = catalog.q("retention_quota_cut", series=sp.series, budget=quota - untimed).fetchall()[0][0]
            if fit is None:
                fit = newest
                sp.notes.append(f"max_bytes = {entry.max_bytes} is smaller than the newest record's files: they stay")
            cut = fit if cut is None else max(cut, fit)
        if cut is None:
            return
        sp.quota_before = cut
        for path, size, key, segment, t in catalog.q("retention_quota_files", series=sp.series,
                                                      before=cut).fetchall():
            sp.removals.append(Removal(sp.series, path, size, "quota", "delete", key, segment,
                                       f"max_bytes = {entry.max_bytes}: oldest records go first (record time {t:%Y-%m-%d %H:%M:%S})"))
    if untimed > quota:
        sp.notes.append("files without a catalog record exceed the quota alone; the quota never removes them")


def _plan_orphans(catalog: Catalog, config, plan: RetentionPlan, registry, *, whole: bool) -> None:
    """Orphans as the diff finds them, for the series whose policy is trash or delete."""
    from jsocmirror import diff as diff_mod

    entries = {e.series.lower(): e for e in config.series}
    policy = {name: config.orphans_for(entries.get(name.lower())) for name in plan.series}
    if all(p == "keep" for p in policy.values()):
        return
    configured = [name for name, sp in plan.series.items() if sp.configured]
    result = diff_mod.diff_mirror(catalog, config, None if whole or len(configured) < len(plan.series) else configured,
                                  registry=registry)
    # a series without a keyword table, or whose last sync did not finish, has no trustworthy
    # wanted set: every file of it would look orphaned
    untrusted = {s.lower() for s in result.skipped}
    untrusted |= {s.lower() for (s,) in catalog.q("retention_incomplete_syncs").fetchall()}
    planned = {r.path for sp in plan.series.values() for r in sp.removals}
    by_lower = {name.lower(): name for name in plan.series}
    for row in result.gaps(["orphan"]):
        name = by_lower.get(row.series.lower())
        if name is None or row.path is None or row.path in planned:
            continue
        sp = plan.series[name]
        if policy[name] == "keep":
            sp.kept_orphans += 1
            continue
        if name.lower() in untrusted:
            note = "orphans stay: its catalog is not complete (no keyword table, or an unfinished sync)"
            if note not in sp.notes:
                sp.notes.append(note)
            continue
        sp.removals.append(Removal(name, row.path, int(row.size or 0), "orphan", policy[name], row.record_key,
                                   row.segment, row.reason or ""))


def _due_trash(config, now: datetime) -> list[str]:
    """Dated trash folders whose every file has been in the trash for ``trash_days``."""
    root = config.trash_root
    try:
        names = sorted(os.listdir(root))
    except FileNotFoundError:
        return []
    out = []
    limit = now - timedelta(days=float(config.retention.trash_days))
    for name in names:
        path = os.path.join(root, name)
        if not _DATED.match(name) or os.path.islink(path) or not os.path.isdir(path):
            continue  # only what retention made; anything else in the trash is the operator's
        try:
            day = date.fromisoformat(name)
        except ValueError:
            continue
        if datetime(day.year, day.month, day.day) + timedelta(days=1) <= limit:
            out.append(path)
    return out


# -- applying ---------------------------------------------------------------------------------------
def apply_retention(catalog: Catalog, config, plan: RetentionPlan, *, dry_run: bool = False,
                    had_errors: bool = False, run_id: str | None = None, layout=None) -> RetentionResult:
    """Remove what ``plan`` lists (not its refused series), record the horizons, empty due trash.

    ``had_errors``: the run failed somewhere, so nothing is removed (rclone's rule). ``dry_run``:
    the result lists what would go and nothing changes.
    """
    result = RetentionResult(dry_run=dry_run, refused=plan.refused())
    if had_errors:
        result.skipped = "the run had errors (nothing is removed in a run that had errors)"
        return result
    if dry_run:
        for r in plan.removals():
            _tally(result, r)
        result.trash_emptied = list(plan.trash_folders)
        return result
    if layout is None:
        from jsocmirror import diff as diff_mod

        layout = diff_mod.layout_for_config(config, diff_mod.series_definitions(catalog))
    target = _Target(config)
    for sp in plan.series.values():
        if sp.refused:
            continue
        if sp.configured and (sp.stored_horizon or sp.quota_before is not None or sp.keep_before is not None):
            with catalog.transaction():  # before any file goes: a crash never makes a removed record a gap
                catalog.q("retention_horizon_put", series=sp.series, quota_before=sp.quota_before,
                          keep_before=sp.keep_before, run_id=run_id)
        for start in range(0, len(sp.removals), BATCH):
            _remove_batch(catalog, target, layout, sp.removals[start:start + BATCH], plan.now, result)
    for folder in plan.trash_folders:
        if target.empty_trash_folder(folder):
            result.trash_emptied.append(folder)
    log.info("retention: %s", result.summary_line())
    return result


def _tally(result: RetentionResult, r: Removal) -> None:
    acc = result.removed.setdefault(r.series, {}).setdefault(r.reason, {"files": 0, "bytes": 0})
    acc["files"] += 1
    acc["bytes"] += r.size


def _remove_batch(catalog: Catalog, target: _Target, layout, batch: list[Removal], now: datetime,
                  result: RetentionResult) -> None:
    with _registered(catalog, "retention_planned", _rows_table(batch)):
        still = {p for (p,) in catalog.q("retention_layout_only").fetchall()}
    done = []
    for r in batch:
        problem = None if r.path in still else "the inventory no longer holds it as a layout file of this record"
        parsed = layout.parse(r.path) if problem is None else None
        if problem is None and (parsed is None or (parsed.series, parsed.record_key, parsed.segment)
                                != (r.series, r.record_key, r.segment)):
            problem = "the layout does not parse it back to its record"
        if problem is None:
            try:
                if target.remove(r, now):
                    if r.action == "trash":
                        result.trashed += 1
                    else:
                        result.deleted += 1
                    result.bytes_freed += r.size
                done.append(r)
                _tally(result, r)
                continue
            except _Refused as exc:
                problem = str(exc)
            except OSError as exc:
                problem = f"{exc.strerror or exc}"
        log.warning("retention: not removing %s: %s", r.path, problem)
        result.failures.append({"series": r.series, "path": r.path, "reason": problem})
    if done:
        with _registered(catalog, "retention_removed", pa.table({"path": pa.array([r.path for r in done], pa.string())})):
            with catalog.transaction():
                catalog.q("retention_forget_files")
                catalog.q("retention_forget_checks")


class _Refused(Exception):
    """A removal the safety checks stop (the path is not what the inventory says)."""


class _Target:
    """Removes files under the data root (a local directory, or fsspec) and manages the trash."""

    def __init__(self, config):
        from jsocmirror.scan import open_root

        self.fs, self.root = open_root(config.data_root, config.storage_options())
        self.real_root = os.path.realpath(self.root) if self.fs is None else None
        self.trash = os.path.realpath(config.trash_root)

    def remove(self, r: Removal, now: datetime) -> bool:
        """Delete or trash one file; False if it was already gone (the inventory forgets it all the same)."""
        parts = r.path.split("/")
        if r.path.startswith("/") or "\\" in r.path or any(p in ("", ".", "..") for p in parts):
            raise _Refused(f"{r.path!r} is not a relative layout path")
        if self.fs is not None:
            return self._remove_object(r)
        path = os.path.join(self.root, *parts)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return False
        if not stat.S_ISREG(st.st_mode):
            raise _Refused("not a regular file (a link or a directory is never removed)")
        real = os.path.realpath(os.path.dirname(path))
        if real != self.real_root and not real.startswith(self.real_root + os.sep):
            raise _Refused(f"its directory resolves outside the data root ({real})")
        if r.action == "trash":
            self._to_trash(path, parts, now)
        else:
            os.unlink(path)
        self._prune_dirs(os.path.dirname(path))
        return True

    def _remove_object(self, r: Removal) -> bool:
        if r.action == "trash":
            raise _Refused("trash needs a local data root (objects are never moved into a trash)")
        path = f"{self.root}/{r.path}"
        try:
            info = self.fs.info(path)
        except FileNotFoundError:
            return False
        if info.get("type") != "file":
            raise _Refused("not a file")
        self.fs.rm_file(path)
        return True

    def _to_trash(self, path: str, parts: list[str], now: datetime) -> None:
        dest = os.path.join(self.trash, now.strftime("%Y-%m-%d"), *parts)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        final, n = dest, 1
        while os.path.lexists(final):  # the same path trashed twice in a day keeps both
            final, n = f"{dest}.{n}", n + 1
        try:
            os.rename(path, final)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            # a copy of every trashed file onto another filesystem (the catalog's, say) could fill
            # it: the file stays where it is, and the summary says why
            raise _Refused(f"the trash {self.trash} is on another filesystem than the data root (each file "
                           "would be copied, not moved): use orphans = \"delete\", or keep the mirror "
                           "directory and its data root on one filesystem") from None

    def _prune_dirs(self, directory: str) -> None:
        """Remove directories the removal left empty, up to (never including) the data root."""
        while os.path.realpath(directory).startswith(self.real_root + os.sep):
            try:
                os.rmdir(directory)
            except OSError:
                return
            directory = os.path.dirname(directory)

    def empty_trash_folder(self, folder: str) -> bool:
        if os.path.islink(folder) or os.path.dirname(os.path.realpath(folder)) != self.trash:
            log.warning("retention: not emptying %s: not a dated folder of the trash %s", folder, self.trash)
            return False
        try:
            shutil.rmtree(folder)
        except OSError as exc:
            log.warning("retention: cannot empty the trash folder %s: %s", folder, exc.strerror or exc)
            return False
        return True


@contextmanager
def _registered(catalog: Catalog, name: str, table: pa.Table):
    catalog.con.register(name, table)
    try:
        yield
    finally:
        catalog.con.unregister(name)


def _rows_table(removals: list[Removal]) -> pa.Table:
    return pa.table({"path": pa.array([r.path for r in removals], pa.string()),
                     "series": pa.array([r.series for r in removals], pa.string()),
                     "record_key": pa.array([r.record_key for r in removals], pa.string()),
                     "segment": pa.array([r.segment for r in removals], pa.string())})


# -- the nightly job's call ---------------------------------------------------------------------------
def run_retention(catalog: Catalog, config, *, series: Iterable[str] | None = None, dry_run: bool = False,
                  had_errors: bool = False, run_id: str | None = None, registry=None, layout=None) -> dict[str, Any]:
    """Plan and apply retention at the end of ``update``; the RetentionResult as a dict ({} if no
    retention setting applies). Never raises for a retention problem: it is reported in the dict."""
    series = list(series) if series else None
    if not wants_retention(config, series):
        return {}
    if had_errors:
        return apply_retention(catalog, config, RetentionPlan(now=utc_now()), had_errors=True).as_dict()
    try:
        plan = plan_retention(catalog, config, series, registry=registry)
        return apply_retention(catalog, config, plan, dry_run=dry_run, run_id=run_id, layout=layout).as_dict()
    except (JsocMirrorError, OSError) as exc:  # retention never costs the night's fetch its outcome
        log.warning("retention did not run: %s", exc)
        return {"error": str(exc), "summary": f"not run: {exc}"}


__all__ = ["REASONS", "Removal", "RetentionPlan", "RetentionResult", "SeriesPlan", "apply_retention", "clock",
           "horizon_for", "plan_retention", "run_retention", "utc_now", "wants_retention"]
