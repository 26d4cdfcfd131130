"""``MirrorClient``: a sunpy Fido client answering from a local jsocmirror mirror.

Routing (docs/sunpy.md): Fido asks every client whose ``_can_handle_query`` accepts a query.

* A query holding ``a.jsocmirror.Mirror(...)`` goes to this client alone: JSOC's and the VSO's
  clients decline any attr they do not know.
* After ``use(path)``, a plain ``a.jsoc.Series`` query of a series that mirror keeps goes to this
  client instead of JSOC: ``use`` wraps JSOC's entry in Fido's registry so JSOC declines exactly
  the queries this client takes (``stop_using()`` restores it). Importing the module alone changes
  no query's routing.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from astropy.table import Column, MaskedColumn, TableAttribute
from astropy.time import Time
from parfive import Results
from sunpy.net import attrs as a
from sunpy.net.base_client import BaseClient, QueryResponseTable, convert_row_to_table

from jsocmirror.errors import JsocMirrorError, UsageError
from jsocmirror.series import SeriesDef
from jsocmirror.sunpy import _query
from jsocmirror.sunpy.attrs import Mirror

log = logging.getLogger("jsocmirror.sunpy")

#: Result states ``fetch(..., fetch_missing=True)`` asks the mirror to fill (the nightly job's gaps).
FILL_STATES = ("missing", "stale", "corrupt")


class NotInMirror(JsocMirrorError):
    """A record the mirror has no usable file for (listed in ``Fido.fetch``'s ``errors``)."""


# -- which mirror ----------------------------------------------------------------------------------
class _Routing:
    mirror: str | None = None  # the mirror use() chose
    series: frozenset[str] = frozenset()  # its configured series, lower case
    original: Any = None  # JSOC's entry in Fido's registry while use() is in effect


def use(path: str | os.PathLike | None = None):
    """Answer the ``a.jsoc`` queries of the series this mirror keeps from the mirror, not JSOC.

    ``path`` is the mirror directory (default: ``$JSOCMIRROR_MIRROR``). It also becomes the mirror
    of ``a.jsocmirror.Mirror()`` without a path. Lasts until ``stop_using()``; used as a context
    manager (``with jsocmirror.sunpy.use(p): ...``) it lasts for the block.
    """
    import jsocmirror

    if path is None:
        path = _query.env_mirror()
        if path is None:
            raise UsageError("jsocmirror.sunpy.use(): name a mirror directory or set JSOCMIRROR_MIRROR")
    path = _absolute(path)
    with jsocmirror.open(path) as m:
        series = frozenset(name.lower() for name in m.series_names())
    previous = (_Routing.mirror, _Routing.series)
    _Routing.mirror, _Routing.series = path, series
    _install_jsoc_step_aside()
    log.debug("Fido answers a.jsoc queries of %s from %s", sorted(_Routing.series), _Routing.mirror)
    return _UseContext(previous)


class _UseContext:
    def __init__(self, previous):
        self.previous = previous

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        _Routing.mirror, _Routing.series = self.previous
        if _Routing.mirror is None:
            stop_using()


def stop_using() -> None:
    """Undo ``use()``: JSOC answers every ``a.jsoc`` query again."""
    from sunpy.net.jsoc import JSOCClient

    _Routing.mirror, _Routing.series = None, frozenset()
    if _Routing.original is not None:
        BaseClient._registry[JSOCClient] = _Routing.original
        _Routing.original = None


def _install_jsoc_step_aside() -> None:
    from sunpy.net.jsoc import JSOCClient

    if _Routing.original is not None:
        return
    original = BaseClient._registry.get(JSOCClient, JSOCClient._can_handle_query)

    def jsoc_unless_mirrored(*query):
        return original(*query) and _routed_mirror(query) is None

    _Routing.original = original
    BaseClient._registry[JSOCClient] = jsoc_unless_mirrored


def _routed_mirror(query) -> str | None:
    """The used mirror, when it keeps the series of this (Mirror-less) query."""
    if _Routing.mirror is None or any(isinstance(q, Mirror) for q in query):
        return None
    if not {type(q) for q in query} <= _query.SUPPORTED_ATTRS:
        return None
    names = [q.value for q in query if isinstance(q, a.jsoc.Series)]
    if len(names) == 1 and str(names[0]).strip().lower() in _Routing.series:
        return _Routing.mirror
    return None


def _mirror_for(query: _query.MirrorQuery) -> str:
    path = query.mirror or _Routing.mirror or _query.env_mirror()
    if path is None:
        raise UsageError("which mirror? pass a.jsocmirror.Mirror(path), call jsocmirror.sunpy.use(path) "
                         "or set JSOCMIRROR_MIRROR")
    return _absolute(path)


def _absolute(path: str | os.PathLike) -> str:
    """A mirror directory as an absolute path (a readers' copy URL stays as it is)."""
    text = os.fspath(path)
    return text if "://" in text else str(Path(text).expanduser().absolute())


# -- the result table ------------------------------------------------------------------------------
class MirrorResponseTable(QueryResponseTable):
    """Records of one series from one mirror: keywords, ``segment``, ``state`` and local ``path``."""

    mirror = TableAttribute()  # the mirror directory (absolute)
    series = TableAttribute()  # the series, as JSOC names it


class MirrorClient(BaseClient):
    """Search and fetch SDO data from a local jsocmirror mirror: its catalog and files, no network.

    Searches answer from the mirror's DuckDB catalog; ``Fido.fetch`` returns the local paths of
    the files the mirror holds and downloads nothing (``fetch_missing=True`` has the mirror fetch
    what it lacks, into its own layout, under its lock).
    """

    @classmethod
    def _can_handle_query(cls, *query) -> bool:
        types = {type(q) for q in query}
        if not types <= _query.SUPPORTED_ATTRS:
            return False
        return Mirror in types or _routed_mirror(query) is not None

    @classmethod
    def _attrs_module(cls):
        return "jsocmirror", "jsocmirror.sunpy.attrs"

    @classmethod
    def register_values(cls):
        return {attr: ["*"] for attr in (Mirror, a.jsoc.Series, a.jsoc.Segment, a.jsoc.Keyword, a.jsoc.PrimeKey,
                                         a.Time, a.Sample, a.Wavelength)}

    @property
    def info_url(self) -> str:
        """What Fido prints as the results' "Source"."""
        mirror = getattr(self, "_mirror", None)
        return f"jsocmirror mirror {mirror} (local, no network)" if mirror else "a jsocmirror mirror (local, no network)"

    # -- search --------------------------------------------------------------------------------
    def search(self, *query) -> MirrorResponseTable:
        """One AND block of attrs (Fido splits ORs) → the matching (record, segment) rows."""
        import jsocmirror

        q = _query.parse_query(query)
        path = self._mirror = _mirror_for(q)
        if q.series is None:
            with jsocmirror.open(path) as m:
                names = ", ".join(m.series_names())
            raise UsageError(f"say which series with a.jsoc.Series(...); the mirror {path} keeps: {names}")
        with jsocmirror.open(path) as m:
            entry = _config_entry(m.config, q.series, path)
            sd = m.definition(entry.series)
            args = _query.record_files_args(q, sd, _mirrored_segments(entry, sd))
            log.debug("search %s %s: where=%s segments=%s", path, sd.name, args.where, args.segments)
            rel = m.record_files(entry.series, args.where, segment=args.segments)
            if args.sample is not None:
                check = args.sample.unique_check()
                unique = list(_query_rel(rel, check).fetchall()[0]) if check else None
                rel = _query_rel(rel, args.sample.select(unique))
            data = rel.to_arrow_table()
        return _build_table(data, sd, mirror=path, client=self)

    # -- fetch ---------------------------------------------------------------------------------
    @convert_row_to_table
    def fetch(self, query_results, *, path=None, downloader=None, wait: bool = True, fetch_missing: bool = False,
              include_offline: bool = False, **kwargs) -> Results:
        """The local paths of the result's files; nothing is downloaded (``path`` is ignored).

        Rows without a usable file (missing, stale, corrupt, offline) are listed in the returned
        ``errors``; ``no_image`` rows (JSOC has no file) are skipped. With ``fetch_missing=True`` the
        mirror first fetches the result's missing, stale and corrupt rows (also offline ones with
        ``include_offline=True``) through its own stage and download, into its layout.
        """
        table = query_results
        mirror = getattr(table, "mirror", None)
        series = getattr(table, "series", None)
        if not len(table):
            return Results()
        if mirror is None or series is None:
            raise UsageError("MirrorClient.fetch takes a result of MirrorClient.search (Fido.search with the mirror)")
        paths = table["path"].filled("") if hasattr(table["path"], "filled") else table["path"]
        rows = [(str(k), str(s), str(st), str(p) or None)
                for k, s, st, p in zip(table["_key"], table["segment"], table["state"], paths)]
        failed: dict[tuple[str, str], str] = {}
        if fetch_missing:
            states = FILL_STATES + (("offline",) if include_offline else ())
            wanted = [(k, s) for k, s, st, _ in rows if st in states]
            if wanted:
                summary = fill(mirror, series, wanted, include_offline=include_offline)
                failed = {(f["record_key"], f["segment"]): f["reason"] for f in summary.failures}
                rows = _current_rows(mirror, series, rows)
        results = Results()
        for key, segment, state, file in rows:
            spec = f"{series}{key}{{{segment}}}"
            if state == "present" and file:
                results.append(path=file, url=_url(file))
            elif state != "no_image":
                if (key, segment) in failed:
                    hint = f"; the mirror's fetch failed: {failed[(key, segment)]}"
                else:
                    hint = "" if fetch_missing else " (Fido.fetch(..., fetch_missing=True) fetches it)"
                results.add_error(file or spec, spec, NotInMirror(f"{spec}: {state} in the mirror {mirror}{hint}"))
        log.debug("fetch: %d local files, %d without a usable file", len(results), len(results.errors))
        return results


# -- fetch-missing: the mirror's own writer ---------------------------------------------------------
def fill(mirror: str, series: str, records: Iterable[tuple[str, str]], *, include_offline: bool = False,
         options: Any = None):
    """Have the mirror fetch these (record key, segment) of one series: its stage and download,
    its layout, its lock (``LockedError`` while another run holds it). Returns the ``UpdateSummary``."""
    from jsocmirror import config as cfg
    from jsocmirror.cli import jsoc_server
    from jsocmirror.update import UpdateOptions, fetch_mirror

    import jsocmirror

    config = cfg.load_config(mirror)
    entry = _config_entry(config, series, mirror)
    with jsocmirror.open(mirror) as m:
        name = m.definition(entry.series).name  # as the diff names the series' gaps
    options = replace(options or UpdateOptions(), series=[entry.series], include_offline=include_offline,
                      only=frozenset((name, key, segment) for key, segment in records))
    with jsoc_server(config.server, config.mirror_dir) as url:
        summary = fetch_mirror(config, url, options)
    log.info("fetch-missing %s: %d files downloaded, %d failed", series, summary.files_downloaded,
             len(summary.failures))
    return summary


def _current_rows(mirror: str, series: str, rows):
    """The rows again, with the states and paths the mirror gives them now."""
    import jsocmirror

    keys = sorted({k for k, _, _, _ in rows})
    where = "_key IN (" + ", ".join("'" + k.replace("'", "''") + "'" for k in keys) + ")"
    with jsocmirror.open(mirror) as m:
        data = m.record_files(series, where, segment=sorted({s for _, s, _, _ in rows})).to_arrow_table()
    now = {(k, s): (st, p) for k, s, st, p in zip(*(data.column(c).to_pylist()
                                                    for c in ("_key", "segment", "state", "path")))}
    return [(k, s) + now.get((k, s), (st, p)) for k, s, st, p in rows]


# -- helpers ---------------------------------------------------------------------------------------
def _config_entry(config, series: str, mirror) -> Any:
    for entry in config.series:
        if entry.series.lower() == series.strip().lower():
            return entry
    names = ", ".join(e.series for e in config.series) or "none"
    raise UsageError(f"the mirror {mirror} does not keep {series} (it keeps: {names})")


def _mirrored_segments(entry, sd: SeriesDef) -> list[str]:
    out = []
    for name in entry.segments or [s.name for s in sd.segments]:
        seg = sd.segment(name)
        out.append(seg.name if seg else name)
    return out


def _url(file: str) -> str:
    return file if "://" in file else Path(file).as_uri()


def _build_table(data: pa.Table, sd: SeriesDef, *, mirror: str, client) -> MirrorResponseTable:
    """The API's rows as a sunpy table: prime keys first, time prime keys as JSOC prints them
    (``T_REC`` = ``2024.06.30_00:00:00_TAI``, from ``T_REC_str``), other time keywords as
    astropy ``Time`` (UTC), ``segment``, ``state``, ``path``, then every other keyword."""
    names = data.column_names
    lower = {n.lower(): n for n in names}
    time_pks = [kw.name for kw in sd.primekey_keywords if kw.is_time]
    sort = []
    for key in sd.primekeys:
        col = lower.get(f"{key}_index".lower()) or lower.get(key.lower())
        if col:
            sort.append((col, "ascending"))
    if "segment" in names:
        sort.append(("segment", "ascending"))
    if sort and data.num_rows:
        data = data.sort_by(sort)
    columns: dict[str, Any] = {}
    for key in sd.primekeys:
        src = lower.get(f"{key}_str".lower()) if key in time_pks else None
        src = src or lower.get(key.lower())
        if src is not None:
            columns[key] = _column(data.column(src), key, as_time=False)
    for name in ("segment", "state", "path"):
        if name in names:
            columns[name] = _column(data.column(name), name, as_time=False)
    for name in names:
        low = name.lower()
        if name in columns:
            continue
        if any(low in (f"{k}_str".lower(), k.lower()) for k in time_pks):
            continue
        columns[name] = _column(data.column(name), name, as_time=True)
    table = MirrorResponseTable(columns, client=client)
    table.mirror = mirror
    table.series = sd.name
    shown = list(sd.primekeys) + [k for k in ("QUALITY", "WAVELNTH", "EXPTIME") if k in columns and k not in
                                  sd.primekeys] + ["segment", "state", "path"]
    table.display_keys = [k for k in shown if k in columns]
    return table


def _column(chunked: pa.ChunkedArray, name: str, *, as_time: bool):
    typ = chunked.type
    nulls = chunked.null_count
    if pa.types.is_timestamp(typ) and as_time:  # UTC; via POSIX seconds (40x faster than datetime64 parsing)
        seconds = chunked.cast(pa.timestamp("us")).cast(pa.int64()).fill_null(0).to_numpy() / 1e6
        mask = chunked.is_null().to_numpy(zero_copy_only=False)
        t = Time(np.ma.masked_array(seconds, mask=mask) if nulls else seconds, format="unix", scale="utc")
        t.format = "isot"
        return t
    if pa.types.is_timestamp(typ) or pa.types.is_date(typ):
        chunked, typ = chunked.cast(pa.string()), pa.string()
    mask = chunked.is_null().to_numpy(zero_copy_only=False) if nulls else None
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        filled = pc.fill_null(chunked, "").to_numpy(zero_copy_only=False).astype(str)
        return MaskedColumn(filled, name=name, mask=mask) if nulls else Column(filled, name=name)
    if nulls:
        filled = chunked.fill_null(_zero(typ)).to_numpy(zero_copy_only=False)
        return MaskedColumn(filled, name=name, mask=mask)
    return Column(chunked.to_numpy(zero_copy_only=False), name=name)


def _zero(typ: pa.DataType):
    if pa.types.is_boolean(typ):
        return False
    if pa.types.is_floating(typ):
        return float("nan")
    if pa.types.is_integer(typ):
        return 0
    return None


def _query_rel(rel, sql: str):
    """``rel.query`` over a relation named ``r``: a SELECT, so always a relation."""
    out = rel.query("r", sql)
    if out is None:
        raise UsageError(f"internal error: no result for {sql[:60]!r}")
    return out
