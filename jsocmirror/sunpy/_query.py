"""A Fido query (one AND block of sunpy attrs) as the mirror's reading API takes it.

Pure translation, no I/O: ``parse_query`` collects the attrs into a ``MirrorQuery``;
``record_files_args`` turns that, with the series' definition, into the arguments of
``Mirror.record_files`` (a DuckDB condition on keyword columns, and the segments), plus the
``a.Sample`` query over its rows. Identifiers come from the series definition through ``quote_ident``; values are rendered as
literals here (numbers checked finite, strings quoted), never pasted.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import astropy.units as u
from astropy.time import Time
from sunpy.net import attrs as a
from sunpy.net.jsoc.attrs import KeywordComparison

from jsocmirror import drmstime
from jsocmirror.catalog import quote_ident
from jsocmirror.errors import UsageError
from jsocmirror.recordset import slot_of_value
from jsocmirror.series import SeriesDef
from jsocmirror.sunpy.attrs import Mirror

#: The attr types the mirror's client accepts in a query (any other makes it decline).
SUPPORTED_ATTRS = frozenset({
    Mirror, a.jsoc.Series, a.jsoc.Segment, a.jsoc.Keyword, KeywordComparison, a.jsoc.PrimeKey,
    a.Time, a.Sample, a.Wavelength, a.jsoc.Notify,
})

_OPERATORS = {"=": "=", "==": "=", "!=": "<>", "<>": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}


@dataclass
class MirrorQuery:
    """What one AND block of attrs asks of the mirror."""

    mirror: str | None = None  # None: the mirror use() chose, else $JSOCMIRROR_MIRROR
    series: str | None = None
    segments: list[str] = field(default_factory=list)  # empty: the segments the mirror keeps
    start: Time | None = None
    end: Time | None = None
    sample: float | None = None  # seconds
    wavelength: tuple[float, float] | None = None  # angstrom, inclusive
    keywords: list[tuple[str, str, Any]] = field(default_factory=list)  # (name, SQL operator, value)
    primekeys: dict[str, Any] = field(default_factory=dict)


def parse_query(query) -> MirrorQuery:
    """Collect an AND block of attrs (what Fido hands a client's ``search``)."""
    out = MirrorQuery()
    for attr in query:
        if isinstance(attr, Mirror):
            out.mirror = attr.value
        elif isinstance(attr, a.jsoc.Series):
            out.series = str(attr.value)
        elif isinstance(attr, a.jsoc.Segment):
            out.segments.append(str(attr.value))
        elif isinstance(attr, a.Time):
            out.start, out.end = attr.start, attr.end
        elif isinstance(attr, a.Sample):
            out.sample = float(u.Quantity(attr.value, u.s).to_value(u.s))
            if not out.sample > 0:
                raise UsageError(f"a.Sample must be a positive duration, not {attr.value}")
        elif isinstance(attr, a.Wavelength):
            lo = attr.min.to_value(u.AA, equivalencies=u.spectral())
            hi = attr.max.to_value(u.AA, equivalencies=u.spectral())
            out.wavelength = (min(lo, hi), max(lo, hi))
        elif isinstance(attr, KeywordComparison):
            op = _OPERATORS.get(attr.operator)
            if op is None:
                raise UsageError(f"a.jsoc.Keyword({attr.name!r}): unknown comparison {attr.operator!r}")
            out.keywords.append((attr.name, op, attr.value))
        elif isinstance(attr, a.jsoc.Keyword):
            raise UsageError(f"a.jsoc.Keyword({attr.value!r}) needs a comparison, e.g. "
                             f"a.jsoc.Keyword({attr.value!r}) == 0")
        elif isinstance(attr, a.jsoc.PrimeKey):
            out.primekeys[attr.label] = attr.value
        elif isinstance(attr, a.jsoc.Notify):
            pass  # JSOC's export e-mail: the mirror needs none
        else:  # _can_handle_query declined these already
            raise UsageError(f"the jsocmirror client does not support {type(attr).__name__} attrs")
    return out


@dataclass
class RecordFilesArgs:
    where: str | None
    segments: list[str]
    sample: SampleSql | None = None


def record_files_args(query: MirrorQuery, sd: SeriesDef, mirrored_segments: list[str]) -> RecordFilesArgs:
    """The ``Mirror.record_files`` arguments for a query of one series."""
    segments = []
    for name in query.segments or mirrored_segments:
        seg = sd.segment(name)
        if seg is None:
            raise UsageError(f"series {sd.name} has no segment {name!r} "
                             f"(segments: {', '.join(s.name for s in sd.segments)})")
        if seg.name not in mirrored_segments:
            raise UsageError(f"the mirror does not keep segment {seg.name!r} of {sd.name} "
                             f"(it keeps: {', '.join(mirrored_segments)})")
        if seg.name not in segments:
            segments.append(seg.name)
    conditions = []
    time_kw = next((kw for kw in sd.primekey_keywords if kw.is_time), None)
    sample = SampleSql(query, sd, time_kw) if query.sample is not None else None
    if query.wavelength is not None:
        conditions.append(_wavelength_condition(query.wavelength, sd))
    for name, op, value in query.keywords:
        kw = _keyword(sd, name)
        conditions.append(f"{quote_ident(kw.name)} {op} {_literal(kw, value)}")
    for name, value in query.primekeys.items():
        conditions.append(_primekey_condition(sd, name, value))
    if query.start is not None or query.end is not None:
        conditions.insert(0, _time_condition(query, sd, time_kw))
    return RecordFilesArgs(where=" AND ".join(f"({c})" for c in conditions) or None, segments=segments,
                           sample=sample)


def jsoc_time(t: Time) -> str:
    """An astropy Time as a JSOC UTC time string (``2024-06-30T00:00:00.000Z``)."""
    return Time(t).utc.isot + "Z"


def _keyword(sd: SeriesDef, name: str):
    kw = sd.keyword(str(name))
    if kw is None or kw.hidden:
        raise UsageError(f"series {sd.name} has no keyword {name!r}")
    return kw


def _time_condition(query: MirrorQuery, sd: SeriesDef, time_kw) -> str:
    """``a.Time`` as JSOC selects ``[start-end]`` on the first time prime key (sunpy's JSOCClient
    sends that record set): a slotted key takes the slots from start's to end's, both included
    (DRMS rounds a time to its slot: HMI's 00:00:37 TAI is the 00:00:00_TAI slot, and an AIA
    record printed 23:49:59Z sits in the 23:50:00 slot); an unslotted key, start <= t <= end."""
    if time_kw is None:
        raise UsageError(f"series {sd.name} has no time prime key for a.Time")
    parts = []
    slot = sd.slotting(time_kw.name)
    for bound, op in ((query.start, ">="), (query.end, "<=")):
        if bound is None:
            continue
        if slot is not None:
            index = slot_of_value(sd, time_kw.name, jsoc_time(bound))
            parts.append(f"{quote_ident(time_kw.name + '_index')} {op} {int(index)}")
        else:
            parts.append(f"{quote_ident(time_kw.name)} {op} {_literal(time_kw, bound)}")
    return " AND ".join(parts)


class SampleSql:
    """``a.Sample`` over relation ``r`` (record_files' rows): per interval of ``dt`` counted from
    the query's start (else from the first record), the records of the interval's first slot,
    separately for each value of the other prime keys (CAMERA, HARPNUM, AIA's WAVELNTH) and segment.

    Where every slot is there this is what JSOC's ``[start-end@dt]`` selects; where the mirror
    lacks the interval's first slot (a gap, a sparser configured cadence) the next slot of the
    interval stands in. A prime key that is unique per record in the result (aia.lev1's FSN)
    separates nothing, so it is left out (``unique_check`` finds which are).
    """

    def __init__(self, query: MirrorQuery, sd: SeriesDef, time_kw):
        slot = sd.slotting(time_kw.name) if time_kw is not None else None
        if slot is None:
            raise UsageError(f"a.Sample needs a slotted time prime key; series {sd.name} has none")
        self.index = quote_ident(f"{time_kw.name}_index")
        self.anchor = (str(int(slot_of_value(sd, time_kw.name, jsoc_time(query.start)))) if query.start is not None
                       else f"min({self.index}) OVER ()")
        if query.sample is None:
            raise UsageError("a.Sample needs a sampling interval")
        self.step, self.sample = _float(slot.step), _float(query.sample)
        self.keys = [quote_ident(k) for k in sd.primekeys if k != time_kw.name]

    def unique_check(self) -> str | None:
        """A query over ``r``: per other prime key, whether each record has its own value."""
        if not self.keys:
            return None
        return "SELECT " + ", ".join(f"count(DISTINCT {k}) = count(*)" for k in self.keys) + " FROM r"

    def select(self, unique: list[bool] | None = None) -> str:
        per = [k for k, u_ in zip(self.keys, unique or [False] * len(self.keys)) if not u_] + ["segment"]
        bucket = f"floor(({self.index} - {self.anchor}) * {self.step} / {self.sample} + 1e-9)"
        return (f"SELECT * EXCLUDE (_sample_bucket) FROM (SELECT *, {bucket} AS _sample_bucket FROM r) "
                f"QUALIFY rank() OVER (PARTITION BY _sample_bucket, {', '.join(per)} ORDER BY {self.index}) = 1")


def _wavelength_condition(wavelength: tuple[float, float], sd: SeriesDef) -> str:
    kw = sd.keyword("WAVELNTH")
    if kw is None:
        raise UsageError(f"series {sd.name} has no WAVELNTH keyword for a.Wavelength")
    lo, hi = wavelength
    if lo == hi:  # a single wavelength matches to the nearest angstrom (HMI prints 6173.0)
        lo, hi = lo - 0.5, hi + 0.5
    return f"{quote_ident(kw.name)} BETWEEN {_float(lo)} AND {_float(hi)}"


def _primekey_condition(sd: SeriesDef, name: str, value: Any) -> str:
    kw = _keyword(sd, name)
    if kw.name.lower() not in (k.lower() for k in sd.primekeys):
        raise UsageError(f"{kw.name} is not a prime key of {sd.name} (prime keys: {', '.join(sd.primekeys)}); "
                         f"use a.jsoc.Keyword({kw.name!r}) == value")
    values = list(value) if isinstance(value, (list, tuple, set)) else [value]
    if kw.is_time:
        slot = sd.slotting(kw.name)
        if slot is not None:
            slots = sorted({slot_of_value(sd, kw.name, _time_text(v)) for v in values})
            return f"{quote_ident(kw.name + '_index')} IN ({', '.join(str(s) for s in slots)})"
    return f"{quote_ident(kw.name)} IN ({', '.join(_literal(kw, v) for v in values)})"


def _time_text(value: Any) -> str:
    if isinstance(value, Time):
        return jsoc_time(value)
    if isinstance(value, datetime):
        dt = value.astimezone(timezone.utc) if value.tzinfo else value
        return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return str(value)


def _literal(kw, value: Any) -> str:
    """A value as an SQL literal of the keyword's type."""
    if kw.is_time:
        text = _time_text(value)
        try:
            t = drmstime.parse_time(text)
        except ValueError as exc:
            raise UsageError(f"{kw.name}: {exc}") from None
        dt = drmstime.to_datetime_utc(t)
        if dt is None:  # DRMS's MISSING time
            raise UsageError(f"{kw.name}: {value!r} is no time at all")
        return f"TIMESTAMP '{dt.replace(tzinfo=None).isoformat(sep=' ')}'"
    if kw.is_numeric:
        if isinstance(value, str):
            text = value.strip()
            try:
                value = int(text, 0) if kw.is_int else float(text)
            except ValueError:
                raise UsageError(f"{kw.name} is a number keyword, not {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
            raise UsageError(f"{kw.name} is a number keyword, not {value!r}")
        if isinstance(value, int) or (kw.is_int and float(value).is_integer()):
            if kw.type == "int" and isinstance(value, int) and 2**31 <= value < 2**32:
                value -= 2**32  # 0x80000000 as DRMS's signed int, as the catalog stores it
            return str(int(value))
        return _float(float(value))
    if not isinstance(value, str):
        raise UsageError(f"{kw.name} is a string keyword, not {value!r}")
    return "'" + value.replace("'", "''") + "'"


def _float(value: float) -> str:
    if not math.isfinite(value):
        raise UsageError(f"not a finite number: {value!r}")
    return repr(float(value))


def env_mirror() -> str | None:
    return os.environ.get("JSOCMIRROR_MIRROR") or None
