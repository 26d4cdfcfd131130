"""What the mirror lacks: every wanted (record, segment) classified against the inventory.

Wanted = the rows of each configured series' keyword table within its selection and not
``_gone_at``, times the configured segments. One SQL FULL JOIN (sql/queries/diff.sql) against
``local_files`` gives each its state:

- ``present``   a file is there, sound as far as we know, and not older than the catalog's RECNUM;
- ``missing``   no file, and JSOC should have one;
- ``stale``     the file's RECNUM (its header's, or the one the downloader recorded fetching) is
  older than the catalog's ``_recnum``; or JSOC reprocessed the record (``_prev_recnum`` set) and
  the file's RECNUM is unknown (a file the mirror did not download and ``scan --verify`` has not read);
- ``corrupt``   zero bytes, or verification found it truncated, not FITS, failing DATASUM/CHECKSUM,
  or with a header that contradicts its path;
- ``no_image``  QUALITY < 0: JSOC has no image, so it is never missing;
- ``offline``   ``_online`` is false upstream (on tape) and there is no file;
- ``orphan``    a layout file no wanted record accounts for (unconfigured series, outside the
  selection, gone upstream, unconfigured segment).

Files outside the layout (``unknown`` and friends from the scan) are counted apart.
"""

from __future__ import annotations

import json
import logging
from datetime import date, timedelta
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import pyarrow as pa

from jsocmirror import drmstime, recordset
from jsocmirror.catalog import Catalog, keyword_table, quote_ident, series_slug
from jsocmirror.errors import ConfigError
from jsocmirror.layout import Layout
from jsocmirror.series import SeriesDef, SeriesRegistry, builtin_series

log = logging.getLogger("jsocmirror.diff")

GAP_STATES = ("missing", "stale", "corrupt", "no_image", "offline", "orphan")
STATES = ("present",) + GAP_STATES


@dataclass(frozen=True)
class GapRow:
    """One (record, segment) that is not simply present, or one orphaned file."""

    series: str
    record_key: str
    segment: str
    state: str
    recnum: int | None  # the catalog's RECNUM (None for orphans)
    file_recnum: int | None  # the local file's RECNUM, when known
    path: str | None  # the local file, if there is one
    size: int | None
    reason: str | None
    keys: tuple[str, ...] = ()  # prime-key names of the series (empty if unknown)

    @property
    def printed_values(self) -> tuple[str, ...]:
        """The prime-key values as JSOC prints them (from the record key)."""
        return tuple(recordset.split_record_key(self.record_key))

    @property
    def key_values(self) -> dict[str, str]:
        return dict(zip(self.keys, self.printed_values))


@dataclass
class DiffResult:
    """Counts per series and state; ``gaps()`` iterates the rows (read from the catalog)."""

    catalog: Catalog
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # series -> state -> (record, segment)s
    by_period: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)  # series -> day -> state -> n
    unknown_files: int = 0
    skipped: list[str] = field(default_factory=list)  # configured series without a keyword table yet
    _keys: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def total(self, state: str | None = None) -> int:
        return sum(n for states in self.counts.values() for s, n in states.items() if state is None or s == state)

    def gaps(self, states: Iterable[str] | None = None) -> Iterator[GapRow]:
        """The gap rows (all non-present states, or only ``states``), ordered by series and key."""
        wanted = _check_states(states, allow_unknown=False) if states is not None else None
        # diff_gaps is a temp table of this connection; the gap set is small, so read it at once
        rows = self.catalog.q("diff_gap_rows", states=wanted).fetchall()
        for series, key, seg, state, recnum, file_recnum, path, size, reason in rows:
            yield GapRow(series, key, seg, state, recnum, file_recnum, path, size, reason, self._keys.get(series, ()))

    def unknown(self) -> list[tuple[str, str, str, int | None]]:
        """Files outside the layout: (path, state, problem, size)."""
        return self.catalog.q("diff_unknown_files").fetchall()

    def as_dict(self) -> dict[str, Any]:
        return {"counts": self.counts, "unknown_files": self.unknown_files, "skipped": self.skipped}


def _check_states(states: Iterable[str] | None, allow_unknown: bool = True) -> list[str] | None:
    if states is None:
        return None
    out = []
    valid = STATES + (("unknown",) if allow_unknown else ())
    for s in states:
        s = s.strip().lower().replace("-", "_")
        if s not in valid:
            raise ConfigError(f"state {s!r} is not one of {', '.join(valid)}")
        out.append(s)
    return out


