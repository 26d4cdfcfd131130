"""DRMS record-set strings: building them (the mirror) and parsing them (the emulator).

Shared by the mirror's planner/sync (which build record-set strings for JSOC) and the
emulator (which parses what clients send). The grammar is DATA_MODEL.md section 2 and
PROTOCOL.md section 4; docs/series.md has the user-facing summary.

Parsing gives one :class:`Spec` per comma-joined top-level part. A spec's filters are ANDed
in order; the items inside one prime-key filter are ORed. On a slotted key every value is
turned into slot indices here, so the caller only compares integers.

AIA's slotted series keep JSOC's own ``T_REC_epoch`` (1993.01.01_00:00:04_TAI) but their
records lie 4 s earlier, on TAI seconds = 0 (mod 12): the definition's
``emulator.trec_offset`` (-4) says so. Slot indices always use the real slotting, so a query
time slots as JSOC slots it; :func:`format_slot` prints the observed grid time
(``slot value + trec_offset``), and because the offset is smaller than half a step that
printed time slots back to the same index, through :func:`slot_of_value` or the parser alike.
"""

from __future__ import annotations

import difflib
import math
import operator
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from jsocmirror import drmstime
from jsocmirror.errors import RecordSetError
from jsocmirror.series import Keyword, SeriesDef, Slotting


def record_key(values: Sequence[str]) -> str:
    """The canonical key of one record: its prime-key values as JSOC prints them, bracketed.

    ``["2012.01.01_00:00:45_TAI", "2"]`` -> ``[2012.01.01_00:00:45_TAI][2]``. With the series
    name in front it is the record string JSOC itself prints (``hmi.M_45s[...][2]``).
    """
    return "".join(f"[{v}]" for v in values)


_RECORD_KEY_VALUE = re.compile(r"\[([^\[\]]*)\]")


def split_record_key(record_key: str) -> list[str]:
    """``[2012.01.01_00:00:45_TAI][2]`` -> ``["2012.01.01_00:00:45_TAI", "2"]`` (the inverse of record_key)."""
    values = _RECORD_KEY_VALUE.findall(record_key)
    if not values or "".join(f"[{v}]" for v in values) != record_key:
        raise RecordSetError(f"not a record key: {record_key!r} (expected bracketed prime-key values like [v1][v2])")
    return values


def record_spec(series: str, values: Sequence[str], segments: Iterable[str] | None = None) -> str:
    """``series[v1][v2]{seg,...}``: one record as a record-set string."""
    spec = series + record_key(values)
    segs = list(segments or ())
    return spec + ("{" + ",".join(segs) + "}" if segs else "")


# ----------------------------------------------------------------------------------------
# The AST
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    """One value: a slot index on a slotted key, else a typed value (int, float, str, time)."""

    value: Any


@dataclass(frozen=True)
class Range:
    """``lo-hi``, inclusive. Slot indices (and ``every`` in slots) on a slotted key; typed values
    (and ``every`` in value units) otherwise. ``every`` keeps ``lo, lo+every, ...`` only."""

    lo: Any
    hi: Any
    every: float | int | None = None


@dataclass(frozen=True)
class HalfOpen:
    """``a/dur`` on an unslotted key: ``lo <= v < hi`` (``every`` as in :class:`Range`)."""

    lo: Any
    hi: Any
    every: float | int | None = None


@dataclass(frozen=True)
class First:
    """``^``: the record(s) with the smallest value of the key."""


@dataclass(frozen=True)
class Last:
    """``$``: the record(s) with the largest value of the key."""


@dataclass(frozen=True)
class IndexSel:
    """``#n`` / ``#a-#b``: by index; on a slotted key the index is the slot index."""

    lo: int
    hi: int


Item = Point | Range | HalfOpen | First | Last | IndexSel


@dataclass(frozen=True)
class KeyFilter:
    """A filter on one prime key; the record matches if any item matches."""

    key: str
    items: tuple[Item, ...]


@dataclass(frozen=True)
class RecnumFilter:
    """``[:#n]``, ``[:#a-#b]``, ``[:#a/n]``: record numbers in any of the inclusive ranges."""

    ranges: tuple[tuple[int, int], ...]

    def matches(self, recnum: int) -> bool:
        return any(lo <= recnum <= hi for lo, hi in self.ranges)


@dataclass(frozen=True)
class WhereFilter:
    """``[? expr ?]`` (latest version per prime-key tuple) or ``[! expr !]`` (all versions)."""

    expr: Expr
    all_versions: bool
    text: str = field(default="", compare=False)


Filter = KeyFilter | RecnumFilter | WhereFilter


@dataclass(frozen=True)
class Spec:
    """One record-set spec: a series, its filters (ANDed, in order) and its ``{...}`` segments."""

    series: SeriesDef
    filters: tuple[Filter, ...] = ()
    segments: tuple[str, ...] | None = None

    @property
    def all_versions(self) -> bool:
        return any(isinstance(f, WhereFilter) and f.all_versions for f in self.filters)

    def __repr__(self) -> str:  # the whole SeriesDef would drown the filters
        return f"Spec(series={self.series.name!r}, filters={self.filters!r}, segments={self.segments!r})"


# ----------------------------------------------------------------------------------------
# Top-level structure: comma-joined specs, brackets, braces
# ----------------------------------------------------------------------------------------

