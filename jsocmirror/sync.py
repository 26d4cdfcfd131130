"""Sync: keyword tables from JSOC into the DuckDB catalog, incrementally.

``sync(config, catalog, jsoc)`` runs, for each configured series:

1. **Probe**: ``series_struct`` (its ``Interval``: FirstRecnum, LastRecnum, MaxRecnum,
   LastRecord). A changed definition is stored again and new keyword columns are added. If the
   probe equals the one stored at the last complete run, nothing upstream can have changed
   (except a deletion deep in the past: ``full=True``) and the series is skipped.
2. **Head phase**: full keyword rows for the slots from the watermark less the trailing
   re-check window (``[sync] recheck``) up to the window's end (or the series' newest record
   when the end is open), in requests of about ``[sync] chunk_records`` records.
3. **Deep phase** (the probe moved and older slots were synced before): every new or
   reprocessed record has a RECNUM above the stored MaxRecnum, so one small ``rs_list`` of
   ``[:#old+1-#new]`` over the older part of the window names the slots to re-fetch; an
   ``rs_summary`` count then catches deletions, and only if it disagrees are all RECNUMs of
   the window compared with the catalog's (``rs_list`` of the time key and ``*recnum*``).

Each transaction holds a few consecutive replies and the watermark advance. Replies for slots
the catalog has no row of yet are plainly inserted, committing where the table completes a
DuckDB row group (a reply is split there; the watermark then stops at the first slot not wholly
committed). Other replies MERGE by ``_key`` (a new RECNUM keeps the old one in
``_prev_recnum``) and set ``_gone_at`` for records of their windows JSOC no longer lists,
committing every three replies. A crash at any moment leaves the catalog consistent; the next run continues
from the watermark. Three things overlap: a fetch thread receives the next two replies, the main
thread decodes the current one (``jsoc.rs_list_arrays`` then ``rows_to_arrow``, no per-value
Python objects), and a writer thread commits the previous batch (DuckDB releases the GIL).

Values: rs_list sends every value as a string. Integer keywords become integers (hex
``0x...`` read as DRMS's signed value), floats DOUBLE with NaN and MISSING as NULL, times
TIMESTAMP in UTC with DRMS's MISSING time as NULL; see docs/sql.md.

Nothing a reply says is stored before all of it is checked (``check_reply_shape``, then
``rows_to_arrow`` as it converts, column by column, vectorised): lists that disagree with the
reply's ``count``, prime-key values not of their key's type or unsafe in a path, repeated keys,
records outside the window asked for, values that do not fit their column (the table's own type:
a column is never widened). A refused reply raises JsocError (``refused``: one line) before its
rows reach the writer, so the open transaction rolls back and the watermark stays where it was.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import threading
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterator

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from jsocmirror import drmstime, recordset
from jsocmirror.catalog import DRMS_TO_DUCKDB, ROW_GROUP_ROWS, Catalog, Column, keyword_table
from jsocmirror.config import MirrorConfig, SeriesConfig, validate_series_entry
from jsocmirror.errors import JsocError, RecordSetError, SyncError, quoted
from jsocmirror.jsoc import RECORD_SPECIALS, JsocClient, decode, rs_list_arrays, rs_list_columns
from jsocmirror.publish import publishing
from jsocmirror.series import SeriesDef

log = logging.getLogger("jsocmirror.sync")

#: How far past this machine's clock a series' newest record may be dated and still be believed.
HEAD_LEAD_SECONDS = 86400.0

# Fields of series_struct that change with every record and so are not part of the definition.
_VOLATILE = ("Interval", "runtime", "status")
_PROBE_FIELDS = ("FirstRecnum", "LastRecnum", "MaxRecnum", "LastRecord")
_COUNT_RE = re.compile(rb'"count"\s*:\s*(\d+)')
_INT_BITS = {"char": 8, "short": 16, "int": 32, "longlong": 64}
_REQUESTS_AHEAD = 2  # rs_list requests submitted before their replies are decoded
_GAP_SLOTS = 16  # changed slots closer than this are re-fetched in one request
_COMMIT_ROWS = 125_000  # most merged rows per transaction (DuckDB holds an open transaction's rows in memory)


# -- results ----------------------------------------------------------------------------------
@dataclass
class SeriesSummary:
    """What one series' sync did (the CLI prints these; ``runs.summary`` stores them)."""

    series: str
    new: int = 0
    reprocessed: int = 0
    gone: int = 0
    unchanged: int = 0
    restored: int = 0
    chunks: int = 0
    requests: int = 0
    skipped: bool = False  # the probe showed nothing changed
    deep_scanned: bool = False  # the probe moved: older slots were checked
    recnums_compared: bool = False  # ... down to every RECNUM (a deletion, --full, or no rs_summary)
    records: int = 0  # current (not gone) records in the window afterwards
    seconds: float = 0.0
    #: wall seconds spent waiting for JSOC, decoding replies, converting to Arrow, writing the catalog
    timings: dict[str, float] = field(default_factory=lambda: {"wait": 0.0, "decode": 0.0, "convert": 0.0,
                                                                "write": 0.0})

    def add(self, counts: dict[str, int]) -> None:
        for name in ("new", "reprocessed", "gone", "unchanged", "restored"):
            setattr(self, name, getattr(self, name) + counts.get(name, 0))

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class SyncResult:
    run_id: str
    series: list[SeriesSummary] = field(default_factory=list)
    requests: int = 0
    bytes_received: int = 0
    seconds: float = 0.0

    def total(self, name: str) -> int:
        return sum(getattr(s, name) for s in self.series)


class Progress:
    """The progress protocol ``sync`` reports to (the CLI passes tqdm bars behind it).

    A renderer that sets ``wants_total`` gets the exact number of records to fetch, at the cost
    of one ``rs_summary`` request per series; otherwise ``estimated_records`` is a rough guess.
    """

    wants_total = False

    def series_started(self, series: str, estimated_records: int | None) -> None: ...
    def chunk_done(self, series: str, records: int) -> None: ...
    def series_done(self, summary: SeriesSummary) -> None: ...