# -- series definitions and layout from a catalog + config ------------------------------------
def series_definitions(catalog: Catalog) -> SeriesRegistry:
    """The built-in definitions, overridden by those sync stored in the catalog (``series_defs``)."""
    registry = builtin_series()
    if catalog.has_table("series_defs"):
        for name, struct in catalog.execute("SELECT series, struct FROM series_defs").fetchall():
            try:
                registry.add(SeriesDef.from_struct(json.loads(struct) if isinstance(struct, str) else struct, name=name))
            except (ValueError, TypeError) as exc:
                log.warning("series_defs row for %s is unusable: %s", name, exc)
    return registry


def layout_for_config(config, registry: SeriesRegistry) -> Layout:
    """The layout of a mirror: every known series, with the templates its config sets."""
    templates = {entry.series: entry.layout for entry in config.series if entry.layout}
    for name in templates:
        if registry.get(name) is None:
            raise ConfigError(f"series {name!r} has a layout template but no known definition (run 'jsocmirror sync')")
    return Layout(registry, templates)


# -- the diff -----------------------------------------------------------------------------------
def diff_mirror(catalog: Catalog, config, series: str | Iterable[str] | None = None, *,
                registry: SeriesRegistry | None = None) -> DiffResult:
    """Classify every wanted (record, segment) of the configured series (or of ``series``)."""
    registry = registry or series_definitions(catalog)
    entries = list(config.series)
    if series is not None:
        names = [series] if isinstance(series, str) else list(series)
        entries = [config.get_series(name) for name in names]
    result = DiffResult(catalog=catalog)
    wanted, scope = [], []
    for entry in entries:
        sd = registry.get(entry.series)
        if sd is None:
            raise ConfigError(f"series {entry.series!r} has no known definition (run 'jsocmirror sync' first)")
        scope.append(sd.name)
        result._keys[sd.name] = tuple(sd.primekeys)
        select, segments = wanted_select_sql(catalog, entry, sd)
        if select is None:
            result.skipped.append(sd.name)
            continue
        wanted.append((sd.name, select, segments))
    if series is None:
        scope += [r[0] for r in catalog.execute(
            "SELECT DISTINCT series FROM local_files WHERE series IS NOT NULL").fetchall() if r[0] not in scope]
        for name in scope:
            sd = registry.get(name)
            if sd is not None:
                result._keys.setdefault(sd.name, tuple(sd.primekeys))
    catalog.q("diff_create_gaps")
    pairs: list[tuple[str, str]] = []
    for name, select, segments in wanted:
        catalog.execute("CREATE OR REPLACE TEMP VIEW diff_wanted_one AS " + select)
        for day, n in catalog.q("diff_wanted_counts").fetchall():
            _bump(result, name, day, "present", n * len(segments))
        for segment in segments:
            catalog.q("diff_insert_gaps", series=name, segment=segment)
            pairs.append((name, segment))
    on_disk = {tuple(r) for r in catalog.q("diff_layout_pairs").fetchall()}
    if not {p for p in on_disk if p[0] in scope} - set(pairs):
        scope = []  # every file on disk belongs to a configured (series, segment): no other orphans
    catalog.con.register("diff_scope", pa.table({"series": pa.array(scope, pa.string())}))
    catalog.con.register("diff_pairs", pa.table({"series": pa.array([p[0] for p in pairs], pa.string()),
                                                 "segment": pa.array([p[1] for p in pairs], pa.string())}))
    try:
        catalog.q("diff_insert_other_orphans")
    finally:
        catalog.con.unregister("diff_scope")
        catalog.con.unregister("diff_pairs")
    for name, day, state, n in catalog.q("diff_gap_counts").fetchall():
        if state != "orphan":
            _bump(result, name, day, "present", -n)
        _bump(result, name, day, state, n)
    result.unknown_files = catalog.q("diff_unknown_count").fetchall()[0][0]
    log.info("diff: %s", {s: result.total(s) for s in STATES})
    return result


def _bump(result: DiffResult, series: str, day, state: str, n: int) -> None:
    states = result.counts.setdefault(series, dict.fromkeys(STATES, 0))
    states[state] = states.get(state, 0) + n
    period = _period_text(day)
    per = result.by_period.setdefault(series, {}).setdefault(period, {})
    per[state] = per.get(state, 0) + n