def _clip(text: str, limit: int = 160) -> str:
    """The record set as quoted in an error: stripped, and cut short if it is huge."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


_SERIES_RE = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*\.[A-Za-z0-9_]+)")
_ACCEPTED = "a record set like hmi.M_45s[2014.01.01_TAI/1h][2]{magnetogram}"


def parse_recordset(text: str, lookup: Callable[[str], SeriesDef | None]) -> list[Spec]:
    """Parse a record-set string into one :class:`Spec` per comma-joined top-level part.

    ``lookup`` maps a series name as written (any case) to its definition, or None.
    Raises :class:`RecordSetError` with a one-line message naming the bad part.
    """
    if not isinstance(text, str) or not text.strip():
        raise RecordSetError(f"empty record set (expected {_ACCEPTED})")
    if text.lstrip().startswith("@"):
        raise RecordSetError(f"record-set files ({_clip(text)!r}) are not supported; send the record set itself")
    with _one_line_errors():
        return [_parse_spec(part, lookup) for part in _split_top_level(text)]


@contextmanager
def _one_line_errors():
    """Whatever user text an error quotes, the message stays on one line."""
    try:
        yield
    except RecordSetError as exc:
        message = str(exc)
        if "\n" in message or "\r" in message:
            raise RecordSetError(" ".join(message.split())) from None
        raise


def _quote_end(text: str, i: int) -> int:
    """Index just past the quoted string starting at text[i] (SQL doubling escapes a quote)."""
    q = text[i]
    j = i + 1
    while True:
        j = text.find(q, j)
        if j < 0:
            raise RecordSetError(f"unterminated {q} quote in {_clip(text)!r}")
        if j + 1 < len(text) and text[j + 1] == q:
            j += 2
            continue
        return j + 1


def _where_end(text: str, i: int) -> int:
    """Index of the ``?]``/``!]`` closing the where filter opened at text[i] == '['."""
    mark = text[i + 1]
    j = i + 2
    while j < len(text):
        ch = text[j]
        if ch in "'\"":
            j = _quote_end(text, j)
            continue
        if ch == mark and text.startswith("]", j + 1):
            return j
        j += 1
    raise RecordSetError(f"unbalanced '[{mark}' in {_clip(text)!r}: missing '{mark}]'")


def _split_top_level(text: str) -> list[str]:
    parts, start, i = [], 0, 0
    closer = {"[": "]", "{": "}"}
    stack: list[str] = []
    while i < len(text):
        ch = text[i]
        if ch == "[" and i + 1 < len(text) and text[i + 1] in "?!":
            i = _where_end(text, i) + 2
            continue
        if ch in "[{":
            stack.append(closer[ch])
        elif ch in "]}":
            if not stack or stack[-1] != ch:
                raise RecordSetError(f"unbalanced {ch!r} at position {i} in {_clip(text)!r}")
            stack.pop()
        elif ch == "," and not stack:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    if stack:
        raise RecordSetError(f"unbalanced brackets in {_clip(text)!r}: missing {stack[-1]!r}")
    parts.append(text[start:])
    for part in parts:
        if not part.strip():
            raise RecordSetError(f"empty record set between commas in {_clip(text)!r} (expected {_ACCEPTED})")
    return parts


def _parse_spec(text: str, lookup: Callable[[str], SeriesDef | None]) -> Spec:
    match = _SERIES_RE.match(text)
    if match is None:
        raise RecordSetError(f"no series name at the start of {_clip(text)!r} (expected {_ACCEPTED})")
    name = match.group(1)
    series = lookup(name)
    if series is None:
        raise RecordSetError(f"Invalid series name: {name!r} is not a known series")
    filters: list[Filter] = []
    segments: tuple[str, ...] | None = None
    position = 0
    i = match.end()
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        if segments is not None:
            raise RecordSetError(f"unexpected {text[i:].strip()!r} after the segment list in {_clip(text)!r}")
        if ch == "[":
            if i + 1 < len(text) and text[i + 1] in "?!":
                end = _where_end(text, i)
                body = text[i + 2:end]
                expr = parse_where(body, series)
                filters.append(WhereFilter(expr, all_versions=text[i + 1] == "!", text=body.strip()))
                i = end + 2
                continue
            end = text.find("]", i + 1)
            if end < 0:
                raise RecordSetError(f"unbalanced '[' in {_clip(text)!r}: missing ']'")
            body = text[i + 1:end]
            if "[" in body:
                raise RecordSetError(f"unbalanced '[' in {_clip(text)!r}: '[' inside a filter")
            position = _parse_bracket(body, series, filters, position, text)
            i = end + 1
        elif ch == "{":
            end = text.find("}", i + 1)
            if end < 0:
                raise RecordSetError(f"unbalanced '{{' in {_clip(text)!r}: missing '}}'")
            segments = _parse_segments(text[i + 1:end], series)
            i = end + 1
        else:
            raise RecordSetError(
                f"unexpected {text[i:].strip()!r} after {name} in {_clip(text)!r} (expected [filter] or {{segments}})"
            )
    return Spec(series=series, filters=tuple(filters), segments=segments)


def _parse_segments(body: str, series: SeriesDef) -> tuple[str, ...]:
    names = [n.strip() for n in body.split(",")]
    if names == [""]:
        return ()
    if len(names) == 1 and names[0] == "**ALL**":
        return tuple(s.name for s in series.segments)
    out = []
    for n in names:
        seg = series.segment(n) if n else None
        if seg is None:
            known = ", ".join(s.name for s in series.segments) or "none"
            raise RecordSetError(f"unknown segment {n!r} of {series.name} (segments: {known})")
        out.append(seg.name)
    return tuple(out)


def _parse_bracket(body: str, series: SeriesDef, filters: list, position: int, text: str) -> int:
    """Parse one ``[...]`` prime-key or recnum filter; returns the next positional index."""
    stripped = body.strip()
    if stripped.startswith(":"):
        filters.append(_parse_recnums(stripped[1:], text))
        return position
    named = re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=(?!=)", body)
    if named:
        kw = series.keyword(named.group(1))
        if kw is None or kw.name.lower() not in {k.lower() for k in series.primekeys}:
            raise RecordSetError(
                f"{named.group(1)!r} in [{_clip(body)}] is not a prime key of {series.name} "
                f"(prime keys: {', '.join(series.primekeys)})"
            )
        key = kw.name
        value_text = body[named.end():]
        if not value_text.strip():
            raise RecordSetError(f"[{_clip(body)}] names {key} but gives no value")
    else:
        # as DRMS (drms_names.c): only positional brackets and [] advance the position;
        # a [KEY=...] bracket does not, so [CAMERA=2][t] binds t to T_REC
        if position >= len(series.primekeys):
            raise RecordSetError(
                f"too many [] filters in {_clip(text)!r}: {series.name} has {len(series.primekeys)} prime keys "
                f"({', '.join(series.primekeys)})"
            )
        key = series.keyword(series.primekeys[position]).name
        position += 1
        value_text = body
    if value_text.strip():
        filters.append(KeyFilter(key, _parse_items(value_text, series, key)))
    return position


_RECNUM_ITEM = re.compile(r"^\s*#(\d+)\s*(?:-\s*#?(\d+)|/\s*(\d+))?\s*$")


def _parse_recnums(body: str, text: str) -> RecnumFilter:
    ranges = []
    for item in body.split(","):
        m = _RECNUM_ITEM.match(item)
        if m is None:
            raise RecordSetError(
                f"bad record-number filter [:{_clip(body)}] in {_clip(text)!r} (accepted: [:#n], [:#a-#b], [:#a/n])"
            )
        lo = int(m.group(1))
        if m.group(2) is not None:
            hi = int(m.group(2))
        elif m.group(3) is not None:
            hi = lo + int(m.group(3)) - 1
        else:
            hi = lo
        ranges.append((lo, hi))
    return RecnumFilter(tuple(ranges))


# ----------------------------------------------------------------------------------------
# Values inside a prime-key filter
# ----------------------------------------------------------------------------------------

# A time, as drmstime.parse_time reads it, without anchors so two can sit in one range.
# A ±hhmm zone is limited to real offsets so `2014-01-01-2014-01-02` splits as a range.
TIME_PATTERN = (
    r"(?:M?JD_\d+(?:\.\d*)?(?:_?(?:TAI|UTC|UT|Z))?"
    r"|\d{1,4}[.\-/]\d{1,2}[.\-/]\d{1,2}"
    r"(?:[_T ]\d{1,2}:\d{1,2}(?::\d{1,2}(?:\.\d*)?)?)?"
    r"(?:[_ ]?(?:TAI|UTC|UT|TDT|TT|Z)|[_ ]?[+-](?:0\d|1[0-4])[0-5]\d)?)"
)
_DUR = r"(?:\d+(?:\.\d*)?|\.\d+)\s*[smhdu]?"
_NUM = r"[+-]?(?:0[xX][0-9a-fA-F]+|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)"
_TIME_ITEM = re.compile(
    rf"^\s*(?P<a>{TIME_PATTERN})\s*(?:-\s*(?P<b>{TIME_PATTERN})|/\s*(?P<dur>{_DUR}))?\s*(?:@\s*(?P<every>{_DUR}))?\s*$",
    re.I,
)
_NUM_ITEM = re.compile(
    rf"^\s*(?P<a>{_NUM})\s*(?:-\s*(?P<b>{_NUM})|/\s*(?P<dur>{_NUM}))?\s*(?:@\s*(?P<every>{_NUM}))?\s*$"
)
_INDEX_ITEM = re.compile(r"^\s*#\s*(-?\d+)\s*(?:-\s*#\s*(-?\d+))?\s*$")
_TIME_HELP = "expected e.g. 2014.01.01_00:00:00_TAI, 2014-01-01T00:00:00Z, 2014.01.01_TAI/1d or a-b@12m"


def _parse_items(value_text: str, series: SeriesDef, key: str) -> tuple[Item, ...]:
    kw = series.keyword(key)
    slot = series.slotting(key)
    items: list[Item] = []
    for raw in value_text.split(","):
        item = raw.strip()
        if not item:
            raise RecordSetError(f"empty value in [{_clip(value_text)}] for {key}")
        if item in ("^", "#^"):  # DRMS accepts the index forms #^ / #$ too
            items.append(First())
        elif item in ("$", "#$"):
            items.append(Last())
        elif item.startswith("#"):
            m = _INDEX_ITEM.match(item)
            if m is None:
                raise RecordSetError(f"bad index selection {item!r} for {key} (accepted: #n or #a-#b)")
            lo = int(m.group(1))
            items.append(IndexSel(lo, int(m.group(2)) if m.group(2) is not None else lo))
        elif kw.is_time:
            items.append(_time_item(item, kw, slot))
        elif kw.is_numeric:
            items.append(_number_item(item, kw, slot))
        else:
            items.append(Point(_unquote(item)))
    return tuple(items)


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def _time(text: str, key: str) -> float:
    try:
        return drmstime.parse_time(text)
    except ValueError:
        raise RecordSetError(f"bad time {_clip(text)!r} for {key} ({_TIME_HELP})") from None


def _duration(text: str, key: str, step: float | None) -> float:
    try:
        seconds = drmstime.parse_duration(text, step)
    except ValueError as exc:
        raise RecordSetError(f"bad duration {_clip(text)!r} for {key}: {exc}") from None
    if seconds <= 0:
        raise RecordSetError(f"bad duration {_clip(text)!r} for {key}: it must be positive")
    return seconds


def _duration_slots(duration: float, slot: Slotting) -> int:
    """How many slots ``a/duration`` covers (drms_keyword_slotval2indexval).

    ts_eq: ``max(1, int(dur/step))``. ts_slot truncates to whole rounding intervals first and
    slots that: ``floor((int(dur/R)·R + R/2) / step)``, at least one interval's worth.
    """
    unit = slot.round if slot.kind == "ts_slot" and slot.round > 0 else slot.step
    whole = max(1, int(duration / unit + 1e-9))
    return max(1, math.floor((whole * unit + unit / 2.0) / slot.step + 1e-9))


def _every_slots(seconds: float, slot: Slotting) -> int:
    return max(1, round(seconds / slot.step))


def _time_item(item: str, kw: Keyword, slot: Slotting | None) -> Item:
    m = _TIME_ITEM.match(item)
    if m is None:
        raise RecordSetError(f"bad time {item!r} for {kw.name} ({_TIME_HELP})")
    step = slot.step if slot else None
    a = _time(m["a"], kw.name)
    every = _duration(m["every"], kw.name, step) if m["every"] else None
    if slot is not None:
        lo = slot.index(a)
        n_every = _every_slots(every, slot) if every else None
        if m["b"]:
            return Range(lo, slot.index(_time(m["b"], kw.name)), n_every)
        if m["dur"]:
            count = _duration_slots(_duration(m["dur"], kw.name, step), slot)
            return Range(lo, lo + count - 1, n_every)
        if n_every is not None:
            raise RecordSetError(f"@{m['every']} in {item!r} needs a range (a-b@step or a/dur@step)")
        return Point(lo)
    if m["b"]:
        return Range(a, _time(m["b"], kw.name), every)
    if m["dur"]:
        return HalfOpen(a, a + _duration(m["dur"], kw.name, None), every)
    return Point(a)


def _number(text: str, kw: Keyword) -> int | float:
    try:
        if text.lstrip("+-").lower().startswith("0x"):
            return _hex_value(text, kw)
        value = float(text)
    except ValueError:
        raise RecordSetError(f"bad value {_clip(text)!r} for {kw.type} keyword {kw.name} (expected a number)") from None
    return int(value) if kw.is_int and value.is_integer() else value


_INT_BITS = {"char": 8, "short": 16, "int": 32, "longlong": 64}


def _hex_value(text: str, kw: Keyword) -> int:
    """A hex literal as JSOC prints int keywords: ``0x80000000`` is the int32 bit pattern (negative)."""
    sign = -1 if text.strip().startswith("-") else 1
    value = int(text.strip().lstrip("+-"), 16)
    bits = _INT_BITS.get(kw.type)
    if bits and sign > 0 and (1 << (bits - 1)) <= value < (1 << bits):
        value -= 1 << bits
    return sign * value


def _number_item(item: str, kw: Keyword, slot: Slotting | None) -> Item:
    m = _NUM_ITEM.match(item)
    if m is None:
        raise RecordSetError(
            f"bad value {item!r} for {kw.type} keyword {kw.name} (accepted: v, a-b, a/n, each with optional @step)"
        )
    a = _number(m["a"], kw)
    every = _number(m["every"], kw) if m["every"] else None
    if every is not None and every <= 0:
        raise RecordSetError(f"bad step @{m['every']} in {item!r}: it must be positive")
    if slot is not None:
        lo = slot.index(a)
        n_every = max(1, round(every / slot.step)) if every else None
        if m["b"]:
            return Range(lo, slot.index(_number(m["b"], kw)), n_every)
        if m["dur"]:
            count = _duration_slots(float(_number(m["dur"], kw)), slot)
            return Range(lo, lo + count - 1, n_every)
        return Point(lo)
    if m["b"]:
        return Range(a, _number(m["b"], kw), every)
    if m["dur"]:
        return HalfOpen(a, a + _number(m["dur"], kw), every)
    if every is not None:
        raise RecordSetError(f"@{m['every']} in {item!r} needs a range (a-b@step or a/n@step)")
    return Point(a)


def slot_range(item: Item) -> range:
    """The slot indices a slotted-key item selects (``First``/``Last`` need the series: TypeError)."""
    if isinstance(item, Point):
        return range(item.value, item.value + 1)
    if isinstance(item, Range):
        return range(item.lo, item.hi + 1, int(item.every or 1))
    if isinstance(item, IndexSel):
        return range(item.lo, item.hi + 1)
    raise TypeError(f"{item!r} does not name slots by itself")


def item_matches(item: Item, value: Any) -> bool:
    """Whether a key value (a slot index on a slotted key) matches a value-type item.

    ``First``, ``Last`` and ``IndexSel`` on unslotted keys depend on the whole series, so the
    caller resolves them; here they raise TypeError.
    """
    if isinstance(item, Point):
        return value == item.value
    if isinstance(item, (Range, HalfOpen)):
        inside = item.lo <= value <= item.hi if isinstance(item, Range) else item.lo <= value < item.hi
        if not inside:
            return False
        if item.every:
            steps = (value - item.lo) / item.every
            return abs(steps - round(steps)) < 1e-9
        return True
    if isinstance(item, IndexSel):
        return item.lo <= value <= item.hi
    raise TypeError(f"{item!r} needs the series' first/last value")


# ----------------------------------------------------------------------------------------
# Formatting: what the mirror sends to JSOC
# ----------------------------------------------------------------------------------------


def grid_offset(series: SeriesDef, key: str) -> float:
    """Seconds between a slot's DRMS value and the time records on it carry (AIA: -4).

    Only offsets under half a step are honoured (the slot must still contain its records);
    a larger ``trec_offset`` is a definition error and raises RecordSetError.
    """
    kw = series.keyword(key)
    if kw is None or kw.name != "T_REC":
        return 0.0
    offset = float(series.emulator.get("trec_offset", 0.0))
    slot = series.slotting(key)
    if slot is not None and offset:
        rounding = slot.step if slot.kind == "ts_eq" else slot.round
        if not (-rounding / 2.0 <= offset < slot.step - rounding / 2.0):
            raise RecordSetError(
                f"{series.name}: emulator.trec_offset {offset:g} s puts records outside their "
                f"{slot.step:g} s slot (accepted: -{rounding / 2:g} <= offset < {slot.step - rounding / 2:g})"
            )
    return offset


def _slotting_or_error(series: SeriesDef, key: str) -> tuple[Keyword, Slotting]:
    kw = series.keyword(key)
    slot = series.slotting(key)
    if kw is None or slot is None:
        slotted = ", ".join(series.slottings) or "none"
        raise RecordSetError(f"{key!r} is not a slotted prime key of {series.name} (slotted: {slotted})")
    return kw, slot


def _format_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def format_slot(series: SeriesDef, key: str, index: int) -> str:
    """The print form of slot ``index`` of a slotted key, as JSOC prints it in rs_list."""
    kw, slot = _slotting_or_error(series, key)
    value = slot.value(index) + grid_offset(series, key)
    return drmstime.format_time(value, kw.zone) if kw.is_time else _format_number(value)


def slot_of_value(series: SeriesDef, key: str, value: str | float) -> int:
    """The slot a value (a printed value, or an internal time) falls in, as JSOC slots a query.

    It is the inverse of :func:`format_slot`: a printed T_REC lies ``trec_offset`` from its
    slot's DRMS value, and that offset is under half a step, so it slots back to its own slot.
    Any other time slots exactly as it would inside a ``[...]`` filter.
    """
    kw, slot = _slotting_or_error(series, key)
    if isinstance(value, str):
        number = _time(value, kw.name) if kw.is_time else _number(value, kw)
    else:
        number = float(value)
    return slot.index(number)


def format_range(series: SeriesDef, key: str, lo_index: int, hi_index: int, every: int | None = None) -> str:
    """``a-b`` (``a-b@Ns`` with ``every`` slots) covering slots lo..hi inclusive, for a filter."""
    kw, slot = _slotting_or_error(series, key)
    if hi_index < lo_index:
        raise RecordSetError(f"empty slot range {lo_index}-{hi_index} for {key}")
    text = format_slot(series, key, lo_index)
    if hi_index != lo_index:
        text += "-" + format_slot(series, key, hi_index)
    if every and every > 1 and hi_index != lo_index:
        text += f"@{_format_number(every * slot.step)}" + ("s" if kw.is_time else "")
    return text


def build_recordset(
    series_name: str, brackets: Sequence[str], segments: Iterable[str] | None = None, where: str | None = None
) -> str:
    """``series[b1][b2][? where ?]{seg,...}``; an empty bracket string gives ``[]`` (any value)."""
    for b in brackets:
        if any(ch in b for ch in "[]{}"):
            raise RecordSetError(f"bracket text {b!r} may not contain [ ] {{ }}")
    text = series_name + "".join(f"[{b}]" for b in brackets)
    if where:
        if "?]" in where:
            raise RecordSetError(f"where clause {where!r} may not contain '?]'")
        text += f"[? {where} ?]"
    segs = list(segments or ())
    if segs:
        text += "{" + ",".join(segs) + "}"
    return text


# ----------------------------------------------------------------------------------------
# [? ... ?]: a safe subset of SQL
# ----------------------------------------------------------------------------------------

_WHERE_HELP = (
    "accepted: keyword comparisons = == != <> < <= > >=, IN (...), BETWEEN a AND b, IS [NOT] NULL, "
    "AND/OR/NOT and parentheses"
)
_SQL_WORDS = frozenset(
    "select from where union drop insert update delete table create alter exec execute like ilike case when "
    "then else end into grant truncate join having group order by limit offset cast pg_sleep sleep".split()
)
_LOGIC_WORDS = frozenset({"and", "or", "not", "in", "between", "is", "null"})

_TOKEN_RE = re.compile(
    r"""(?P<ws>\s+)
    |(?P<str>'(?:[^']|'')*'|"(?:[^"]|"")*")
    |(?P<timefn>\$\((?P<timearg>[^()]*)\))
    |(?P<op>==|!=|<>|<=|>=|=|<|>)
    |(?P<punct>[(),])
    |(?P<bare>[+-]?(?:\d|\.\d)[\w.:+\-]*)
    |(?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    """,
    re.X,
)


@dataclass(frozen=True)
class _Tok:
    kind: str  # str, time, op, punct, bare, ident
    text: str
    value: Any = None


def _tokenize(text: str) -> list[_Tok]:
    tokens, i = [], 0
    while i < len(text):
        if text[i] in "'\"":
            _quote_end(text, i)  # raises on an unterminated quote
        m = _TOKEN_RE.match(text, i)
        if m is None:
            bad = text[i:i + 10]
            raise RecordSetError(f"{bad!r} is not allowed in [? {_clip(text)} ?] ({_WHERE_HELP})")
        i = m.end()
        kind = m.lastgroup
        if kind == "ws":
            continue
        if kind == "ident":
            _reject_sql_word(m.group(0), text[i:].lstrip().startswith("("), text)
        if kind == "timefn":
            tokens.append(_Tok("time", m.group(0), _time(m.group("timearg").strip(), "$(...)")))
        elif kind == "str":
            q = m.group(0)[0]
            tokens.append(_Tok("str", m.group(0), m.group(0)[1:-1].replace(q + q, q)))
        else:
            tokens.append(_Tok(kind, m.group(0)))
    return tokens


def _reject_sql_word(word: str, called: bool, text: str) -> None:
    """Refuse what only an attack or a misunderstanding would send: calls and SQL statements."""
    lower = word.lower()
    if lower in _LOGIC_WORDS:
        return
    if called:
        raise RecordSetError(f"function call {word}(...) is not allowed in [? {_clip(text)} ?] ({_WHERE_HELP})")
    if lower in _SQL_WORDS:
        raise RecordSetError(f"SQL word {word.upper()!r} is not allowed in [? {_clip(text)} ?] ({_WHERE_HELP})")


class Expr:
    """A parsed where-expression: evaluate it per record or over numpy columns."""

    def evaluate(self, lookup_value: Callable[[str], Any]) -> bool:
        """``lookup_value(canonical keyword name)`` gives the record's typed value: int, float,
        str, or internal time (float seconds) for time keywords; None for no value."""
        raise NotImplementedError

    def evaluate_columns(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        """Vectorised :meth:`evaluate`: ``columns`` maps canonical keyword names to equal-length
        arrays (numbers, internal times as float64, strings as str/object arrays)."""
        raise NotImplementedError

    @property
    def keywords(self) -> frozenset[str]:
        """The canonical names of the keywords the expression reads."""
        raise NotImplementedError


@dataclass(frozen=True)
class Operand:
    keyword: Keyword | None = None  # a keyword reference, or
    literal: Any = None  # a typed literal

    def __repr__(self) -> str:
        return f"Operand({self.keyword.name})" if self.keyword is not None else f"Operand({self.literal!r})"

    def scalar(self, get: Callable[[str], Any]) -> Any:
        return get(self.keyword.name) if self.keyword is not None else self.literal

    def column(self, cols: Mapping[str, np.ndarray]) -> Any:
        return _column(cols, self.keyword.name) if self.keyword is not None else self.literal


def _column(cols: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    if name in cols:
        return np.asarray(cols[name])
    for k, v in cols.items():
        if k.lower() == name.lower():
            return np.asarray(v)
    raise KeyError(f"no column for keyword {name}")


_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "=": operator.eq, "==": operator.eq, "!=": operator.ne, "<>": operator.ne,
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}


def _is_null(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _null_mask(arr: np.ndarray) -> np.ndarray:
    if arr.dtype.kind == "f":
        return np.isnan(arr)
    if arr.dtype.kind == "O":
        return np.fromiter((_is_null(v) for v in arr), dtype=bool, count=len(arr))
    return np.zeros(arr.shape, dtype=bool)


@dataclass(frozen=True)
class Compare(Expr):
    left: Operand
    op: str
    right: Operand

    def evaluate(self, lookup_value):
        return self._scalar(self.left.scalar(lookup_value), self.right.scalar(lookup_value))

    def evaluate_columns(self, columns):
        a, b = self.left.column(columns), self.right.column(columns)
        try:
            with np.errstate(invalid="ignore"):
                return np.asarray(_OPS[self.op](a, b), dtype=bool)
        except TypeError:  # object columns holding None: fall back to the scalar rules
            n = len(a) if isinstance(a, np.ndarray) else len(b)
            pick = lambda v, i: v[i] if isinstance(v, np.ndarray) else v  # noqa: E731
            rows = (self._scalar(pick(a, i), pick(b, i)) for i in range(n))
            return np.fromiter(rows, dtype=bool, count=n)

    def _scalar(self, a, b) -> bool:
        if _is_null(a) or _is_null(b):
            return False
        try:
            return bool(_OPS[self.op](a, b))
        except TypeError:
            return False

    @property
    def keywords(self):
        return frozenset(o.keyword.name for o in (self.left, self.right) if o.keyword is not None)


@dataclass(frozen=True)
class InList(Expr):
    operand: Operand
    values: tuple[Any, ...]
    negated: bool = False

    def evaluate(self, lookup_value):
        v = self.operand.scalar(lookup_value)
        if _is_null(v):
            return False
        return (v in self.values) != self.negated

    def evaluate_columns(self, columns):
        col = self.operand.column(columns)
        if col.dtype.kind in "iuf":
            hit = np.isin(col, np.asarray(self.values))
        else:  # strings: equality never raises, even on None
            hit = np.zeros(col.shape, dtype=bool)
            for v in self.values:
                hit |= np.asarray(col == v, dtype=bool)
        return ~hit & ~_null_mask(col) if self.negated else hit

    @property
    def keywords(self):
        return frozenset({self.operand.keyword.name})


@dataclass(frozen=True)
class Between(Expr):
    operand: Operand
    lo: Any
    hi: Any
    negated: bool = False

    def evaluate(self, lookup_value):
        v = self.operand.scalar(lookup_value)
        if _is_null(v):
            return False
        return (self.lo <= v <= self.hi) != self.negated

    def evaluate_columns(self, columns):
        col = self.operand.column(columns)
        try:
            with np.errstate(invalid="ignore"):
                inside = np.asarray((col >= self.lo) & (col <= self.hi), dtype=bool)
        except TypeError:  # object columns holding None
            inside = np.fromiter((not _is_null(v) and self.lo <= v <= self.hi for v in col), dtype=bool, count=len(col))
        return ~inside & ~_null_mask(col) if self.negated else inside

    @property
    def keywords(self):
        return frozenset({self.operand.keyword.name})


@dataclass(frozen=True)
class IsNull(Expr):
    operand: Operand
    negated: bool = False

    def evaluate(self, lookup_value):
        return _is_null(self.operand.scalar(lookup_value)) != self.negated

    def evaluate_columns(self, columns):
        mask = _null_mask(self.operand.column(columns))
        return ~mask if self.negated else mask

    @property
    def keywords(self):
        return frozenset({self.operand.keyword.name})


@dataclass(frozen=True)
class And(Expr):
    parts: tuple[Expr, ...]

    def evaluate(self, lookup_value):
        return all(p.evaluate(lookup_value) for p in self.parts)

    def evaluate_columns(self, columns):
        out = self.parts[0].evaluate_columns(columns)
        for p in self.parts[1:]:
            out = out & p.evaluate_columns(columns)
        return out

    @property
    def keywords(self):
        return frozenset().union(*(p.keywords for p in self.parts))


@dataclass(frozen=True)
class Or(Expr):
    parts: tuple[Expr, ...]

    def evaluate(self, lookup_value):
        return any(p.evaluate(lookup_value) for p in self.parts)

    def evaluate_columns(self, columns):
        out = self.parts[0].evaluate_columns(columns)
        for p in self.parts[1:]:
            out = out | p.evaluate_columns(columns)
        return out

    @property
    def keywords(self):
        return frozenset().union(*(p.keywords for p in self.parts))


@dataclass(frozen=True)
class Not(Expr):
    part: Expr

    def evaluate(self, lookup_value):
        return not self.part.evaluate(lookup_value)

    def evaluate_columns(self, columns):
        return ~self.part.evaluate_columns(columns)

    @property
    def keywords(self):
        return self.part.keywords


def parse_where(text: str, series: SeriesDef) -> Expr:
    """Parse the SQL of a ``[? ... ?]`` filter against ``series``' keywords."""
    with _one_line_errors():
        return _WhereParser(text, series).parse()


class _WhereParser:
    def __init__(self, text: str, series: SeriesDef):
        self.text = text.strip()
        self.series = series
        self.tokens = _tokenize(text)
        self.pos = 0

    # -- token helpers -------------------------------------------------------------------
    def error(self, what: str) -> RecordSetError:
        return RecordSetError(f"{what} in [? {_clip(self.text)} ?] ({_WHERE_HELP})")

    def peek(self, offset: int = 0) -> _Tok | None:
        i = self.pos + offset
        return self.tokens[i] if i < len(self.tokens) else None

    def next(self) -> _Tok:
        tok = self.peek()
        if tok is None:
            raise self.error("unexpected end of expression")
        self.pos += 1
        return tok

    def word(self, tok: _Tok | None, *words: str) -> bool:
        return tok is not None and tok.kind == "ident" and tok.text.lower() in words

    def expect_punct(self, ch: str) -> None:
        if self.peek() is None:
            raise self.error(f"expected {ch!r} but the expression ended")
        tok = self.next()
        if tok.kind != "punct" or tok.text != ch:
            raise self.error(f"expected {ch!r} but found {tok.text!r}")

    # -- grammar -------------------------------------------------------------------------
    def parse(self) -> Expr:
        if not self.tokens:
            raise self.error("empty condition")
        expr = self.parse_or()
        if self.peek() is not None:
            raise self.error(f"unexpected {self.peek().text!r}")
        return expr

    def parse_or(self) -> Expr:
        parts = [self.parse_and()]
        while self.word(self.peek(), "or"):
            self.pos += 1
            parts.append(self.parse_and())
        return parts[0] if len(parts) == 1 else Or(tuple(parts))

    def parse_and(self) -> Expr:
        parts = [self.parse_not()]
        while self.word(self.peek(), "and"):
            self.pos += 1
            parts.append(self.parse_not())
        return parts[0] if len(parts) == 1 else And(tuple(parts))

    def parse_not(self) -> Expr:
        if self.word(self.peek(), "not"):
            self.pos += 1
            return Not(self.parse_not())
        tok = self.peek()
        if tok is not None and tok.kind == "punct" and tok.text == "(":
            self.pos += 1
            expr = self.parse_or()
            self.expect_punct(")")
            return expr
        return self.parse_predicate()

    def parse_predicate(self) -> Expr:
        left_tok = self.next()
        left = self.operand(left_tok, None)
        kw = left.keyword
        tok = self.peek()
        negated = False
        if self.word(tok, "not") and self.word(self.peek(1), "in", "between"):
            negated = True
            self.pos += 1
            tok = self.peek()
        if self.word(tok, "in", "between", "is"):
            if kw is None:
                raise self.error(f"{tok.text.upper()} needs a keyword on its left, not {left_tok.text!r}")
            self.pos += 1
            word = tok.text.lower()
            if word == "is":
                neg = False
                if self.word(self.peek(), "not"):
                    self.pos += 1
                    neg = True
                if not self.word(self.next_peeked(), "null"):
                    raise self.error("expected NULL after IS")
                return IsNull(left, neg)
            if word == "in":
                self.expect_punct("(")
                values = [self.literal_for(self.next(), kw)]
                while True:
                    t = self.next()
                    if t.kind == "punct" and t.text == ")":
                        break
                    if t.kind != "punct" or t.text != ",":
                        raise self.error(f"expected ',' or ')' in IN list but found {t.text!r}")
                    values.append(self.literal_for(self.next(), kw))
                return InList(left, tuple(values), negated)
            lo = self.literal_for(self.next(), kw)
            if not self.word(self.next_peeked(), "and"):
                raise self.error("expected AND in BETWEEN a AND b")
            hi = self.literal_for(self.next(), kw)
            return Between(left, lo, hi, negated)
        op_tok = self.next()
        if op_tok.kind != "op":
            raise self.error(f"expected a comparison operator after {left_tok.text!r} but found {op_tok.text!r}")
        right_tok = self.next()
        right = self.operand(right_tok, kw)
        if kw is None:
            if right.keyword is None:
                raise self.error(f"comparison {left_tok.text} {op_tok.text} {right_tok.text} names no keyword")
            left = Operand(literal=self.literal_for(left_tok, right.keyword))
        elif right.keyword is not None:
            self.check_comparable(kw, right.keyword)
        return Compare(left, op_tok.text, right)

    def next_peeked(self) -> _Tok | None:
        tok = self.peek()
        if tok is not None:
            self.pos += 1
        return tok

    # -- operands ------------------------------------------------------------------------
    def operand(self, tok: _Tok, against: Keyword | None) -> Operand:
        """A keyword reference or a literal (typed for ``against`` when it is known)."""
        if tok.kind == "ident":
            self.reject_sql(tok)
            kw = self.series.keyword(tok.text)
            if kw is not None:
                return Operand(keyword=kw)
            if against is not None and not against.is_numeric:
                return Operand(literal=tok.text)  # an unquoted string value: INSTRUME=HMI_FRONT2
            raise self.unknown_keyword(tok.text)
        if tok.kind in ("str", "bare", "time"):
            if against is None:
                return Operand(literal=tok)  # typed once the keyword on the other side is known
            return Operand(literal=self.literal_for(tok, against))
        raise self.error(f"expected a keyword or a value but found {tok.text!r}")

    def reject_sql(self, tok: _Tok) -> None:
        """SQL words and calls never get past the tokenizer; AND/OR/... here are misplaced."""
        if tok.text.lower() in _LOGIC_WORDS:
            raise self.error(f"unexpected {tok.text.upper()}")

    def unknown_keyword(self, name: str) -> RecordSetError:
        names = [k.name for k in self.series.keywords]
        close = difflib.get_close_matches(name.upper(), names, n=3, cutoff=0.6) or difflib.get_close_matches(
            name, names, n=3, cutoff=0.6
        )
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        return RecordSetError(f"unknown keyword {name!r} of {self.series.name} in [? {_clip(self.text)} ?]{hint}")

    def check_comparable(self, a: Keyword, b: Keyword) -> None:
        if a.is_numeric != b.is_numeric:
            raise self.error(f"cannot compare {a.type} keyword {a.name} with {b.type} keyword {b.name}")

    def literal_for(self, tok: _Tok | Any, kw: Keyword) -> Any:
        """A token as a value of ``kw``'s type (numbers numerically, times as internal time)."""
        if isinstance(tok, _Tok) and tok.kind == "ident":
            if not kw.is_numeric and self.series.keyword(tok.text) is None:
                self.reject_sql(tok)
                return tok.text
            raise self.error(f"expected a value for {kw.name} but found {tok.text!r}")
        if not isinstance(tok, _Tok) or tok.kind not in ("str", "bare", "time"):
            text = tok.text if isinstance(tok, _Tok) else repr(tok)
            raise self.error(f"expected a value for {kw.name} but found {_clip(text)!r}")
        if tok.kind == "time":
            if not kw.is_numeric:
                raise self.error(f"$(...) gives a time, but {kw.name} is a {kw.type} keyword")
            return tok.value
        text = tok.value if tok.kind == "str" else tok.text
        if kw.is_time:
            try:
                return drmstime.parse_time(text)
            except ValueError:
                try:
                    return float(text)  # an internal time number, as $(...) gives
                except ValueError:
                    raise self.error(f"bad time {_clip(text)!r} for {kw.name}") from None
        if kw.is_numeric:
            try:
                return _number(text.strip(), kw)
            except RecordSetError:
                raise self.error(f"{_clip(text)!r} is not a number, but {kw.name} is a {kw.type} keyword") from None
        return text