# -- windows ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Window:
    """A part of a series' selection: slots ``[lo, hi)`` of ``slot_column``, sampled, key lists."""

    slot_column: str | None
    lo: int | None
    hi: int | None
    anchor: int = 0
    every: int = 1
    key_lists: dict[str, list] = field(default_factory=dict)

    def part(self, lo: int, hi: int) -> Window:
        return Window(self.slot_column, lo, hi, self.anchor, self.every, self.key_lists)

    @property
    def sampled_slots(self) -> int:
        if self.lo is None or self.hi is None:
            return 1
        first = self.lo + (-(self.lo - self.anchor)) % self.every
        return max(0, (self.hi - first + self.every - 1) // self.every)


@dataclass
class Selection:
    """A series entry resolved against the series' definition: how to ask JSOC for a window."""

    sdef: SeriesDef
    entry: SeriesConfig
    time_key: str | None  # the slotted time prime key that chunks the window
    window: Window  # the whole configured window ([lo, hi) may be None when unknown)
    key_brackets: dict[str, str]  # prime key -> bracket text for its value list

    def recordset(self, part: Window, recnums: tuple[int, int] | None = None) -> str:
        """The record set of a window; ``recnums=(a, b)`` adds ``[:#a-#b]`` (records with RECNUM in a..b)."""
        brackets = []
        for key in self.sdef.primekeys:
            if key == self.time_key and part.lo is not None:
                brackets.append(recordset.format_range(self.sdef, key, part.lo, part.hi - 1, part.every))
            else:
                brackets.append(self.key_brackets.get(key, ""))
        while brackets and brackets[-1] == "":
            brackets.pop()
        if recnums is not None:
            brackets.append(f":#{int(recnums[0])}-#{int(recnums[1])}")
        return recordset.build_recordset(self.sdef.name, brackets, where=self.entry.filter)

    def first_in_grid(self, slot: int) -> int:
        """The first sampled slot at or after ``slot``."""
        w = self.window
        return slot + (-(slot - w.anchor)) % w.every


def resolve_selection(sdef: SeriesDef, entry: SeriesConfig, interval: dict[str, Any] | None) -> Selection:
    """Turn a config entry into slot ranges and bracket texts for this series."""
    time_key = next((k for k in sdef.primekeys if sdef.keyword(k).is_time and sdef.slotting(k)), None)
    key_lists: dict[str, list] = {}
    key_brackets: dict[str, str] = {}
    for name, values in entry.keys.items():
        kw = sdef.keyword(name)
        if kw is None:
            raise SyncError(f"series {sdef.name}: {name!r} is not a keyword (fix keys.{name} in the config)")
        parsed = [_key_value(v, kw) for v in values]
        key_lists[kw.name] = parsed
        key_brackets[kw.name] = ",".join(str(v) for v in values)
    if time_key is None:
        return Selection(sdef, entry, None, Window(None, None, None, key_lists=key_lists), key_brackets)
    slotting = sdef.slotting(time_key)
    every = 1
    if entry.cadence:
        every = max(1, round(drmstime.parse_duration(entry.cadence, slotting.step) / slotting.step))
    if entry.start:
        lo = recordset.slot_of_value(sdef, time_key, drmstime.parse_time(entry.start))
        # ``a-b`` includes slot(a) even when a lies past its slot's centre: same as JSOC.
    else:
        first = _record_time_slot(sdef, time_key, (interval or {}).get("FirstRecord"))
        lo = first if first is not None else None
    if entry.end:
        hi = recordset.slot_of_value(sdef, time_key, drmstime.parse_time(entry.end)) + 1
    else:
        hi = None  # open: decided at each sync from the series' newest record
    anchor = lo if lo is not None else 0
    window = Window(f"{sdef.keyword(time_key).name}_index", lo, hi, anchor, every, key_lists)
    return Selection(sdef, entry, time_key, window, key_brackets)


def _key_value(value: int | str, kw) -> int | float | str:
    if kw.is_int:
        return int(value, 0) if isinstance(value, str) else int(value)
    if kw.is_float:
        return float(value)
    return str(value)


def _record_time_slot(sdef: SeriesDef, time_key: str, record: str | None) -> int | None:
    """Slot of the time prime key in a record string such as ``hmi.M_45s[2012...TAI][2]``."""
    if not record:
        return None
    try:
        values = recordset.split_record_key(record[record.index("["):])
        text = values[list(sdef.primekeys).index(time_key)]
        return recordset.slot_of_value(sdef, time_key, text)
    except (IndexError, ValueError, RecordSetError):
        return None


# -- decoding rs_list replies into Arrow ----------------------------------------------------------
_LEAP_UTC = np.array([change for change, _ in drmstime._LEAPS], dtype=np.float64)
_LEAP_VAL = np.array([value for _, value in drmstime._LEAPS], dtype=np.float64)
_LEAP_TAI = _LEAP_UTC + _LEAP_VAL
_S_1970_TO_1977 = drmstime.DAYS_1970_TO_1977 * 86400.0
_DOTTED = r"^(\d{4})\.(\d{2})\.(\d{2})_(\d{2}:\d{2}:[0-5]\d(?:\.\d+)?)_(TAI|UTC|UT)$"
_ISO = r"^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}:[0-5]\d(?:\.\d+)?)Z$"


def _leap(values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    idx = np.searchsorted(thresholds, values, side="right") - 1
    return np.where(idx >= 0, _LEAP_VAL[np.clip(idx, 0, None)], 10.0)


_FIXED_RE = re.compile(r"^\d{4}([.-])\d{2}\1\d{2}[_T]\d{2}:\d{2}:\d{2}(\.\d+)?(_TAI|_UTC|_UT|Z)$")


def _fixed_width_times(strings) -> np.ndarray | None:
    """Internal TAI seconds of a column whose times all share one layout, read by position.

    JSOC prints a keyword's times in one fixed-width form (``2024.06.30_00:00:00_TAI``,
    ``2024-06-30T00:11:21.05Z``), so digits sit at fixed offsets: numpy reads them straight from
    the Arrow buffer. None when the column is not uniform (MISSING values, mixed zones...).
    """
    arr = strings.combine_chunks() if isinstance(strings, pa.ChunkedArray) else strings
    n = len(arr)
    if n == 0 or arr.null_count or arr.type != pa.string():
        return None
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)[arr.offset:arr.offset + n + 1]
    width = int(offsets[1] - offsets[0])
    if width < 20 or not np.all(np.diff(offsets) == width):
        return None
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)[offsets[0]:offsets[-1]].reshape(n, width)
    template = data[0].tobytes().decode("latin-1")
    match = _FIXED_RE.match(template)
    if match is None:
        return None
    frac_len = len(match.group(2) or "")
    digit_pos = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18] + list(range(20, 19 + frac_len))
    fixed_pos = [i for i in range(width) if i not in set(digit_pos)]
    if not np.array_equal(data[:, fixed_pos], np.broadcast_to(data[0, fixed_pos], (n, len(fixed_pos)))):
        return None
    digits = data[:, digit_pos].astype(np.int64) - 48
    if digits.min() < 0 or digits.max() > 9:
        return None
    y = digits[:, 0] * 1000 + digits[:, 1] * 100 + digits[:, 2] * 10 + digits[:, 3]
    mo = digits[:, 4] * 10 + digits[:, 5]
    d = digits[:, 6] * 10 + digits[:, 7]
    h = digits[:, 8] * 10 + digits[:, 9]
    mi = digits[:, 10] * 10 + digits[:, 11]
    sec = digits[:, 12] * 10 + digits[:, 13]
    if mo.min() < 1 or mo.max() > 12 or d.min() < 1 or d.max() > 31 or h.max() > 23 or mi.max() > 59 or sec.max() > 59:
        return None  # leap seconds (23:59:60) and oddities take the general path
    cal = ((drmstime.days_from_civil(y, mo, d) - drmstime.DAYS_1970_TO_1977) * 86400 + h * 3600 + mi * 60 + sec).astype(np.float64)
    if frac_len > 1:
        frac = np.zeros(n, dtype=np.int64)
        for k in range(14, digits.shape[1]):
            frac = frac * 10 + digits[:, k]
        cal += frac / 10.0 ** (frac_len - 1)
    if match.group(3) == "_TAI":
        return cal
    return cal + _leap(cal, _LEAP_UTC)