def sql_literal(value: Any) -> str:
    """A value as an SQL literal (strings quoted, quotes doubled; integers as digits)."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"no literal for {value!r}")
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def wanted_select_sql(catalog: Catalog, entry, sd: SeriesDef) -> tuple[str | None, list[str]]:
    """(the SELECT of one series' wanted records, its configured segments); None if there is nothing to want.

    Identifiers go through ``quote_ident`` and values through ``sql_literal``; the one piece of
    user SQL is the configured ``filter`` (the same text JSOC evaluates inside ``[? ?]``).
    """
    table = keyword_table(sd.name)
    columns = {name.lower(): name for name in catalog.table_columns(table)}
    if not columns:
        log.warning("series %s is configured but has no keyword table yet (run 'jsocmirror sync')", sd.name)
        return None, []
    segments = []
    for name in entry.segments:
        seg = sd.segment(name)
        if seg is None:
            raise ConfigError(f"series {sd.name}: unknown segment {name!r} (segments: {', '.join(s.name for s in sd.segments)})")
        segments.append(seg.name)
    if not segments:
        return None, []
    no_image = f"coalesce(k.{quote_ident(columns['quality'])} < 0, false)" if "quality" in columns else "false"
    time_kw = next((kw for kw in sd.primekey_keywords if kw.is_time and kw.name.lower() in columns), None)
    time_col = f"k.{quote_ident(columns[time_kw.name.lower()])}" if time_kw else None
    day = _day_sql(sd, time_kw, time_col, columns)
    where = ["k._gone_at IS NULL"]
    if time_col:
        index_col = columns.get(f"{time_kw.name}_index".lower())
        for bound, op in ((entry.start, ">="), (entry.end, "<=")):
            if bound and index_col and sd.slotting(time_kw.name):
                # a window bound selects slots as JSOC does (AIA records sit a few s before their slot value)
                slot = int(recordset.slot_of_value(sd, time_kw.name, bound))
                where.append(f"k.{quote_ident(index_col)} {op} {slot}")
            elif bound:
                dt = drmstime.to_datetime_utc(drmstime.parse_time(bound))
                where.append(f"{time_col} {op} TIMESTAMP {sql_literal(dt.replace(tzinfo=None).isoformat(sep=' '))}")
        from jsocmirror.retention import horizon_for

        horizon = horizon_for(catalog, entry, sd.name)  # records retention removed are not wanted back
        if horizon is not None:
            where.append(f"{time_col} >= TIMESTAMP {sql_literal(horizon.isoformat(sep=' '))}")
    for key, values in (entry.keys or {}).items():
        kw = sd.keyword(key)
        if kw is None or kw.name.lower() not in columns:
            continue
        lits = ", ".join(sql_literal(int(v, 0) if kw.is_int and isinstance(v, str) else v) for v in values)
        where.append(f"k.{quote_ident(columns[kw.name.lower()])} IN ({lits})")
    select = (
        # flags packed in one byte keep the diff's hash table small: 1 no image, 2 offline, 4 reprocessed
        f"SELECT k._key AS record_key, k._recnum AS recnum, ({no_image})::UTINYINT "
        f"| ((NOT coalesce(k._online, true))::UTINYINT << 1) | ((k._prev_recnum IS NOT NULL)::UTINYINT << 2) AS flags, "
        f"{day} AS day FROM {quote_ident(table)} AS k WHERE " + " AND ".join(where)
    )
    if entry.filter:
        filtered = select + f" AND ({entry.filter})"
        try:
            catalog.execute(f"SELECT * FROM ({filtered}) LIMIT 0").fetchall()
            select = filtered
        except Exception as exc:  # JSOC filter syntax DuckDB does not share: sync already applied it
            log.warning("series %s: filter %r is not usable in DuckDB (%s); relying on sync's selection",
                        sd.name, entry.filter, str(exc).splitlines()[0])
    return select, segments


def _day_sql(sd: SeriesDef, time_kw, time_col: str | None, columns: dict[str, str]) -> str:
    """The calendar day of a record as JSOC prints its time key (TAI for HMI, UTC for AIA), as the
    layout's directories and the record key have it. Cheap forms first: integer slot arithmetic for
    a TAI slotted key (days since 1977-01-01), the UTC TIMESTAMP's date for a UTC/ISO key."""
    if time_kw is None or time_col is None:
        return "NULL::VARCHAR"
    slot = sd.slotting(time_kw.name)
    index_col = columns.get(f"{time_kw.name}_index".lower())
    if time_kw.zone == "TAI" and slot is not None and index_col is not None:
        return f"floor(({slot.epoch!r} + k.{quote_ident(index_col)} * {slot.step!r}) / 86400.0)::BIGINT"
    if time_kw.zone in ("ISO", "UTC"):
        return f"CAST({time_col} AS DATE)"
    str_col = columns.get(f"{time_kw.name}_str".lower())
    if str_col is not None:
        return f"substr(k.{quote_ident(str_col)}, 1, 10)"
    return f"strftime({time_col}, '%Y-%m-%d')"


_DAY0 = date(1977, 1, 1)


def _period_text(day) -> str:
    """A day from the diff (days since 1977 TAI, a date, or YYYY.MM.DD text) as YYYY-MM-DD."""
    if day is None:
        return ""
    if isinstance(day, int):
        return (_DAY0 + timedelta(days=day)).isoformat()
    if hasattr(day, "isoformat"):
        return day.isoformat()
    return str(day).replace(".", "-")


# -- status ------------------------------------------------------------------------------------
@dataclass
class SeriesStatus:
    series: str
    counts: dict[str, int]
    files: int
    bytes: int
    coverage: list[tuple[str, int, int, float]]  # (period, present, expected, fraction)
    quota: int | None = None  # the series' max_bytes in bytes (None: no quota)


def mirror_status(catalog: Catalog, config, *, by: str = "month", series=None,
                  registry: SeriesRegistry | None = None) -> tuple[list[SeriesStatus], DiffResult]:
    """Per-series counts, bytes on disk and coverage per ``day`` or ``month``."""
    if by not in ("day", "month"):
        raise ConfigError(f"coverage period {by!r} is not accepted (use day or month)")
    result = diff_mirror(catalog, config, series, registry=registry)
    local = {s: (n, b) for s, n, b in catalog.q("status_local_bytes").fetchall()}
    quotas = {e.series.lower(): e.max_bytes_value for e in config.series if e.max_bytes is not None}
    out = []
    for name in sorted(set(result.counts) | {s for s in local if s}):
        periods: dict[str, list[int]] = {}
        for day, states in result.by_period.get(name, {}).items():
            if not day:
                continue
            period = day if by == "day" else day[:7]
            acc = periods.setdefault(period, [0, 0])
            acc[0] += states.get("present", 0)
            acc[1] += sum(n for s, n in states.items() if s not in ("orphan", "no_image"))
        coverage = [(p, a, b, (a / b if b else 1.0)) for p, (a, b) in sorted(periods.items())]
        files, size = local.get(name, (0, 0))
        out.append(SeriesStatus(name, result.counts.get(name, dict.fromkeys(STATES, 0)), files, int(size), coverage,
                                quota=quotas.get(name.lower())))
    return out, result


# -- SQL over the mirror -------------------------------------------------------------------------
def refresh_file_views(catalog: Catalog, series_names: Iterable[str]) -> list[str]:
    """(Re)create ``<slug>_files`` for each series with a keyword table: its keyword columns plus
    segment, path, state, file_size, verify_state and file_recnum of each local file (one row per
    file; records without a file do not appear). Returns the view names."""
    made = []
    for name in sorted(set(series_names)):
        table = keyword_table(name)
        if not catalog.has_table(table):
            continue
        view = f"{series_slug(name)}_files"
        catalog.execute(
            f"CREATE OR REPLACE VIEW {quote_ident(view)} AS "
            f"SELECT k.*, f.segment AS segment, f.path AS path, f.state AS state, f.size AS file_size, "
            f"f.verify_state AS verify_state, f.file_recnum AS file_recnum "
            f"FROM {quote_ident(table)} AS k "
            f"JOIN local_files AS f ON f.series = {sql_literal(name)} AND f.record_key = k._key"
        )
        made.append(view)
    return made


def export_catalog(catalog: Catalog, dest: str, *, storage_options: dict | None = None,
                   tables: list[str] | None = None) -> list[str]:
    """Write every catalog table (or ``tables``) as ``<dest>/<table>.parquet`` (local or any fsspec URL).

    Each file is written whole to a temporary name and then renamed (or uploaded), so a reader
    never sees half a file. Returns the written paths.
    """
    import os
    import tempfile

    from jsocmirror.scan import open_root

    if tables is None:
        tables = [r[0] for r in catalog.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' "
            "AND table_type = 'BASE TABLE' ORDER BY table_name").fetchall()]
    fs, dest_path = open_root(dest, storage_options)
    written = []
    with tempfile.TemporaryDirectory(prefix="jsocmirror-export-") as tmp:
        if fs is None:
            try:
                os.makedirs(dest_path, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"cannot create export directory {dest_path}: {exc.strerror}") from None
        for table in tables:
            local_tmp = os.path.join(tmp if fs is not None else dest_path, f".{table}.parquet.part")
            catalog.execute(f"COPY (SELECT * FROM {quote_ident(table)}) TO {sql_literal(local_tmp)} (FORMAT parquet)")
            if fs is None:
                final = os.path.join(dest_path, f"{table}.parquet")
                os.replace(local_tmp, final)
            else:
                final = f"{dest_path}/{table}.parquet"
                fs.put_file(local_tmp, final)
            written.append(final)
    return written


def target_path(layout: Layout, gap: GapRow) -> str:
    """Where a gap's file belongs in the layout (for missing/stale/corrupt rows)."""
    return layout.relative_path(gap.series, list(gap.printed_values), gap.segment)