def parse_times(strings: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Internal TAI seconds (float64, NaN = missing) and validity of JSOC time strings, vectorised.

    The common forms (``2012.01.01_00:00:45_TAI``, ``..._UTC``, ``2014-01-01T00:00:01Z``) are
    converted by Arrow; anything else (leap seconds, other zones) goes through
    ``drmstime.parse_time`` one by one. DRMS's MISSING time gives NaN.
    """
    n = len(strings)
    out = np.full(n, np.nan)
    if n == 0:
        return out, np.zeros(0, dtype=bool)
    fast = _fixed_width_times(strings)
    if fast is not None:
        return fast, np.ones(n, dtype=bool)
    dotted = pc.fill_null(pc.match_substring_regex(strings, _DOTTED), False)
    iso = pc.fill_null(pc.match_substring_regex(strings, _ISO), False)
    as_iso = pc.if_else(
        dotted, pc.replace_substring_regex(strings, _DOTTED, r"\1-\2-\3T\4"),
        pc.if_else(iso, pc.replace_substring_regex(strings, _ISO, r"\1T\2"), pa.scalar(None, pa.string())),
    )
    cal_us = pc.cast(pc.cast(as_iso, pa.timestamp("us")), pa.int64()).to_numpy(zero_copy_only=False)
    cal = np.asarray(cal_us, dtype=np.float64) / 1e6 - _S_1970_TO_1977  # calendar seconds since 1977
    tai_zone = pc.fill_null(pc.ends_with(strings, "_TAI"), False).to_numpy(zero_copy_only=False)
    known = np.asarray(pc.or_(dotted, iso).to_numpy(zero_copy_only=False), dtype=bool)
    utc_rows = known & ~tai_zone
    out[known & tai_zone] = cal[known & tai_zone]
    out[utc_rows] = cal[utc_rows] + _leap(cal[utc_rows], _LEAP_UTC)
    valid = np.asarray(pc.is_valid(strings).to_numpy(zero_copy_only=False), dtype=bool)
    for i in np.flatnonzero(valid & ~known):
        text = strings[int(i)].as_py()
        try:
            t = drmstime.parse_time(text)
        except ValueError:
            continue
        if not drmstime.is_missing(t):
            out[i] = t
    return out, ~np.isnan(out)


def tai_to_utc_timestamps(tai: np.ndarray) -> pa.Array:
    """TIMESTAMP (microseconds, UTC, naive) for internal TAI seconds; NaN -> NULL."""
    ok = ~np.isnan(tai)
    utc_cal = np.where(ok, tai - _leap(np.nan_to_num(tai), _LEAP_TAI), 0.0)
    micros = np.round((utc_cal + _S_1970_TO_1977) * 1e6).astype(np.int64)
    return pa.array(micros, type=pa.timestamp("us"), mask=~ok)


# -- checking and converting rs_list values -------------------------------------------------------
# Nothing a reply says is stored unless every value fits: a prime key that is not of its key's
# type (or would not make a safe path), a count that disagrees, a value that does not fit its
# column refuses the whole reply (``refused``): one line, and the watermark stays put.
_MISSING_WORDS = pa.array(["MISSING", ""])
_SQL_INT_BITS = {"TINYINT": 8, "SMALLINT": 16, "INTEGER": 32, "BIGINT": 64}
_DECIMAL_RE = re.compile(r"\s*[-+]?[0-9]+\s*", re.ASCII)
_HEX_RE = re.compile(r"\s*-?0[xX][0-9a-fA-F]+\s*", re.ASCII)
_CANONICAL_INT = r"^-?(0|[1-9][0-9]*)$"
_BAD_KEY_CHARS = r"[/\\\[\]\x00-\x1f\x7f]"
_STRING_KEY_ACCEPTS = "text without '/', '\\', '[', ']' or control characters, and not '.' or '..'"
_TIME_ACCEPTS = "a JSOC time such as 2024.06.30_00:00:00_TAI or 2024-06-30T00:00:00Z"


def refused(series: str, detail: str) -> JsocError:
    """The one-line error of a refused rs_list reply (nothing of it is stored)."""
    return JsocError(f"refused JSOC's rs_list reply for {series}, nothing of it stored: {detail}")


def _first(mask) -> int | None:
    """Index of the first true value of a boolean Arrow/numpy mask (nulls count as false), or None."""
    if isinstance(mask, (pa.Array, pa.ChunkedArray)):
        if not pc.any(mask).as_py():
            return None
        mask = pc.fill_null(mask, False).to_numpy(zero_copy_only=False)
    hits = np.flatnonzero(mask)
    return int(hits[0]) if len(hits) else None


def _value_at(strings, i: int):
    return strings[i].as_py() if isinstance(strings, (pa.Array, pa.ChunkedArray)) else strings[i]


def _int_range(bits: int) -> tuple[int, int]:
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def _int_accepts(bits: int, missing: bool) -> str:
    lo, hi = _int_range(bits)
    return f"a whole number from {lo} to {hi}" + (" (or hex), or MISSING" if missing else "")


def _int_checked(strings: pa.Array, bits: int) -> tuple[pa.Array, int | None]:
    """int64 values of an int keyword (MISSING -> NULL) and the index of the first value that is
    neither MISSING nor an integer of ``bits`` bits (hex read as DRMS's signed value), or None."""
    i64 = pa.int64()
    try:
        values = pc.cast(strings, i64)  # decimals (and hex, in recent Arrow): no Python objects
        if bits < 64:
            # DRMS prints some ints (QUALITY) as the hex of their bits: 0x80000000 is -2147483648.
            hexes = pc.fill_null(pc.starts_with(strings, "0x"), False)
            high = pc.and_(pc.greater_equal(values, pa.scalar(2 ** (bits - 1), i64)),
                           pc.less(values, pa.scalar(2 ** bits, i64)))
            values = pc.if_else(pc.and_(hexes, pc.fill_null(high, False)),
                                pc.subtract(values, pa.scalar(2 ** bits, i64)), values)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # MISSING, spaces, overflow
        values = pa.array([_int_or_none(v, bits) for v in strings.to_pylist()], type=i64)
    lo, hi = _int_range(bits)
    bad = pc.or_kleene(pc.less(values, pa.scalar(lo, i64)), pc.greater(values, pa.scalar(hi, i64)))
    if values.null_count > strings.null_count:  # some values did not parse: fine only if MISSING
        unparsed = pc.and_(pc.is_null(values), pc.is_valid(strings))
        words = pc.is_in(pc.utf8_trim_whitespace(strings), value_set=_MISSING_WORDS)
        bad = pc.or_kleene(bad, pc.and_(unparsed, pc.invert(words)))
    return values, _first(bad)


def _int_array(strings: pa.Array, drms_type: str) -> pa.Array:
    """int64 values of an int keyword of DRMS type ``drms_type``; anything not an integer is NULL."""
    values, _ = _int_checked(strings, _INT_BITS.get(drms_type, 64))
    lo, hi = _int_range(_INT_BITS.get(drms_type, 64))
    i64 = pa.int64()
    in_range = pc.and_(pc.greater_equal(values, pa.scalar(lo, i64)), pc.less_equal(values, pa.scalar(hi, i64)))
    return pc.if_else(in_range, values, pa.scalar(None, i64))


def recnum_array(values: list) -> pa.Array:
    """int64 Arrow array of ``*recnum*`` values (JSON numbers from JSOC, or strings)."""
    try:
        return pa.array(values, type=pa.int64())
    except (pa.ArrowTypeError, pa.ArrowInvalid, OverflowError):
        return _int_array(pa.array([None if v is None else str(v) for v in values], type=pa.string()), "longlong")


def _int_or_none(text: str | None, bits: int = 64) -> int | None:
    """An integer as DRMS prints it (decimal, or hex of the value's ``bits`` bits); None otherwise."""
    if text is None:
        return None
    if _DECIMAL_RE.fullmatch(text):
        value = int(text)
    elif _HEX_RE.fullmatch(text):
        value = int(text, 16)
        if 2 ** (bits - 1) <= value < 2 ** bits:  # the bits of a negative value: 0x80000000 is INT_MIN
            value -= 2 ** bits
    else:
        return None
    return value if -(2 ** 63) <= value < 2 ** 63 else None


_NUMBER_RE = r"^\s*[-+]?(\d+\.?\d*([eE][-+]?\d+)?|\.\d+([eE][-+]?\d+)?|nan|inf|infinity)\s*$"


def _float_checked(strings: pa.Array) -> tuple[pa.Array, int | None]:
    """DOUBLE values of a float keyword (NaN and MISSING -> NULL) and the index of the first value
    that is neither a number nor MISSING, or None."""
    values = _try_cast_float(strings)
    bad = None
    if values is None:  # the usual culprit: DRMS's MISSING written out
        values = _try_cast_float(pc.if_else(pc.is_in(strings, value_set=_MISSING_WORDS),
                                            pa.scalar(None, pa.string()), strings))
    if values is None:  # other words: refused unless MISSING (spaced), numbers kept
        numeric = pc.fill_null(pc.match_substring_regex(strings, _NUMBER_RE, ignore_case=True), False)
        words = pc.is_in(pc.utf8_trim_whitespace(strings), value_set=_MISSING_WORDS)
        bad = _first(pc.and_(pc.invert(numeric), pc.and_(pc.is_valid(strings), pc.invert(words))))
        kept = pc.if_else(numeric, strings, pa.scalar(None, pa.string()))
        values = _try_cast_float(kept)
        if values is None:  # numbers Arrow does not read (spaces around them...)
            values = pa.array([_float_or_none(v) for v in kept.to_pylist()], type=pa.float64())
    return pc.if_else(pc.is_nan(values), pa.scalar(None, pa.float64()), values), bad


def _float_array(strings: pa.Array) -> pa.Array:
    """DOUBLE values of a float keyword: NaN and words (DRMS's MISSING) become NULL."""
    return _float_checked(strings)[0]


def _try_cast_float(strings):
    try:
        return pc.cast(strings, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def _float_or_none(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _time_bad(strings: pa.Array, tai: np.ndarray, *, missing_ok: bool) -> int | None:
    """Index of the first value that is not a JSOC time (nor, if ``missing_ok``, DRMS's MISSING)."""
    nan = np.isnan(tai)
    if not nan.any():
        return None
    for i in np.flatnonzero(nan).tolist():
        text = strings[i].as_py()
        if not (missing_ok and (text is None or _is_missing_time(text))):
            return i
    return None


def _is_missing_time(text: str) -> bool:
    if text.strip() in ("MISSING", ""):
        return True
    try:
        return drmstime.is_missing(drmstime.parse_time(text))
    except ValueError:
        return False


def _check_prime_keys(sdef: SeriesDef, columns: list[Column], prime_raw: list[pa.Array], tai_of) -> None:
    """Refuse a reply whose prime-key values are not of their column's type or not safe in a path."""
    types = {c.keyword.lower(): c.sql_type for c in columns if c.kind == "keyword"}
    for kw, raw in zip(sdef.primekey_keywords, prime_raw):
        sql_type = types.get(kw.name.lower(), DRMS_TO_DUCKDB.get(kw.type, "VARCHAR"))
        what = f"prime key {kw.name} value"
        if raw.null_count:
            raise refused(sdef.name, f"{what} null (accepted: a value for every record)")
        # (ints are checked below against a stricter pattern; times parse loosely, '/' included)
        bad_chars = None if sql_type in _SQL_INT_BITS else _first(pc.match_substring_regex(raw, _BAD_KEY_CHARS))
        if bad_chars is not None or sql_type == "VARCHAR":
            dots = _first(pc.is_in(raw, value_set=pa.array([".", ".."])))
            i = bad_chars if bad_chars is not None else dots
            if i is not None:
                if sql_type == "VARCHAR":
                    raise refused(sdef.name, f"{what} {quoted(_value_at(raw, i))} (accepted: {_STRING_KEY_ACCEPTS})")
                accepted = _TIME_ACCEPTS if sql_type == "TIMESTAMP" else f"a {kw.type} value"
                raise refused(sdef.name, f"{what} {quoted(_value_at(raw, i))} is not a {kw.type} (accepted: {accepted})")
        if sql_type == "TIMESTAMP":
            i = _time_bad(raw, tai_of(kw.name), missing_ok=sdef.slotting(kw.name) is None)
            if i is not None:
                raise refused(sdef.name, f"{what} {quoted(_value_at(raw, i))} is not a time (accepted: {_TIME_ACCEPTS})")
        elif sql_type in _SQL_INT_BITS:
            bits = _SQL_INT_BITS[sql_type]
            i = _first(pc.invert(pc.match_substring_regex(raw, _CANONICAL_INT)))
            if i is None:
                _, i = _int_checked(raw, bits)
            if i is not None:
                raise refused(sdef.name, f"{what} {quoted(_value_at(raw, i))} (accepted: {_int_accepts(bits, False)})")
        elif sql_type == "DOUBLE":
            values, i = _float_checked(raw)
            if i is None:
                i = _first(pc.is_null(values))
            if i is not None:
                raise refused(sdef.name, f"{what} {quoted(_value_at(raw, i))} (accepted: a finite number)")


def _check_unique_keys(series: str, keys: pa.Array) -> None:
    if pc.count_distinct(keys).as_py() == len(keys):
        return
    counts = pc.value_counts(keys)
    twice = counts.filter(pc.greater(counts.field("counts"), 1))[0]
    raise refused(series, f"prime-key values {quoted(twice['values'].as_py())} occur "
                          f"{twice['counts'].as_py()} times (accepted: each record once)")


def rows_to_arrow(keywords: dict[str, Any], columns: list[Column], sdef: SeriesDef,
                  window: Window | None = None) -> pa.Table:
    """An Arrow table with the keyword table's columns from one rs_list reply, every value checked.

    ``keywords`` maps each keyword of the reply to its values: an Arrow string array (from
    ``jsoc.rs_list_arrays``) or a list of strings. Values are converted to the columns' SQL
    types (``Column.sql_type``: the table's own, never widened); a value that does not fit, a
    prime-key value not of its type or unsafe in a path, a repeated prime-key tuple, or (with
    ``window``) a record outside the window asked for raises JsocError (``refused``).
    """
    series = sdef.name
    names = {name.lower(): name for name in keywords}

    def raw(name: str) -> pa.Array:
        key = names.get(name.lower())
        if key is None:
            raise refused(series, f"keyword {name} is missing (accepted: a reply listing every keyword asked for)")
        values = keywords[key]
        if isinstance(values, (pa.Array, pa.ChunkedArray)):
            return values
        try:
            return pa.array(values, type=pa.string())
        except (pa.ArrowTypeError, pa.ArrowInvalid):  # JSOC sends *recnum*/*sunum* as JSON numbers
            return pa.array([None if v is None else str(v) for v in keywords[key]], type=pa.string())

    def special(name: str, nullable: bool) -> pa.Array:
        key = names.get(name.lower())
        values = keywords[key] if key is not None else None
        if values is not None and not isinstance(values, (pa.Array, pa.ChunkedArray)):
            try:
                return pa.array(values, type=pa.int64())
            except (pa.ArrowTypeError, pa.ArrowInvalid, OverflowError):
                pass
        strings = raw(name)
        out, bad = _int_checked(strings, 64)
        if bad is None and not nullable:
            bad = _first(pc.is_null(out))
        if bad is not None:
            raise refused(series, f"{name} value {quoted(_value_at(strings, bad))} "
                                  f"(accepted: {_int_accepts(64, nullable)})")
        return out

    n = len(next(iter(keywords.values()))) if keywords else 0
    for name, values in keywords.items():
        if len(values) != n:
            raise refused(series, f"keyword {quoted(name)} has {len(values)} values, "
                                  f"{quoted(next(iter(keywords)))} has {n} (accepted: one value per record)")
    out: dict[str, pa.Array] = {}
    time_cache: dict[str, np.ndarray] = {}

    def tai_of(name: str) -> np.ndarray:
        if name not in time_cache:
            time_cache[name] = parse_times(raw(name))[0]
        return time_cache[name]

    prime_raw = [raw(k) for k in sdef.primekeys]
    _check_prime_keys(sdef, columns, prime_raw, tai_of)
    for col in columns:
        if col.kind == "key":
            if prime_raw:
                parts: list[Any] = []
                for i, arr in enumerate(prime_raw):
                    parts += ["[" if i == 0 else "][", arr]
                out["_key"] = pc.binary_join_element_wise(*parts, "]", "")
            else:
                out["_key"] = pc.binary_join_element_wise(pa.scalar("[:#"), raw("*recnum*"), "]", "")
            _check_unique_keys(series, out["_key"])
        elif col.kind == "slot":
            kw = sdef.keyword(col.keyword)
            slotting = sdef.slotting(col.keyword)
            values = tai_of(kw.name) if kw.is_time else _float_array(raw(kw.name)).to_numpy(zero_copy_only=False)
            rounding = slotting.step if slotting.kind == "ts_eq" else slotting.round
            offset = float(sdef.emulator.get("trec_offset", 0.0)) if kw.name == "T_REC" else 0.0
            idx = np.floor((values - offset - slotting.epoch + rounding / 2.0) / slotting.step + 1e-9)
            ok = ~np.isnan(idx)
            out[col.name] = pa.array(np.where(ok, idx, 0).astype(np.int64), type=pa.int64(), mask=~ok)
        elif col.kind == "keyword":
            strings = raw(col.keyword)
            t = col.sql_type
            bad, accepted = None, ""
            if t == "TIMESTAMP":
                tai = tai_of(col.keyword)
                out[col.name] = tai_to_utc_timestamps(tai)
                bad, accepted = _time_bad(strings, tai, missing_ok=True), f"{_TIME_ACCEPTS}, or MISSING"
            elif t in _SQL_INT_BITS:
                out[col.name], bad = _int_checked(strings, _SQL_INT_BITS[t])
                accepted = _int_accepts(_SQL_INT_BITS[t], True)
            elif t == "DOUBLE":
                out[col.name], bad = _float_checked(strings)
                accepted = "a number, NaN or MISSING"
            else:
                out[col.name] = strings
            if bad is not None:
                raise refused(series, f"{col.keyword} value {quoted(_value_at(strings, bad))} does not fit "
                                      f"its {t} column (accepted: {accepted})")
        elif col.kind == "time_str":
            out[col.name] = raw(col.keyword)
    out["_recnum"] = special("*recnum*", nullable=False)
    out["_sunum"] = special("*sunum*", nullable=True)
    out["_size"] = special("*size*", nullable=True)
    online = pc.utf8_upper(raw("*online*"))
    out["_online"] = pc.is_in(online, value_set=pa.array(["Y", "1", "YES", "T", "TRUE"]))
    table = pa.table(out)
    if window is not None:
        _check_window(sdef, table, window)
    return _cast_to_sql_types(table, columns)


def _check_window(sdef: SeriesDef, rows: pa.Table, window: Window) -> None:
    """Refuse records outside the window asked for: they would sit where no later sync looks."""
    outside = None
    if window.slot_column is not None and window.lo is not None and window.hi is not None and rows.num_rows:
        slots = rows[window.slot_column].to_numpy()
        off = (slots < window.lo) | (slots >= window.hi)
        if window.every > 1:
            off |= (slots - window.anchor) % window.every != 0
        outside = _first(off)
    for column, values in sorted(window.key_lists.items()):
        if outside is None and column in rows.column_names:
            try:
                listed = pa.array(values, rows[column].type)
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
                continue  # a list the column's type cannot hold (a time key listed by text): JSOC filtered it
            outside = _first(pc.invert(pc.is_in(rows[column], value_set=listed)))
    if outside is not None:
        raise refused(sdef.name, f"record {quoted(rows['_key'][outside].as_py())} lies outside the record set "
                                 "asked for (accepted: records of the requested slots and key values)")


def check_reply_shape(series: str, keywords: dict[str, Any], count: int, body: bytes) -> None:
    """Refuse an rs_list reply whose lists disagree with its ``count``: every keyword's values, and
    each segment's and link's per-record lists (segments and links are small unless asked for)."""
    if not isinstance(count, int) or count < 0:
        raise refused(series, f"count {quoted(count)} (accepted: a whole number of records)")
    for name, values in keywords.items():
        if len(values) != count:
            raise refused(series, f"keyword {quoted(name)} has {len(values)} values for a count of {count} "
                                  "(accepted: one value per record)")
    for part in ("segments", "links"):
        items = _reply_part(body, part)
        if items is None:
            continue
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise refused(series, f"{part} {quoted(items)} (accepted: a list of objects)")
        for item in items:
            for field_name, values in item.items():
                if not isinstance(values, list):
                    continue
                if len(values) == count or (field_name != "values" and not values):
                    continue  # per-record lists have a value per record (cparms, bzeros... may be empty)
                raise refused(series, f"{part[:-1]} {quoted(item.get('name'))} "
                                      f"has {len(values)} {field_name} for a count of {count} "
                                      "(accepted: one per record)")


def _reply_part(body: bytes, name: str):
    """The top-level ``name`` member of a reply (None when absent), decoded on its own."""
    key = b'"' + name.encode() + b'"'
    pos = body.rfind(key)
    while pos >= 0 and not body[pos + len(key):pos + len(key) + 16].lstrip().startswith(b":"):
        pos = body.rfind(key, 0, pos)  # a value or a keyword's name, not the member
    if pos < 0:
        return None
    try:
        return decode(b"{" + body[pos:], "rs_list").get(name)
    except JsocError:  # not at the top level after all (rs_list_arrays decoded the whole reply)
        return decode(body, "rs_list").get(name)


_ARROW_TYPES = {
    "TINYINT": pa.int8(), "SMALLINT": pa.int16(), "INTEGER": pa.int32(), "BIGINT": pa.int64(),
    "DOUBLE": pa.float64(), "VARCHAR": pa.string(), "TIMESTAMP": pa.timestamp("us"), "BOOLEAN": pa.bool_(),
}


def _cast_to_sql_types(table: pa.Table, columns: list[Column]) -> pa.Table:
    """The chunk in the catalog's column types and one fixed order (so chunks concatenate)."""
    types = {c.name: _ARROW_TYPES[c.sql_type] for c in columns}
    names = [c.name for c in columns if c.kind != "record"] + ["_recnum", "_sunum", "_online", "_size"]
    return pa.table([table[name].cast(types[name]) for name in names], names=names)


# -- the sync itself ------------------------------------------------------------------------------
def struct_definition(struct: dict[str, Any], name: str) -> tuple[SeriesDef, str, str]:
    """(definition, JSON text, hash) of a series_struct reply, without its volatile fields."""
    stable = {k: v for k, v in struct.items() if k not in _VOLATILE}
    text = orjson.dumps(stable, option=orjson.OPT_SORT_KEYS).decode()
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    try:
        sdef = SeriesDef.from_struct(stable, name=name)
    except ValueError as exc:
        raise JsocError(f"JSOC's definition of {name} is unusable: {exc}") from None
    return sdef, text, digest


def _probe(interval: dict[str, Any] | None) -> dict[str, Any]:
    interval = interval or {}
    return {f: interval.get(f) for f in _PROBE_FIELDS}


def _fetch_keys(sdef: SeriesDef, entry: SeriesConfig) -> list[str]:
    if entry.keywords is None:
        return ["**ALL**", *RECORD_SPECIALS]
    wanted = list(dict.fromkeys([*sdef.primekeys, *entry.keywords] + (["QUALITY"] if sdef.keyword("QUALITY") else [])))
    return [*wanted, *RECORD_SPECIALS]


class _SeriesSync:
    """One series' sync run (see the module docstring for the phases)."""

    def __init__(self, catalog: Catalog, jsoc: JsocClient, entry: SeriesConfig, config: MirrorConfig,
                 run_id: str, progress: Progress, full: bool = False):
        self.full = full
        self.catalog, self.jsoc, self.entry, self.config = catalog, jsoc, entry, config
        self.run_id, self.progress = run_id, progress
        self.summary = SeriesSummary(series=entry.series)
        self.target = config.sync.chunk_records
        # Three replies per transaction: fewer commits (fsyncs) than one per reply, while the
        # rows DuckDB keeps in memory for an open transaction stay bounded (measured: 125k-row
        # transactions pushed a 1M-record sync to ~630 MB peak RSS, 75k kept it near 440 MB).
        self.commit_rows = min(_COMMIT_ROWS, 3 * self.target)
        # Inserts into empty slot ranges commit where the table reaches a multiple of this: the
        # smallest 1/2^k of a DuckDB row group holding commit_rows (a whole row group at the
        # default chunk size), so commits complete row groups rather than leave them half full.
        self.fresh_commit_rows = ROW_GROUP_ROWS
        while self.fresh_commit_rows % 2 == 0 and self.fresh_commit_rows // 2 >= self.commit_rows:
            self.fresh_commit_rows //= 2
        self._txn_rows: int | None = None  # rows in the writer's open transaction, None if none
        self._txn_merged = 0  # ... of which merged (rather than inserted into an empty slot range)
        self._table_rows: int | None = None  # rows in the keyword table, open transaction included

    # -- entry point ---------------------------------------------------------------------------
    def run(self) -> SeriesSummary:
        started, requests0 = time.monotonic(), self.jsoc.requests
        try:
            self._run()
        finally:
            self.summary.requests = self.jsoc.requests - requests0
            self.summary.seconds = time.monotonic() - started
        return self.summary

    def _run(self) -> None:
        entry = self.entry
        struct = self.jsoc.series_struct(entry.series)
        interval = struct.get("Interval") or {}
        sdef, struct_json, struct_hash = struct_definition(struct, entry.series)
        self.sdef = sdef
        # A hand-edited entry naming a prime key or keyword the series lacks is a config error
        # (exit 2, naming it and the known ones), found before anything of it is stored.
        validate_series_entry(entry, sdef)
        self._check_definition(sdef)
        with self.catalog.transaction():
            self.catalog.put_series_def(entry.series, struct_json, struct_hash, orjson.dumps(interval).decode())
            self.columns = self._table_columns(self.catalog.ensure_keyword_table(sdef, entry.keywords))
        self.keys = _fetch_keys(sdef, entry)
        sel = self.sel = resolve_selection(sdef, entry, interval)
        probe = _probe(interval)
        selection_json = orjson.dumps(entry.selection(), option=orjson.OPT_SORT_KEYS).decode()
        state = self._state()
        if state is None or state["selection"] != selection_json:
            lo = sel.window.lo
            # The baseline probe: changes after this moment show up as a different probe later.
            self.catalog.q("sync_state_reset", series=entry.series, selection=selection_json,
                           lo_index=lo, run_id=self.run_id,
                           first_recnum=probe["FirstRecnum"], last_recnum=probe["LastRecnum"],
                           max_recnum=probe["MaxRecnum"], last_record=probe["LastRecord"]).fetchall()
            state = self._state()
        stored_probe = {"FirstRecnum": state["first_recnum"], "LastRecnum": state["last_recnum"],
                        "MaxRecnum": state["max_recnum"], "LastRecord": state["last_record"]}
        if state["complete"] and stored_probe == probe and not self.full:
            self.summary.skipped = True
            self.summary.records = state["records"] or 0
            self.progress.series_started(entry.series, 0)
            self.progress.series_done(self.summary)
            return
        self.catalog.q("sync_state_begin", series=entry.series, run_id=self.run_id).fetchall()
        if not interval.get("LastRecord") and not interval.get("MaxRecnum"):
            log.info("%s has no records upstream", entry.series)
            whole = sel.window
            if sel.time_key is None or whole.lo is None:
                self._apply_window_empty(whole)
        elif sel.time_key is None:
            self._sync_window(sel.window, advance=False)
        else:
            self._sync_slotted(state, probe, stored_probe, interval)
        records = self.catalog.count_window(entry.series, self._whole_window())
        self.summary.records = records
        self.catalog.q("sync_state_finish", series=entry.series, run_id=self.run_id, records=records,
                       first_recnum=probe["FirstRecnum"], last_recnum=probe["LastRecnum"],
                       max_recnum=probe["MaxRecnum"], last_record=probe["LastRecord"]).fetchall()
        self.progress.series_done(self.summary)

    def _check_definition(self, sdef: SeriesDef) -> None:
        """Refuse a definition whose prime keys differ from those the catalog was built with.

        The record keys, slots and file paths of every stored row follow from the prime keys and
        their types: a definition that changes them (a key drifting to strings, say) would make
        the stored rows unreachable, so it is not stored and the sync stops here.
        """
        series = self.entry.series
        existing = {name.lower(): dtype for name, dtype in self.catalog.table_columns(keyword_table(series)).items()}
        stored = self.catalog.q("series_def_get", series=series).fetchall()
        if not existing or not stored:
            return
        try:
            old_keys = list(orjson.loads(stored[0][1]).get("primekeys") or [])
        except (orjson.JSONDecodeError, AttributeError, TypeError):
            return
        problem = None
        if [k.lower() for k in old_keys] != [k.lower() for k in sdef.primekeys]:
            problem = f"prime keys {quoted(list(sdef.primekeys))} instead of {quoted(old_keys)}"
        else:
            for kw in sdef.primekey_keywords:
                have, want = existing.get(kw.name.lower()), DRMS_TO_DUCKDB.get(kw.type, "VARCHAR")
                if have is not None and have != want:
                    problem = f"prime key {kw.name} of type {quoted(kw.type)} where the catalog's column is {have}"
                    break
        if problem is not None:
            raise JsocError(
                f"refused JSOC's definition of {series}, nothing of it stored: {problem} (accepted: the prime "
                "keys and types the mirror's rows were stored under; if JSOC really redefined the series, "
                "remove it from the mirror and add it again)")

    def _table_columns(self, columns: list[Column]) -> list[Column]:
        """The columns with the keyword table's own SQL types: a value must fit the column it has (a
        definition that changed a keyword's type never widens the column; misfits are refused)."""
        actual = {name.lower(): dtype for name, dtype in
                  self.catalog.table_columns(keyword_table(self.entry.series)).items()}
        out = []
        for col in columns:
            have = actual.get(col.name.lower())
            if col.kind == "keyword" and have != col.sql_type and have in _ARROW_TYPES:
                col = Column(col.name, have, col.kind, keyword=col.keyword, drms_type=col.drms_type)
            out.append(col)
        return out

    def _state(self) -> dict[str, Any] | None:
        rows = self.catalog.q("sync_state_get", series=self.entry.series).fetchall()
        if not rows:
            return None
        names = ["series", "selection", "lo_index", "watermark_index", "watermark_time", "complete",
                 "first_recnum", "last_recnum", "max_recnum", "last_record", "records", "run_id", "updated_at"]
        state = dict(zip(names, rows[0]))
        if state["selection"] is not None and not isinstance(state["selection"], str):
            state["selection"] = orjson.dumps(state["selection"], option=orjson.OPT_SORT_KEYS).decode()
        elif state["selection"] is not None:
            state["selection"] = orjson.dumps(orjson.loads(state["selection"]), option=orjson.OPT_SORT_KEYS).decode()
        return state

    def _whole_window(self) -> Window:
        w = self.sel.window
        return w.part(w.lo, w.hi) if w.slot_column else w

    # -- slotted series ----------------------------------------------------------------------
    def _sync_slotted(self, state, probe, stored_probe, interval) -> None:
        sel = self.sel
        lo = sel.window.lo
        hi = sel.window.hi
        if hi is None:
            hi = self._head_slot(interval)
            if hi is None:
                return
            hi += 1
        if lo is None:
            lo = self._first_slot(interval)
            if lo is None:
                return
            sel.window = Window(sel.window.slot_column, lo, sel.window.hi, lo, sel.window.every, sel.window.key_lists)
        if hi <= lo:
            return
        sel.window = sel.window.part(lo, sel.window.hi)
        watermark = state["watermark_index"] if state["watermark_index"] is not None else lo
        recheck_slots = math.ceil(drmstime.parse_duration(self.config.sync.recheck) / self.sdef.slotting(sel.time_key).step)
        head_from = sel.first_in_grid(max(lo, min(watermark, hi) - recheck_slots))
        estimated: int | None = self._estimate_records(hi - head_from)
        if getattr(self.progress, "wants_total", False):
            try:
                estimated = self.jsoc.rs_count(self.sel.recordset(self.sel.window.part(head_from, hi)))
            except JsocError:
                estimated = None
        self.progress.series_started(self.entry.series, estimated)
        # Head phase: new records and the trailing re-check window, advancing the watermark.
        self._sync_range(head_from, hi, advance=True)
        # Deep phase: only if something changed upstream and older slots were synced before.
        if head_from > lo and (stored_probe != probe or self.full):
            self.summary.deep_scanned = True
            self._deep_check(lo, head_from, stored_probe, probe)

    def _head_slot(self, interval) -> int | None:
        """Slot of the series' newest record (for an open window end), never past what this
        machine's clock allows: a head the server dates years ahead would put the watermark there."""
        slot = self._reported_head_slot(interval)
        latest = self._latest_believable_slot()
        if slot is not None and latest is not None and slot > latest:
            log.warning("%s: JSOC dates its newest record more than a day past this machine's clock; "
                        "syncing up to the clock's day instead", self.sdef.name)
            return latest
        return slot

    def _latest_believable_slot(self) -> int | None:
        """The slot of this machine's clock plus a day: no observation is newer than that."""
        try:
            return recordset.slot_of_value(self.sdef, self.sel.time_key, drmstime.now() + HEAD_LEAD_SECONDS)
        except (RecordSetError, ValueError):
            return None  # a time key that is no time: nothing to compare with

    def _reported_head_slot(self, interval) -> int | None:
        sdef, key = self.sdef, self.sel.time_key
        brackets = ["" for _ in sdef.primekeys]
        brackets[list(sdef.primekeys).index(key)] = "$"
        while brackets and brackets[-1] == "":
            brackets.pop()
        try:
            reply = self.jsoc.rs_list(recordset.build_recordset(sdef.name, brackets), [key], n=-1)
            values = rs_list_columns(reply).get(key) or []
            if values:
                return recordset.slot_of_value(sdef, key, values[-1])
        except (JsocError, ValueError) as exc:
            log.info("head query for %s failed (%s); using Interval.LastRecord", sdef.name, exc)
        return _record_time_slot(sdef, key, interval.get("LastRecord"))

    def _first_slot(self, interval) -> int | None:
        return _record_time_slot(self.sdef, self.sel.time_key, interval.get("FirstRecord"))

    def _density_prior(self) -> float:
        """Records per sampled slot to assume before any reply: the key lists' sizes, x16 if open."""
        sdef, sel = self.sdef, self.sel
        density = 1.0
        for key in sdef.primekeys:
            if key == sel.time_key:
                continue
            kw = sdef.keyword(key)
            listed = sel.window.key_lists.get(kw.name)
            density *= len(listed) if listed else 16.0
        return density

    def _estimate_records(self, slots: int) -> int:
        return int(max(0, slots) / self.sel.window.every * self._density_prior())

    def _chunks(self, lo: int, hi: int, records_per_chunk: int) -> Iterator[tuple[Window, int]]:
        """Windows covering [lo, hi), sized to ~records_per_chunk from the density seen so far.

        Send each reply's record count back: a plain count belongs to the window just yielded,
        a ``(count, window)`` pair to that window (when requests run ahead of replies).
        """
        every = self.sel.window.every
        density = self._density_prior()
        start = self.sel.first_in_grid(lo)
        while start < hi:
            width = max(every, int(records_per_chunk / max(density, 1e-6)) * every)
            end = min(hi, start + width)
            count = yield self.sel.window.part(start, end), width
            sampled = max(1, (end - start + every - 1) // every)
            if isinstance(count, tuple):
                count, replied = count
                sampled = max(1, replied.sampled_slots)
            if count is not None:
                observed = count / sampled
                # Grow at most 8x per chunk: a sparse stretch must not make the next chunk huge.
                density = max(observed, density / 8.0, 1e-6)
            start = end

    def _sync_range(self, lo: int, hi: int, *, advance: bool) -> None:
        """Fetch full rows for slots [lo, hi) request by request; commit them in batches.

        Requests stay near ``chunk_records`` (JSOC's limits). Each decoded reply goes straight
        into the open transaction, so nothing waits in Python memory. Replies for slots the
        catalog does not have yet (a first sync, the head of a nightly one) are plainly inserted
        and committed whenever the table reaches a DuckDB row-group boundary, splitting a reply
        there if need be (``_insert_fresh``); merged replies commit once the transaction holds
        ``commit_rows`` merged rows (three replies). Every commit carries its watermark. A writer thread
        does all catalog work (DuckDB releases the GIL), so reply N is written while reply N+1
        is decoded and N+2, N+3 are on their way; one write is in flight at a time, in order, and its
        errors surface before the next is handed over.
        """
        chunker = self._chunks(lo, hi, self.target)
        self._table_rows = None  # counted again by the writer (other phases may have added rows)
        fetcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jsocmirror-fetch")
        writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jsocmirror-write")
        writing = None
        try:
            window, _ = next(chunker)
            queue = deque([(window, fetcher.submit(self._fetch, window))])
            exhausted = False
            # Two requests ahead, so JSOC never idles while a slow write holds up the decoder
            # (the second is sized from the density known before the first reply).
            while len(queue) < _REQUESTS_AHEAD and not exhausted:
                try:
                    ahead, _ = chunker.send(None)
                    queue.append((ahead, fetcher.submit(self._fetch, ahead)))
                except StopIteration:
                    exhausted = True
            while queue:
                window, pending = queue.popleft()
                waited = time.perf_counter()
                body = pending.result()
                self.summary.timings["wait"] += time.perf_counter() - waited
                if not exhausted:
                    try:
                        ahead, _ = chunker.send((_reply_count(body), window))
                        queue.append((ahead, fetcher.submit(self._fetch, ahead)))
                    except StopIteration:
                        exhausted = True
                rows = self._decode(window, body)
                del body
                if writing is not None:
                    writing.result()
                writing = writer.submit(self._write, window, rows, advance, not queue)
                del rows
            if writing is not None:
                writing.result()
        finally:
            chunker.close()
            fetcher.shutdown(wait=True, cancel_futures=True)
            writer.shutdown(wait=True)  # a write under way finishes (or fails) first
            if self._txn_rows is not None:  # stopped between commits: drop the uncommitted part
                self.catalog.rollback()
                self._txn_rows = None
                self._txn_merged = 0
                self._table_rows = None

    def _fetch(self, window: Window) -> bytes:
        return self.jsoc.rs_list_bytes(self.sel.recordset(window), self.keys)

    def _decode(self, window: Window, body: bytes) -> pa.Table:
        t0 = time.perf_counter()
        keywords, count = rs_list_arrays(body, self.sel.recordset(window))
        check_reply_shape(self.entry.series, keywords, count, body)
        t1 = time.perf_counter()
        rows = rows_to_arrow(keywords, self.columns, self.sdef, window) if keywords and count else self._empty_rows()
        self.summary.timings["decode"] += t1 - t0
        self.summary.timings["convert"] += time.perf_counter() - t1
        self.summary.chunks += 1
        self.progress.chunk_done(self.entry.series, rows.num_rows)
        return rows

    def _write(self, window: Window, rows: pa.Table, advance: bool, last: bool) -> None:
        """(Writer thread.) Apply one reply inside the open transaction; commit when it is big enough."""
        t0 = time.perf_counter()
        series = self.entry.series
        if self._table_rows is None:
            self._table_rows = self.catalog.row_count(series)
        if self._txn_rows is None:
            self.catalog.begin()
            self._txn_rows = 0
        if self.catalog.slot_range_is_empty(series, window):
            self._insert_fresh(window, rows, advance)
        else:
            counts = self.catalog.apply_rows(series, self.columns, rows, window, _utcnow())
            self.summary.add(counts)
            self._table_rows += counts.get("new", 0)
            self._txn_rows += rows.num_rows
            self._txn_merged += rows.num_rows
        del rows
        if self._txn_rows is not None and (last or self._txn_merged >= self.commit_rows):
            self._commit(window.hi if advance else None)
        self.summary.timings["write"] += time.perf_counter() - t0

    def _insert_fresh(self, window: Window, rows: pa.Table, advance: bool) -> None:
        """(Writer thread.) Insert a reply for an empty slot range, committing at row-group boundaries.

        A commit that leaves the table on a boundary lets DuckDB write each row group once,
        compressed, with no WAL copy (about 40% less write CPU than committing every three
        replies). When a reply crosses a boundary, its first rows commit there with the
        watermark at the smallest slot among the rest: every row of a lower slot is committed.
        """
        span = self.fresh_commit_rows
        while True:
            room = span - self._table_rows % span
            piece = rows if rows.num_rows < room else rows.slice(0, room)
            if self._txn_rows is None:
                self.catalog.begin()
                self._txn_rows = 0
            inserted = self.catalog.insert_new_rows(self.entry.series, self.columns, piece, _utcnow())
            self.summary.new += inserted
            self._table_rows += inserted
            self._txn_rows += inserted
            if rows.num_rows < room:
                return
            rows = rows.slice(room)
            watermark = None
            if advance:
                below = pc.min(rows[window.slot_column]).as_py() if rows.num_rows else window.hi
                watermark = window.lo if below is None else below
            self._commit(watermark)
            if not rows.num_rows:
                return

    def _commit(self, watermark: int | None) -> None:
        """(Writer thread.) Commit the open transaction, with the watermark advanced to ``watermark``."""
        if watermark is not None:
            self.catalog.advance_watermark(self.entry.series, {
                "watermark_index": watermark, "run_id": self.run_id,
                "watermark_time": _slot_time_utc(self.sdef, self.sel.time_key, watermark - 1)})
        self.catalog.commit()
        log.debug("%s: committed slots ..%s, %d records", self.entry.series, watermark, self._txn_rows)
        self._txn_rows = None
        self._txn_merged = 0
        # Arrow's allocator keeps freed chunks for reuse; hand them back so memory stays flat.
        pa.default_memory_pool().release_unused()

    def _apply(self, window: Window, body: bytes, advance: bool) -> None:
        """Decode and commit one reply on its own (series without a slotted time key)."""
        rows = self._decode(window, body)
        counts = self.catalog.apply_chunk(self.entry.series, self.columns, rows, window, _utcnow())
        self.summary.add(counts)

    def _apply_window_empty(self, window: Window) -> None:
        counts = self.catalog.apply_chunk(self.entry.series, self.columns, self._empty_rows(), window, _utcnow())
        self.summary.add(counts)

    def _empty_rows(self) -> pa.Table:
        names = [c.name for c in self.columns if c.kind != "record"] + ["_recnum", "_sunum", "_online", "_size"]
        types = {c.name: _ARROW_TYPES[c.sql_type] for c in self.columns}
        return pa.table({n: pa.array([], type=types[n]) for n in names})

    def _sync_window(self, window: Window, *, advance: bool) -> None:
        """A series without a slotted time key: the whole selection in one request."""
        self.progress.series_started(self.entry.series, None)
        body = self.jsoc.rs_list_bytes(self.sel.recordset(window), self.keys)
        self._apply(window, body, advance)

    # -- deep phase ----------------------------------------------------------------------------
    def _deep_check(self, lo: int, hi: int, stored: dict[str, Any], probe: dict[str, Any]) -> None:
        """Bring slots [lo, hi) up to date when the probe moved, asking JSOC as little as possible.

        Every new or reprocessed record got a RECNUM above the stored MaxRecnum, so one small
        ``rs_list`` of ``[:#old+1-#new]`` over the window (time key and RECNUM only) names the
        slots to re-fetch. Deletions leave no RECNUM behind, so an ``rs_summary`` count of the
        window is compared with the catalog's; only if they differ (or with ``full``) are all
        RECNUMs of the window compared.
        """
        window = self.sel.window.part(lo, hi)
        old, new = stored.get("MaxRecnum"), probe.get("MaxRecnum")
        if not self.full and old is not None and new is not None:
            if int(new) > int(old):
                ds = self.sel.recordset(window, recnums=(int(old) + 1, int(new)))
                body = self.jsoc.rs_list_bytes(ds, [self.sel.time_key, "*recnum*"])
                slots, _, _ = self._scan_reply(body, ds, window)
                for a, b in _group_slots(slots.tolist(), self.sel.window.every, max_width=max(1, self.target)):
                    self._sync_range(a, b, advance=False)
            try:
                upstream = self.jsoc.rs_count(self.sel.recordset(window))
            except JsocError as exc:
                log.info("rs_summary unavailable (%s); comparing every RECNUM instead", exc)
                upstream = None
            if upstream is not None and upstream == self.catalog.count_window(self.entry.series, window):
                return
        self._deep_scan(lo, hi)

    def _scan_reply(self, body: bytes, ds: str, window: Window) -> tuple[np.ndarray, pa.Array, int]:
        """(slots, RECNUMs, count) of a reply listing the time key and ``*recnum*``, checked like
        any reply: a time that is not one, a RECNUM that is not an integer or a slot outside
        ``window`` refuses it (it would send the sync re-fetching slots it was never asked for)."""
        series = self.entry.series
        cols, count = rs_list_arrays(body, ds)
        check_reply_shape(series, cols, count, body)
        if not cols or not count:
            return np.zeros(0, dtype=np.int64), pa.array([], pa.int64()), count
        lowered = {name.lower(): v for name, v in cols.items()}
        key = self.sel.time_key
        values, recnums = lowered.get(key.lower()), lowered.get("*recnum*")
        if values is None or recnums is None:
            raise refused(series, f"keyword {key if values is None else '*recnum*'} is missing "
                                  "(accepted: a reply listing every keyword asked for)")
        tai, _ = parse_times(values)
        bad = _time_bad(values, tai, missing_ok=False)
        if bad is not None:
            raise refused(series, f"prime key {key} value {quoted(_value_at(values, bad))} is not a time "
                                  f"(accepted: {_TIME_ACCEPTS})")
        slotting = self.sdef.slotting(key)
        rounding = slotting.step if slotting.kind == "ts_eq" else slotting.round
        slots = np.floor((tai - slotting.epoch + rounding / 2.0) / slotting.step + 1e-9).astype(np.int64)
        outside = _first((slots < window.lo) | (slots >= window.hi))
        if outside is not None:
            raise refused(series, f"prime key {key} value {quoted(_value_at(values, outside))} lies outside the "
                                  "record set asked for (accepted: records of the requested slots)")
        recnum_values, bad = _int_checked(recnums, 64)
        if bad is None:
            bad = _first(pc.is_null(recnum_values))
        if bad is not None:
            raise refused(series, f"*recnum* value {quoted(_value_at(recnums, bad))} "
                                  f"(accepted: {_int_accepts(64, False)})")
        return slots, recnum_values, count

    def _deep_scan(self, lo: int, hi: int) -> None:
        """Compare RECNUMs over slots [lo, hi) with the catalog; re-fetch only differing slots."""
        self.summary.recnums_compared = True
        key = self.sel.time_key
        changed: list[int] = []
        chunker = self._chunks(lo, hi, self.target * 8)
        try:
            window, _ = next(chunker)
            while True:
                ds = self.sel.recordset(window)
                body = self.jsoc.rs_list_bytes(ds, [key, "*recnum*"])
                slots, recnums, count = self._scan_reply(body, ds, window)
                upstream = pa.table({"slot": pa.array(slots, pa.int64()), "_recnum": recnums})
                changed += self.catalog.window_recnum_changes(self.entry.series, upstream, window)
                del body, upstream
                try:
                    window, _ = chunker.send(count)
                except StopIteration:
                    break
        finally:
            chunker.close()
        for a, b in _group_slots(changed, self.sel.window.every, max_width=max(1, self.target)):
            self._sync_range(a, b, advance=False)


def _group_slots(slots: list[int], every: int, max_width: int) -> list[tuple[int, int]]:
    """Runs ``[a, b)`` covering the given slots; neighbours closer than _GAP_SLOTS samples merge."""
    runs: list[tuple[int, int]] = []
    for s in sorted(set(slots)):
        if runs and s - runs[-1][1] < _GAP_SLOTS * every and s + 1 - runs[-1][0] <= max_width * every:
            runs[-1] = (runs[-1][0], s + 1)
        else:
            runs.append((s, s + 1))
    return runs


def _reply_count(body: bytes) -> int | None:
    match = _COUNT_RE.search(body, max(0, len(body) - 400))
    return int(match.group(1)) if match else None


def _slot_time_utc(sdef: SeriesDef, key: str, slot: int) -> datetime:
    t = sdef.slotting(key).value(slot)
    return drmstime.to_datetime_utc(t).replace(tzinfo=None)


def _warm_arrow_scan() -> None:
    try:
        import pandas  # noqa: F401
    except ImportError:
        pass


def _utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


# -- public entry point -------------------------------------------------------------------------------
def sync(config: MirrorConfig, catalog: Catalog, jsoc: JsocClient, series: list[str] | None = None,
         *, progress: Progress | None = None, command: str = "sync", full: bool = False,
         publish: bool = True) -> SyncResult:
    """Sync the configured series (all, or those named) into the catalog; records a ``runs`` row.

    ``full`` ignores the probe and compares every RECNUM of the window with JSOC: the way to
    catch deletions deep in the past, which leave series_struct's Interval unchanged.

    The caller holds the mirror lock (``lock.mirror_lock``). Raises ConfigError for a series
    that is not configured, JsocError when JSOC fails; chunks committed before a failure stay.
    Readers see each committed chunk within seconds, and the end of the run (``publish.publishing``);
    ``publish=False`` leaves publishing to the caller (``publish.publish`` once after many syncs).
    """
    # before publishing, which would hand a refused entry to the readers
    check_entries(catalog, [config.get_series(name) for name in series] if series else list(config.series))
    if not publish:
        return _sync_series(config, catalog, jsoc, series, progress=progress, command=command, full=full)
    with publishing(catalog, config):
        return _sync_series(config, catalog, jsoc, series, progress=progress, command=command, full=full)


def check_entries(catalog: Catalog, entries: list[SeriesConfig]) -> None:
    """Each entry against the definition the mirror knows already (stored by an earlier sync, or
    built in), before a run starts: a hand-edited prime key or keyword the series lacks is a
    ConfigError naming it, with nothing written. A series known to neither is checked when its
    definition arrives (``_SeriesSync._run``)."""
    from jsocmirror.diff import series_definitions

    registry = series_definitions(catalog)
    for entry in entries:
        sdef = registry.get(entry.series)
        if sdef is not None:
            validate_series_entry(entry, sdef)


def _sync_series(config: MirrorConfig, catalog: Catalog, jsoc: JsocClient, series: list[str] | None,
                 *, progress: Progress | None, command: str, full: bool) -> SyncResult:
    entries = [config.get_series(name) for name in series] if series else list(config.series)
    if not entries:
        from jsocmirror.errors import ConfigError

        raise ConfigError(f"no series configured in {config.config_path}; add one with 'jsocmirror series add'")
    check_entries(catalog, entries)
    run_id = uuid.uuid4().hex[:12]
    result = SyncResult(run_id=run_id)
    # DuckDB imports pandas the first time it scans an Arrow table (~0.5-1 s); do that while
    # the first JSOC replies are on their way rather than after.
    threading.Thread(target=_warm_arrow_scan, name="jsocmirror-warmup", daemon=True).start()
    progress = progress or Progress()
    started, req0, bytes0 = time.monotonic(), jsoc.requests, jsoc.bytes_received
    catalog.start_run(run_id, command)
    log.info("%s run %s: %s", command, run_id, ", ".join(e.series for e in entries))
    status = "failed"
    try:
        with catalog.bulk_load():
            for entry in entries:
                result.series.append(_SeriesSync(catalog, jsoc, entry, config, run_id, progress, full).run())
        status = "ok"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        result.requests = jsoc.requests - req0
        result.bytes_received = jsoc.bytes_received - bytes0
        result.seconds = time.monotonic() - started
        summary = {"series": [s.as_dict() for s in result.series], "requests": result.requests,
                   "seconds": round(result.seconds, 3)}
        try:
            catalog.finish_run(run_id, status, orjson.dumps(summary).decode())
        except Exception:  # the run row is bookkeeping: never mask the real error
            log.warning("could not record the end of run %s", run_id)
    return result


__all__ = ["sync", "SyncResult", "SeriesSummary", "Progress", "Window", "resolve_selection", "rows_to_arrow",
           "check_reply_shape", "refused",
           "parse_times", "tai_to_utc_timestamps", "struct_definition"]

