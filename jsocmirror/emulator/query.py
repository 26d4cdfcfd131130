"""Record-set evaluation over the world, and keyword values of the selected records.

``select(world, ds, n)`` parses ``ds`` with the shared parser (jsocmirror.recordset), turns its
prime-key filters into per-key constraints the series' population model enumerates directly
(memory proportional to the answer), applies recnum, ``[? ?]``/``[! !]`` filters and ``n``, and
returns a :class:`Selection`: columnar (ordinal, version) arrays in prime-key order.

``Selection.column(name)`` computes a keyword for every selected record as a :class:`Column`
(typed numpy values plus how JSOC prints them); ``Column.json_array()`` renders the JSON array
of strings rs_list sends, vectorised where it matters (times, hex QUALITY, numbers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Iterable

import numpy as np
import orjson

from jsocmirror import drmstime
from jsocmirror.errors import RecordSetError
from jsocmirror.recordset import (
    First, HalfOpen, IndexSel, KeyFilter, Last, Point, Range, RecnumFilter, Spec, WhereFilter,
    parse_recordset,
)
from jsocmirror.series import Keyword, SeriesDef
from jsocmirror.emulator.world import (
    FsnModel, GridModel, Interval, TooManyRecords, World, name_key, normal, record_hash,
    sums_dir, uniform,
)

INT_MISSING = {"char": -128, "short": -32768, "int": -2147483648, "longlong": -9223372036854775808}
CHUNK = 1_000_000


class QueryError(Exception):
    """A query JSOC refuses: ``status`` and ``message`` go into the JSON reply."""

    def __init__(self, message: str, status: int = 1):
        super().__init__(message)
        self.status = status
        self.message = message


def too_many(count: int, cap: int) -> QueryError:
    return QueryError(f"Too many records in record set: {count} exceeds the limit of {cap} records; "
                      "narrow the query or use n=", status=1)


# ------------------------------------------------------------------------------------------------
# selection
# ------------------------------------------------------------------------------------------------
@dataclass
class Selection:
    world: World
    sdef: SeriesDef
    ordinals: np.ndarray
    versions: np.ndarray
    segments: tuple[str, ...] | None = None  # the ds's {seg,...} list, if any
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.ordinals)

    @property
    def model(self):
        return self.world.model(self.sdef)

    def base(self) -> dict[str, np.ndarray]:
        if "_base" not in self._cache:
            self._cache["_base"] = self.model.base_columns(self.ordinals)
        return self._cache["_base"]

    @cached_property
    def recnums(self) -> np.ndarray:
        return self.world.recnums(self.sdef, self.ordinals, self.versions)

    @cached_property
    def sunum_slots(self) -> tuple[np.ndarray, np.ndarray]:
        return self.world.sunums(self.sdef, self.ordinals, self.versions)

    @property
    def sunums(self) -> np.ndarray:
        return self.sunum_slots[0]

    @cached_property
    def online(self) -> np.ndarray:
        """Whether each record's storage unit is on disk: recent ones always, older ones less often."""
        sun = self.sunums
        age = (self.world.now - self.base()["_time"]) / 86400.0
        p_offline = np.clip((age - 60.0) / 3650.0, 0.0, 0.6)
        u = uniform(record_hash(name_key("online", self.sdef.name), sun, 0))
        return u >= p_offline

    def column(self, name: str, cache: bool = True) -> Column:
        """One keyword (or special) for every record; ``cache=False`` when streaming big replies."""
        key = name.lower()
        col = self._cache.get(key)
        if col is None:
            col = keyword_column(self, name)
            if cache:
                self._cache[key] = col
        return col

    def take(self, index: np.ndarray) -> Selection:
        return Selection(self.world, self.sdef, self.ordinals[index], self.versions[index], self.segments)

    def primekey_strings(self) -> list[list[str]]:
        cols = [self.column(k).strings() for k in self.sdef.primekeys]
        return [list(row) for row in zip(*cols)]

    def record_names(self) -> list[str]:
        cols = [self.column(k).strings() for k in self.sdef.primekeys]
        name = self.sdef.name
        if len(cols) == 1:
            return [f"{name}[{a}]" for a in cols[0]]
        if len(cols) == 2:
            return [f"{name}[{a}][{b}]" for a, b in zip(cols[0], cols[1])]
        return [name + "".join(f"[{v}]" for v in row) for row in zip(*cols)]

    def segment_paths(self, segment: str) -> list[str]:
        """SUMS paths of one segment (link segments resolve to the target's file), or
        ``NoDataDirectory`` for records whose storage unit is offline."""
        seg = self.sdef.segment(segment)
        target_sel, target_seg = self, seg
        if seg is not None and seg.is_link:
            linked = self.link_target(seg.link_name or "")
            if linked is None:
                return ["BadSegLink"] * len(self)
            target_sel = linked
            tseg = linked.sdef.segment(seg.name) or next(
                (s for s in linked.sdef.segments if s.name.lower().startswith(seg.name.lower())), None)
            if tseg is None:
                return ["BadSegLink"] * len(self)
            target_seg = tseg
        sun, slot = target_sel.sunum_slots
        online = target_sel.online
        fname = f"{target_seg.name}.fits"
        out = []
        for s, sl, on in zip(sun.tolist(), slot.tolist(), online.tolist()):
            out.append(f"{sums_dir(s, sl)}/{fname}" if on else "NoDataDirectory")
        return out

    def link_target(self, link: str) -> Selection | None:
        """The records a link points to (latest versions), aligned with this selection, or None."""
        lk = self.sdef.link(link)
        if lk is None:
            return None
        target = self.world.series(lk.target)
        if target is None:
            return None
        tmodel = self.world.model(target)
        base = self.base()
        # the one link the emulated series have: an AIA band series -> the aia.lev1 frame
        if isinstance(tmodel, FsnModel) and isinstance(self.model, GridModel) and "wavelnth" in base:
            ords = tmodel.group_ordinal(base["_time"], np.asarray(base["wavelnth"]))
            return Selection(self.world, target, ords, self.world.latest_versions(target, ords))
        return None


def select(world: World, ds: str, n: int = 0, cap: int = 3_000_000) -> Selection:
    """Evaluate a record-set string; raises QueryError (status 1) for bad input or too many records."""
    world.refresh()
    try:
        specs = parse_recordset(ds, world.series)
    except RecordSetError as exc:
        raise QueryError(str(exc)) from None
    sdef = specs[0].series
    if any(s.series.name != sdef.name for s in specs):
        raise QueryError(f"record set {ds!r} mixes series; jsoc_info lists one series at a time")
    parts = []
    try:
        for spec in specs:
            parts.append(_evaluate_spec(world, spec, cap, n))
    except TooManyRecords as exc:
        raise too_many(exc.count, cap) from None
    if len(parts) == 1:
        ords, vers = parts[0]
    else:
        ords = np.concatenate([p[0] for p in parts])
        vers = np.concatenate([p[1] for p in parts])
    if n > 0:
        ords, vers = ords[:n], vers[:n]
    elif n < 0:
        ords, vers = ords[n:], vers[n:]
    if len(ords) > cap:
        raise too_many(len(ords), cap)
    return Selection(world, sdef, ords, vers, specs[0].segments)


def _evaluate_spec(world: World, spec: Spec, cap: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    sdef = spec.series
    model = world.model(sdef)
    now = world.now
    constraints: dict[str, list[Interval]] = {}
    post: list[KeyFilter] = []
    recnum_filters = [f for f in spec.filters if isinstance(f, RecnumFilter)]
    where_filters = [f for f in spec.filters if isinstance(f, WhereFilter)]
    for f in spec.filters:
        if not isinstance(f, KeyFilter):
            continue
        items = _to_intervals(world, sdef, model, f, now)
        if items is None or f.key.lower() in constraints or recnum_filters:
            post.append(f)
        else:
            constraints[f.key.lower()] = items
    # a where filter may look at many candidates: bound them more generously, evaluate in chunks
    enum_cap = cap * 4 if where_filters else cap
    if recnum_filters:
        ords, vers = _from_recnums(world, sdef, recnum_filters[0], now, enum_cap)
        recnum_filters = recnum_filters[1:]
    else:
        try:
            ords = model.enumerate(constraints, now, enum_cap)
        except TooManyRecords:
            if not n or post or where_filters or spec.all_versions:
                raise
            ords = _enumerate_window(world, sdef, model, constraints, now, cap, n)
        ords = world.drop_deleted(sdef, ords)
        vers = world.latest_versions(sdef, ords)
    all_versions = spec.all_versions
    # [? ?] is DRMS's "max(recnum) per prime key among the versions that match": an older version
    # can answer when the latest one fails the condition, so look at every version, keep the last
    latest_of_matches = bool(where_filters) and not all_versions and bool((vers > 0).any())
    if (all_versions or latest_of_matches) and len(ords):
        ords, vers = _expand_versions(ords, vers)
    if post or recnum_filters or where_filters:
        keep = []
        for start in range(0, len(ords), CHUNK):
            sel = Selection(world, sdef, ords[start:start + CHUNK], vers[start:start + CHUNK])
            mask = np.ones(len(sel), dtype=bool)
            for f in post:
                mask &= _key_filter_mask(world, sel, f, now)
            for f in recnum_filters:
                mask &= _recnum_mask(sel.recnums, f)
            for f in where_filters:
                mask &= _where_mask(sel, f)
            keep.append(start + np.nonzero(mask)[0])
        idx = np.concatenate(keep) if keep else np.empty(0, dtype=np.int64)
        ords, vers = ords[idx], vers[idx]
        if latest_of_matches and len(ords):
            last = np.r_[ords[1:] != ords[:-1], True]  # versions of one record are adjacent, ascending
            ords, vers = ords[last], vers[last]
    if len(ords) > cap and not (n and abs(n) < len(ords)):
        raise TooManyRecords(len(ords))
    return ords, vers


def _enumerate_window(world, sdef, model, constraints, now, cap, n) -> np.ndarray:
    """The first/last ``|n|`` records of a set too large to list: like JSOC's LIMIT query, grow a
    window over the first prime key from the near end until it holds enough records."""
    key = sdef.keyword(sdef.primekeys[0]).name
    lo = _first_last(world, sdef, model, key, now, last=False)
    hi = _first_last(world, sdef, model, key, now, last=True)
    if lo is None or hi is None:
        return np.empty(0, dtype=np.int64)
    items = constraints.get(key.lower()) or [Interval(lo, hi)]
    lo = max(lo, min(it.lo for it in items))
    hi = min(hi, max(it.hi for it in items))
    width = max(abs(n), 16)
    while True:
        wlo, whi = (lo, min(hi, lo + width)) if n > 0 else (max(lo, hi - width), hi)
        clipped = []
        for it in items:
            step = max(1, it.step)
            a = it.lo if it.lo >= wlo else it.lo + ((wlo - it.lo + step - 1) // step) * step
            b = min(it.hi, whi)
            if a <= b:
                clipped.append(Interval(a, b, step))
        window = dict(constraints)
        window[key.lower()] = clipped
        ords = model.enumerate(window, now, cap) if clipped else np.empty(0, dtype=np.int64)
        ords = world.drop_deleted(sdef, ords)
        if len(ords) >= abs(n) or (wlo <= lo and whi >= hi):
            return ords[:n] if n > 0 else ords[n:]
        width *= 4


def _expand_versions(ords: np.ndarray, vers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    counts = vers + 1
    o = np.repeat(ords, counts)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    v = np.arange(len(o)) - starts
    return o, v.astype(np.int64)


def _first_last(world: World, sdef: SeriesDef, model, key: str, now: float, last: bool) -> int | None:
    """The smallest/largest existing value (slot index on slotted keys) of a prime key."""
    ords = _series_edge(world, sdef, model, now, last)
    if ords is None:
        return None
    sel = Selection(world, sdef, ords, np.zeros(len(ords), dtype=np.int64))
    vals = _key_values(sel, key)
    return int(vals.max() if last else vals.min()) if len(vals) else None


def _series_edge(world, sdef, model, now, last):
    limit = model.ordinal_limit(now)
    if limit <= 0:
        return None
    lanes = getattr(model, "lanes", 8)
    window = np.arange(max(0, limit - 64 * lanes), limit) if last else np.arange(0, min(limit, 64 * lanes))
    window = window[model.exists(window, now)]
    window = world.drop_deleted(sdef, window)
    return window if len(window) else None


def _to_intervals(world, sdef, model, f: KeyFilter, now) -> list[Interval] | None:
    kw = sdef.keyword(f.key)
    slotted = sdef.slotting(f.key) is not None
    out = []
    for item in f.items:
        if isinstance(item, (First, Last)):
            v = _first_last(world, sdef, model, f.key, now, isinstance(item, Last))
            if v is None:
                continue
            out.append(Interval(v, v))
        elif isinstance(item, IndexSel):
            out.append(Interval(int(item.lo), int(item.hi)))
        elif isinstance(item, Point):
            if kw.is_time and not slotted or not isinstance(item.value, (int, float, np.integer)):
                return None
            if float(item.value) != int(item.value):
                out.append(Interval(1, 0))
                continue
            out.append(Interval(int(item.value), int(item.value)))
        elif isinstance(item, Range):
            if kw.is_time and not slotted:
                return None
            every = int(item.every) if item.every else 1
            if item.every and float(item.every) != every:
                return None
            out.append(Interval(math.ceil(item.lo), math.floor(item.hi), max(1, every)))
        elif isinstance(item, HalfOpen):
            if kw.is_time and not slotted or item.every:
                return None
            out.append(Interval(math.ceil(item.lo), math.ceil(item.hi) - 1))
        else:
            return None
    return out


def _key_values(sel: Selection, key: str) -> np.ndarray:
    """Values of a prime key as filters compare them: slot indices on slotted keys."""
    sdef = sel.sdef
    slot = sdef.slotting(key)
    base = sel.base()
    if slot is None:
        return np.asarray(base[key.lower()])
    t = base[key.lower()]
    offset = float((sdef.emulator or {}).get("trec_offset", 0.0)) if key.upper() == "T_REC" else 0.0
    rounding = slot.step if slot.kind == "ts_eq" else slot.round
    return np.floor((t - offset - slot.epoch + rounding / 2.0) / slot.step + 1e-9).astype(np.int64)


def _key_filter_mask(world, sel: Selection, f: KeyFilter, now) -> np.ndarray:
    vals = _key_values(sel, f.key)
    mask = np.zeros(len(vals), dtype=bool)
    for item in f.items:
        if isinstance(item, (First, Last)):
            v = _first_last(world, sel.sdef, sel.model, f.key, now, isinstance(item, Last))
            if v is not None:
                mask |= vals == v
        elif isinstance(item, IndexSel):
            mask |= (vals >= item.lo) & (vals <= item.hi)
        elif isinstance(item, Point):
            mask |= vals == item.value
        elif isinstance(item, (Range, HalfOpen)):
            inside = (vals >= item.lo) & ((vals <= item.hi) if isinstance(item, Range) else (vals < item.hi))
            if item.every:
                steps = (vals - item.lo) / item.every
                inside &= np.abs(steps - np.round(steps)) < 1e-9
            mask |= inside
    return mask


def _recnum_mask(recnums: np.ndarray, f: RecnumFilter) -> np.ndarray:
    mask = np.zeros(len(recnums), dtype=bool)
    for lo, hi in f.ranges:
        mask |= (recnums >= lo) & (recnums <= hi)
    return mask


def _from_recnums(world: World, sdef: SeriesDef, f: RecnumFilter, now: float, cap: int):
    """Records whose RECNUM is in the filter's ranges (any version), in prime-key order."""
    lg = world.log_of(sdef)
    base = world.recnum_base(sdef)
    model = world.model(sdef)
    cumulative = [0]
    for e in lg.events:
        cumulative.append(cumulative[-1] + e[1])
    bounds = [-1] + [e[0] for e in lg.events] + [model.ordinal_limit(now) - 1]
    pieces = []
    total = 0
    for lo, hi in f.ranges:
        for i in range(len(bounds) - 1):
            a = max(lo - base - cumulative[i], bounds[i] + 1, 0)
            b = min(hi - base - cumulative[i], bounds[i + 1])
            if a <= b:
                total += b - a + 1
                if total > cap:
                    raise TooManyRecords(total)
                pieces.append(np.arange(a, b + 1, dtype=np.int64))
    ords = np.unique(np.concatenate(pieces)) if pieces else np.empty(0, dtype=np.int64)
    ords = ords[model.exists(ords, now)] if len(ords) else ords
    ords = world.drop_deleted(sdef, ords)
    vers = np.zeros(len(ords), dtype=np.int64)
    # stored (reprocessed) versions whose recnum is in range
    extra_o, extra_v = [], []
    for recnum, (o, v) in world._recnum_index.get(sdef.name.lower(), {}).items():
        if any(lo <= recnum <= hi for lo, hi in f.ranges) and o not in lg.deleted:
            extra_o.append(o)
            extra_v.append(v)
    if extra_o:
        ords = np.concatenate([ords, np.array(extra_o, dtype=np.int64)])
        vers = np.concatenate([vers, np.array(extra_v, dtype=np.int64)])
    # order by prime keys (ordinal order is prime-key order only for time-major models), then version
    if len(ords) > 1:
        sel = Selection(world, sdef, ords, vers)
        keys = [_key_values(sel, k) for k in reversed(sdef.primekeys)]
        order = np.lexsort([vers] + keys)
        ords, vers = ords[order], vers[order]
    return ords, vers


def _where_mask(sel: Selection, f: WhereFilter) -> np.ndarray:
    cols = {}
    for name in f.expr.keywords:
        cols[name] = sel.column(name).typed()
    try:
        result = f.expr.evaluate_columns(cols)
    except (TypeError, ValueError) as exc:
        raise QueryError(f"cannot evaluate [? {f.text} ?]: {exc}") from None
    return np.asarray(result, dtype=bool)


# ------------------------------------------------------------------------------------------------
# columns
# ------------------------------------------------------------------------------------------------
@dataclass
class Column:
    """Typed values of one keyword plus JSOC's print form.

    kind: ``time`` (internal seconds; zone, precision), ``int`` (hex: printed ``0x%08x``),
    ``float`` (decimals), ``str`` (a list, or ``const`` for one value repeated), ``num``
    (JSON numbers: *recnum*, *sunum*).
    """

    kind: str
    values: Any
    n: int
    zone: str = "TAI"
    precision: int = 0
    decimals: int = 4
    hex_width: int = 0
    int_type: str = "int"
    const: str | None = None
    sci: bool = False  # floats printed as %.{decimals}e (fluxes of 1e22)
    typed_const: Any = None  # a constant keyword's value as a number/time, for [? ?] filters

    def typed(self) -> np.ndarray:
        if self.typed_const is not None:
            return np.full(self.n, self.typed_const)
        if self.kind == "str":
            if self.const is not None:
                return np.full(self.n, self.const, dtype=object)
            return np.asarray(self.values, dtype=object)
        if self.kind == "const_num":
            return np.full(self.n, self.values)
        return np.asarray(self.values)

    def strings(self) -> list[str]:
        if self.const is not None:
            return [self.const] * self.n
        if self.kind == "str":
            return [v if v != "" else "MISSING" for v in self.values]
        if self.kind == "time":
            return format_times(self.values, self.zone, self.precision)
        if self.kind in ("int", "num"):
            v = np.asarray(self.values, dtype=np.int64)
            if self.hex_width:
                mask = (1 << (4 * self.hex_width)) - 1
                return [f"0x{x & mask:0{self.hex_width}x}" for x in v.tolist()]
            out = list(map(str, v.tolist()))
            if self.kind == "int":
                miss = INT_MISSING.get(self.int_type)
                if miss is not None and (v == miss).any():
                    out = ["MISSING" if x == miss else s for x, s in zip(v.tolist(), out)]
            return out
        if self.kind == "float":
            v = np.asarray(self.values, dtype=np.float64)
            if self.sci:
                out = [f"{x:.{self.decimals}e}" for x in v.tolist()]
            elif self._vectorisable(v):
                return orjson.loads(numbers_json_array(v, self.decimals))  # one formatting for both paths
            else:
                fmt = f"{{:.{self.decimals}f}}".format
                out = list(map(fmt, v.tolist()))
            if np.isnan(v).any():
                out = ["MISSING" if x != x else s for x, s in zip(v.tolist(), out)]
            return out
        raise ValueError(self.kind)

    def json_array(self) -> bytes:
        """``["v1","v2",...]`` as rs_list sends it (``num`` columns as JSON numbers)."""
        if self.kind == "num":
            return orjson.dumps(np.asarray(self.values, dtype=np.int64).tolist())
        if self.const is not None:
            if self.n == 0:
                return b"[]"
            item = orjson.dumps(self.const)
            return b"[" + b",".join([item] * self.n) + b"]"
        if self.kind == "time" and not np.isnan(np.asarray(self.values, dtype=np.float64)).any():
            return time_json_array(np.asarray(self.values, dtype=np.float64), self.zone, self.precision)
        if self.kind == "float" and not self.sci:
            v = np.asarray(self.values, dtype=np.float64)
            if self._vectorisable(v):
                return numbers_json_array(v, self.decimals)
        return orjson.dumps(self.strings())

    def _vectorisable(self, v: np.ndarray) -> bool:
        """Fixed-decimal printing through int64 needs |v| * 10**decimals well inside int64."""
        if len(v) == 0:
            return False
        finite = v[~np.isnan(v)]
        return len(finite) == 0 or float(np.abs(finite).max()) * 10.0 ** self.decimals < 1e17


def _zone_cal(t: np.ndarray, zone: str) -> np.ndarray:
    if zone == "TAI":
        return t
    leaps = drmstime._LEAPS
    starts = np.array([change + dat for change, dat in leaps])  # TAI instants of each change
    dats = np.array([dat for _c, dat in leaps], dtype=np.float64)
    idx = np.searchsorted(starts, t, side="right") - 1
    dat = np.where(idx >= 0, dats[np.maximum(idx, 0)], 10.0)
    return t - dat


def _digits(out: np.ndarray, col: int, v: np.ndarray, width: int) -> None:
    v = v.copy()
    for k in range(width):
        out[:, col + width - 1 - k] = (v % 10) + 48
        v //= 10


def _time_matrix(t: np.ndarray, zone: str, precision: int) -> np.ndarray:
    """uint8 rows of printed times (fixed width), vectorised calendar arithmetic."""
    n = len(t)
    scale = 10 ** precision
    ticks = np.round(_zone_cal(t, zone) * scale).astype(np.int64)
    days, rem = np.divmod(ticks, 86400 * scale)
    y, mo, d = drmstime.civil_from_days(days + drmstime.DAYS_1970_TO_1977)
    h, rem = np.divmod(rem, 3600 * scale)
    mi, rem = np.divmod(rem, 60 * scale)
    s, frac = np.divmod(rem, scale)
    iso = zone == "ISO"
    suffix = b"Z" if iso else f"_{zone}".encode()
    w = 19 + (precision + 1 if precision else 0)
    out = np.empty((n, w + len(suffix)), dtype=np.uint8)
    _digits(out, 0, y, 4)
    _digits(out, 5, mo, 2)
    _digits(out, 8, d, 2)
    _digits(out, 11, h, 2)
    _digits(out, 14, mi, 2)
    _digits(out, 17, s, 2)
    for c, ch in zip((4, 7, 10, 13, 16), b"--T::" if iso else b".._::"):
        out[:, c] = ch
    if precision:
        out[:, 19] = 46
        _digits(out, 20, frac, precision)
    out[:, w:] = np.frombuffer(suffix, dtype=np.uint8)
    return out


def format_times(t: np.ndarray, zone: str, precision: int = 0) -> list[str]:
    t = np.asarray(t, dtype=np.float64)
    if len(t) == 0:
        return []
    missing = np.isnan(t) | (t <= drmstime.MISSING_TIME + 1.0)
    if missing.any():
        good = format_times(np.where(missing, 0.0, t), zone, precision)
        return ["MISSING" if m else s for m, s in zip(missing.tolist(), good)]
    m = _time_matrix(t, zone, precision)
    return m.view(f"S{m.shape[1]}").ravel().astype(f"U{m.shape[1]}").tolist()


def numbers_json_array(values, decimals=0, missing=None):
    """JSON array of numbers printed as strings with fixed decimals, built as one byte matrix."""
    n = len(values)
    if n == 0:
        return b"[]"
    if decimals:
        x = np.asarray(values, dtype=np.float64)
        miss = np.isnan(x) if missing is None else (missing | np.isnan(x))
        v = np.round(np.where(miss, 0.0, x) * (10 ** decimals)).astype(np.int64)
    else:
        v = np.asarray(values, dtype=np.int64)
        miss = missing if missing is not None else None
        if miss is not None:
            v = np.where(miss, 0, v)
    neg = v < 0
    a = np.abs(v)
    scale = 10 ** decimals
    ip, fp = np.divmod(a, scale)
    nd = np.ones(n, dtype=np.int64)
    p = 10
    while p <= 10**18:
        m = ip >= p
        if not m.any():
            break
        nd += m
        p *= 10
    maxnd = int(nd.max())
    width = 2 + maxnd + (decimals + 1 if decimals else 0) + 2
    if miss is not None and miss.any():
        width = max(width, 2 + 7 + 2)
    e = width - 3 - (decimals + 1 if decimals else 0)  # column of the last integer digit
    M = np.zeros((n, width), dtype=np.uint8)
    t = ip.copy()
    for j in range(maxnd):
        M[:, e - j] = t % 10 + 48
        t //= 10
    if decimals:
        M[:, e + 1] = 46
        f = fp.copy()
        for j in range(decimals):
            M[:, e + 1 + decimals - j] = f % 10 + 48
            f //= 10
    M[:, -2] = 34
    M[:, -1] = 44
    start = e - nd + 1
    quote = start - 1 - neg
    rows = np.arange(n)
    M[rows[neg], (start - 1)[neg]] = 45
    if miss is not None and miss.any():
        mr = rows[miss]
        M[mr[:, None], np.arange(width - 9, width - 2)[None, :]] = np.frombuffer(b"MISSING", dtype=np.uint8)
        quote = np.where(miss, width - 10, quote)
    M[rows, quote] = 34
    mask = np.arange(width)[None, :] >= quote[:, None]
    return b"[" + M[mask].tobytes()[:-1] + b"]"


def time_json_array(t: np.ndarray, zone: str, precision: int = 0) -> bytes:
    """A JSON array of printed times built as one byte matrix (no Python string per value)."""
    if len(t) == 0:
        return b"[]"
    parts = []
    for start in range(0, len(t), 500_000):  # bounded temporaries for multi-million-row replies
        m = _time_matrix(t[start:start + 500_000], zone, precision)
        n, w = m.shape
        full = np.empty((n, w + 3), dtype=np.uint8)
        full[:, 0] = 34
        full[:, 1:w + 1] = m
        full[:, w + 1] = 34
        full[:, w + 2] = 44
        parts.append(full.tobytes())
    return b"[" + b"".join(parts)[:-1] + b"]"


# ------------------------------------------------------------------------------------------------
# keyword values
# ------------------------------------------------------------------------------------------------
AIA_CAMERA = {94: 4, 131: 1, 171: 3, 193: 2, 211: 2, 304: 4, 335: 1, 1600: 3, 1700: 3, 4500: 3}
AIA_EXPTIME = {94: 2.9, 131: 2.9, 171: 2.0, 193: 2.0, 211: 2.9, 304: 2.9, 335: 2.9, 1600: 1.0, 1700: 1.0}
AIA_LEVEL = {94: 1.5, 131: 6.0, 171: 450.0, 193: 750.0, 211: 250.0, 304: 60.0, 335: 3.5, 1600: 110.0, 1700: 1600.0}
QUALITY_FLAGS = np.array([0x00000400, 0x00000800, 0x00010000, 0x00000200, 0x01000000, 0x00000010], dtype=np.int64)


def _defval_precision(kw: Keyword) -> int:
    text = kw.defval or ""
    if "." in text.split(":")[-1]:
        frac = text.split(":")[-1].split(".")[1]
        return len("".join(ch for ch in frac if ch.isdigit()))
    return 0


def _float_decimals(kw: Keyword) -> int:
    return 6 if kw.type == "double" else 4


def carrington(t: np.ndarray) -> np.ndarray:
    """Carrington rotation (fractional) at internal time t (JD from TAI is close enough here)."""
    jd = 2443144.5 + t / 86400.0
    return 1.0 + (jd - 2398167.4) / 27.2753


def keyword_column(sel: Selection, name: str) -> Column:
    """Values of one keyword (or special) for every record of the selection."""
    n = len(sel)
    special = name.lower()
    if special == "*recnum*":
        return Column("num", sel.recnums, n)
    if special == "*sunum*":
        return Column("num", sel.sunums, n)
    if special == "*online*":
        return Column("str", np.where(sel.online, "Y", "N").tolist(), n)
    if special == "*size*":
        # SUMS' size of the record's storage unit: unitsize records of every stored segment
        sdef = sel.sdef
        stored = [s for s in sdef.segments if not s.is_link] or list(sdef.segments)
        size = int((sdef.emulator or {}).get("file_size", 1_000_000)) * max(1, len(stored)) * max(1, sdef.unitsize)
        return Column("str", None, n, const=str(size))
    if special == "*retain*":
        return Column("str", [("N/A" if not o else "2024.08.01") for o in sel.online.tolist()], n)
    if special == "*archive*":
        return Column("str", None, n, const="Y")
    if special in ("*recdir*", "*logdir*", "*dirmtime*", "*spec*"):
        if special == "*recdir*":
            sun, slot = sel.sunum_slots
            return Column("str", [sums_dir(s, sl) for s, sl in zip(sun.tolist(), slot.tolist())], n)
        if special == "*spec*":
            return Column("str", sel.record_names(), n)
        return Column("str", None, n, const="NO LOG" if special == "*logdir*" else "MISSING")
    kw = sel.sdef.keyword(name)
    if kw is None:
        return Column("str", None, n, const="Invalid KeyLink")
    return _generate(sel, kw)


def _generate(sel: Selection, kw: Keyword) -> Column:
    n = len(sel)
    sdef = sel.sdef
    upper = kw.name.upper()
    base = sel.base()
    lower = kw.name.lower()
    t = base["_time"]
    if kw.recscope == "constant" or upper.startswith("CPARMS_SG") or upper.endswith(("_BZERO", "_BSCALE")):
        if kw.is_time or kw.is_numeric or kw.type == "string":
            return Column("str", None, n, const=kw.defval if kw.defval != "" else "MISSING",
                          typed_const=_typed_defval(kw))
    if lower in base and not lower.startswith("_"):
        vals = base[lower]
        if kw.is_time:
            return Column("time", vals, n, zone=kw.zone, precision=_defval_precision(kw))
        if kw.is_int:
            return Column("int", vals, n, int_type=kw.type)
        return Column("float", vals, n, decimals=1)
    h = record_hash(name_key(sdef.name, kw.name), sel.ordinals, sel.versions)
    wl = _wavelengths(sel)
    gen = _NAMED.get(upper)
    if gen is not None:
        col = gen(sel, kw, h, t, wl)
        if col is not None:
            return col
    return _generic(sel, kw, h, t)


def _typed_defval(kw: Keyword) -> Any:
    text = (kw.defval or "").strip()
    try:
        if kw.is_time:
            return drmstime.parse_time(text)
        if kw.is_numeric:
            if text.lower().startswith("0x"):
                return int(text, 16)
            value = float(text)
            return int(value) if kw.is_int and value.is_integer() else value
    except ValueError:
        return None
    return None


def _lookup(keys: np.ndarray, table: dict[int, float], default: float) -> np.ndarray:
    """Vectorised ``table.get(int(k), default)`` over an int array."""
    ks = np.array(sorted(table), dtype=np.int64)
    vals = np.array([table[k] for k in sorted(table)], dtype=np.float64)
    keys = np.asarray(keys, dtype=np.int64)
    idx = np.clip(np.searchsorted(ks, keys), 0, len(ks) - 1)
    return np.where(ks[idx] == keys, vals[idx], default)


def _wavelengths(sel: Selection) -> np.ndarray | None:
    base = sel.base()
    if "wavelnth" in base:
        return np.asarray(base["wavelnth"])
    if "_wavelnth" in base:
        return base["_wavelnth"]
    return None


def _generic(sel, kw, h, t) -> Column:
    n = len(sel)
    if kw.is_time:
        return Column("time", t + uniform(h) * 60.0, n, zone=kw.zone, precision=_defval_precision(kw))
    if kw.is_int:
        if kw.defval.lower().startswith("0x"):
            return Column("int", np.zeros(n, dtype=np.int64), n, hex_width=8 if kw.type != "longlong" else 16)
        return Column("int", (h % np.uint64(1000)).astype(np.int64), n, int_type=kw.type)
    if kw.is_float:
        return Column("float", uniform(h) * 100.0, n, decimals=_float_decimals(kw))
    if kw.type == "string":
        return Column("str", None, n, const=kw.defval if kw.defval else "MISSING")
    return Column("str", None, n, const="MISSING")


def _quality(sel, kw, h, t, wl):
    u = uniform(h if kw.name.upper() == "QUALITY" else
                record_hash(name_key(sel.sdef.name, "QUALITY"), sel.ordinals, sel.versions))
    flag = QUALITY_FLAGS[(h % np.uint64(len(QUALITY_FLAGS))).astype(np.int64)]
    q = np.where(u < 0.01, np.int64(-0x80000000) | flag, np.where(u < 0.05, flag, 0))
    if kw.name.upper() != "QUALITY":
        q = np.where(q < 0, q, 0)
    return Column("int", q, len(sel), hex_width=8, int_type=kw.type)


def _no_image(sel) -> np.ndarray:
    h = record_hash(name_key(sel.sdef.name, "QUALITY"), sel.ordinals, sel.versions)
    return uniform(h) < 0.01


def _t_obs_values(sel, t) -> np.ndarray:
    base = sel.base()
    if "_t_obs" in base:
        return base["_t_obs"]
    linked = sel.link_target("lev1") if sel.sdef.link("lev1") else None
    if linked is not None:
        return linked.base()["_t_obs"]
    h = record_hash(name_key(sel.sdef.name, "T_OBS"), sel.ordinals, 0)
    return t + (uniform(h) - 0.5) * 4.0


def _t_obs(sel, kw, h, t, wl):
    return Column("time", _t_obs_values(sel, t), len(sel), zone=kw.zone, precision=_defval_precision(kw))


def _exptime_values(sel, h, wl) -> np.ndarray:
    hh = record_hash(name_key(sel.sdef.name, "EXPTIME"), sel.ordinals, 0)
    if wl is not None:
        nominal = _lookup(wl, AIA_EXPTIME, 1.0)
        return nominal * (1.0 + 0.0005 * (uniform(hh) - 0.5))
    return 0.135 * (1.0 + 0.001 * (uniform(hh) - 0.5))


def _exptime(sel, kw, h, t, wl):
    return Column("float", _exptime_values(sel, h, wl), len(sel), decimals=6)


def _date_obs(sel, kw, h, t, wl):
    v = _t_obs_values(sel, t) - _exptime_values(sel, h, wl) / 2.0
    return Column("time", v, len(sel), zone=kw.zone, precision=_defval_precision(kw) or 2)


def _date(sel, kw, h, t, wl):
    v = t + 3600.0 + uniform(h) * 7200.0
    if (sel.versions > 0).any():
        lg = sel.world.log_of(sel.sdef)
        v = v.copy()
        for i in np.nonzero(sel.versions > 0)[0].tolist():
            v[i] = lg.versions[int(sel.ordinals[i])][int(sel.versions[i]) - 1][3]
    return Column("time", v, len(sel), zone=kw.zone, precision=0)


def _camera(sel, kw, h, t, wl):
    if wl is None:
        return None
    return Column("int", _lookup(wl, AIA_CAMERA, 3).astype(np.int64), len(sel))


def _camera_values(sel, wl) -> np.ndarray | None:
    base = sel.base()
    if "camera" in base:
        return np.asarray(base["camera"])
    if wl is not None:
        return _lookup(wl, AIA_CAMERA, 3).astype(np.int64)
    return None


def _instrume(sel, kw, h, t, wl):
    cam = _camera_values(sel, wl)
    n = len(sel)
    if sel.sdef.name.lower().startswith("aia"):
        if cam is None:
            return Column("str", None, n, const="AIA_3")
        return Column("str", np.array(["AIA_0", "AIA_1", "AIA_2", "AIA_3", "AIA_4"])[np.clip(cam, 0, 4)].tolist(), n)
    if cam is None:
        return Column("str", None, n, const="HMI_SIDE1")
    names = {1: "HMI_SIDE1", 2: "HMI_FRONT2", 3: "HMI_COMBINED"}
    uniq = np.unique(cam)
    if len(uniq) == 1:
        return Column("str", None, n, const=names.get(int(uniq[0]), "HMI_COMBINED"))
    return Column("str", [names.get(int(c), "HMI_COMBINED") for c in cam.tolist()], n)


def _wavelnth(sel, kw, h, t, wl):
    if wl is None:
        return None
    if kw.is_int:
        return Column("int", wl, len(sel))
    return Column("float", wl.astype(float), len(sel), decimals=1)


def _wave_str(sel, kw, h, t, wl):
    if wl is None:
        return None
    return Column("str", [f"{w}_THIN" if w < 1000 else str(w) for w in wl.tolist()], len(sel))


def _fsn(sel, kw, h, t, wl):
    linked = sel.link_target("lev1") if sel.sdef.link("lev1") else None
    if linked is None:
        return None
    return Column("int", linked.base()["fsn"], len(sel))


def _car_rot(sel, kw, h, t, wl):
    return Column("int", np.floor(carrington(t)).astype(np.int64), len(sel))


def _crln_values(t: np.ndarray) -> np.ndarray:
    c = carrington(t)
    return 360.0 * (1.0 - (c - np.floor(c)))


def _crln_obs(sel, kw, h, t, wl):
    return Column("float", _crln_values(t), len(sel), decimals=6)


def _b0(t):
    doy = ((t / 86400.0) % 365.25)
    return 7.25 * np.sin(2 * np.pi * (doy - 159.0) / 365.25)


def _crlt_obs(sel, kw, h, t, wl):
    return Column("float", _b0(t), len(sel), decimals=6)


def _hgln_obs(sel, kw, h, t, wl):
    # SDO orbits the Earth, so its Stonyhurst longitude prints as 0 (as in real AIA headers)
    return Column("float", np.zeros(len(sel)), len(sel), decimals=6)


def _dsun(t):
    doy = ((t / 86400.0) % 365.25)
    return 1.495978707e11 * (1.0 - 0.0167 * np.cos(2 * np.pi * (doy - 3.0) / 365.25))


def _kw_hash(sel, name: str) -> np.ndarray:
    """The hash ``_generate`` gives keyword ``name``, so one keyword can derive from another's value."""
    return record_hash(name_key(sel.sdef.name, name), sel.ordinals, sel.versions)


def _dsun_obs_values(sel, t) -> np.ndarray:
    return _dsun(t) + (uniform(_kw_hash(sel, "DSUN_OBS")) - 0.5) * 2e7


def _rsun_obs_values(sel, t) -> np.ndarray:
    """Apparent solar radius in arcsec, arcsin(RSUN_REF / DSUN_OBS) of the record's own DSUN_OBS."""
    return np.degrees(np.arcsin(6.96e8 / _dsun_obs_values(sel, t))) * 3600.0


def _dsun_obs(sel, kw, h, t, wl):
    return Column("float", _dsun_obs_values(sel, t), len(sel), decimals=2)


def _rsun_obs(sel, kw, h, t, wl):
    return Column("float", _rsun_obs_values(sel, t), len(sel), decimals=6)


def _r_sun(sel, kw, h, t, wl):
    return Column("float", _rsun_obs_values(sel, t) / _plate_scale(sel), len(sel), decimals=6)


def _level(sel, wl) -> np.ndarray | float:
    if wl is not None and sel.sdef.name.lower().startswith("aia"):
        return _lookup(wl, AIA_LEVEL, 100.0)
    return 1.0


def _datastat(sel, kw, h, t, wl):
    upper = kw.name.upper()
    level = _level(sel, wl)
    z = normal(h)
    aia = sel.sdef.name.lower().startswith("aia")
    if "MEAN" in upper or "MEA2" in upper:
        v = level * (1.0 + 0.05 * z) if aia else 0.3 * z
    elif "MEDN" in upper or "MED2" in upper:
        v = level * (0.8 + 0.04 * z) if aia else 0.1 * z
    elif "RMS" in upper:
        v = level * (1.5 + 0.1 * z) if aia else 8.0 + 0.5 * z
    elif "MIN" in upper:
        v = -8.0 + 2 * z if aia else -2500.0 + 200.0 * z
    elif "MAX" in upper:
        v = level * 20.0 * (1.0 + 0.1 * z) if aia else 2500.0 + 200.0 * z
    elif "SKEW" in upper or "SKE2" in upper:
        v = 5.0 + z if aia else 0.1 * z
    elif "KURT" in upper or "KUR2" in upper:
        v = 200.0 + 50 * z if aia else 50.0 + 5 * z
    else:
        return None
    if kw.is_int:  # aia.lev1 keeps DATAMIN/MAX/MEDN as ints; MISSING is the type's INT_MIN
        v = np.where(_no_image(sel), INT_MISSING[kw.type], np.rint(v)).astype(np.int64)
        return Column("int", v, len(sel), int_type=kw.type)
    v = np.where(_no_image(sel), np.nan, v)
    return Column("float", v, len(sel), decimals=4)


def _totvals(sel, kw, h, t, wl):
    return Column("int", np.full(len(sel), 16777216, dtype=np.int64), len(sel))


def _missvals(sel, kw, h, t, wl):
    hh = record_hash(name_key(sel.sdef.name, "MISSVALS"), sel.ordinals, sel.versions)
    u = uniform(hh)
    miss = np.where(u < 0.05, (hh % np.uint64(5000)).astype(np.int64), 0)
    miss = np.where(_no_image(sel), 16777216, miss)
    if kw.name.upper() == "DATAVALS":
        return Column("int", 16777216 - miss, len(sel))
    return Column("int", miss, len(sel))


def _harp_noaa(sel):
    harps = sel.base().get("harpnum")
    if harps is None:
        return None
    hh = record_hash(name_key("noaa"), harps, 0)
    u = uniform(hh)
    count = np.where(u < 0.3, 0, np.where(u < 0.85, 1, 2))
    first = 11067 + np.floor((harps - 1) * 0.2323).astype(np.int64)
    return harps, count, first


def _noaa_ar(sel, kw, h, t, wl):
    got = _harp_noaa(sel)
    if got is None:
        return None
    _h, count, first = got
    return Column("int", np.where(count > 0, first, 0), len(sel))


def _noaa_num(sel, kw, h, t, wl):
    got = _harp_noaa(sel)
    if got is None:
        return None
    return Column("int", got[1], len(sel))


def _noaa_ars(sel, kw, h, t, wl):
    got = _harp_noaa(sel)
    if got is None:
        return None
    _h, count, first = got
    out = []
    for c, f in zip(count.tolist(), first.tolist()):
        out.append("" if c == 0 else ",".join(str(f + i) for i in range(c)))
    return Column("str", out, len(sel))


def _harp_geom(sel, kw, h, t, wl):
    got = _harp_position(sel)
    if got is None:
        return None
    lat, lon, size = got
    upper = kw.name.upper()
    v = {"LAT_MIN": lat - size / 2, "LAT_MAX": lat + size / 2, "LAT_FWT": lat,
         "LON_MIN": lon - size, "LON_MAX": lon + size, "LON_FWT": lon}.get(upper)
    if v is None:
        return None
    return Column("float", v, len(sel), decimals=6)


def splitmix_like(h: np.ndarray) -> np.ndarray:
    return record_hash(0x5EED, h.astype(np.int64) if h.dtype != np.uint64 else h.view(np.int64), 1)


def _t_frst(sel, kw, h, t, wl):
    base = sel.base()
    if "_harp_born" not in base:
        return None
    v = base["_harp_born"] if kw.name.upper() == "T_FRST" else base["_harp_last"]
    return Column("time", v, len(sel), zone=kw.zone, precision=0)


# -- WCS: full-disk images (HPLN/HPLT-TAN), SHARP CCD cut-outs (the same, CRPIX the disk centre
# relative to the patch), SHARP CEA patches (CRLN/CRLT-CEA in degrees, centred on the patch)
def _projection(sel) -> str:
    ctype = sel.sdef.keyword("CTYPE1")
    if ctype is not None and ctype.defval.upper().endswith("-CEA"):
        return "cea"
    return "patch" if "harpnum" in sel.base() else "disk"


def _plate_scale(sel) -> np.ndarray:
    """CDELT1 = CDELT2 per record: AIA ~0.6 arcsec, HMI ~0.504 arcsec, CEA 0.03 degrees."""
    if _projection(sel) == "cea":
        return np.full(len(sel), 0.03)
    nominal = 0.600165 if sel.sdef.name.lower().startswith("aia") else 0.504310
    return nominal + (uniform(_kw_hash(sel, "CDELT")) - 0.5) * 1e-5


def _cdelt(sel, kw, h, t, wl):
    return Column("float", _plate_scale(sel), len(sel), decimals=6)


def _harp_position(sel) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(Stonyhurst latitude, longitude, size in degrees) of each record's HARP, or None."""
    harps = sel.base().get("harpnum")
    if harps is None:
        return None
    hh = record_hash(name_key("harp-lat"), harps, 0)
    lat = (uniform(hh) - 0.5) * 60.0
    lon = -75.0 + 13.2 * (sel.base()["_time"] - sel.base()["_harp_born"]) / 86400.0
    return lat, lon, 3.0 + 8.0 * uniform(splitmix_like(hh))


def _crpix(sel, kw, h, t, wl):
    axis = 0 if kw.name.upper().endswith("1") else 1
    kind = _projection(sel)
    if kind == "disk":
        v = 2048.5 + (uniform(h) - 0.5) * 30.0
    elif kind == "cea":  # the patch centre: half the patch's pixels (longitude span 2x size, latitude 1x)
        _lat, _lon, size = _harp_position(sel)
        v = (np.rint(size * (2.0 - axis) / 0.03) + 1.0) / 2.0
    else:  # the disk centre seen from the patch's lower-left corner (the CCD is upside down: CROTA2 ~180)
        lat, lon, size = _harp_position(sel)
        radius = _rsun_obs_values(sel, t) / _plate_scale(sel)
        offset = radius * (np.cos(np.radians(lat)) * np.sin(np.radians(lon)) if axis == 0 else np.sin(np.radians(lat)))
        half = size / 2.0 * (2.0 - axis) * np.pi / 180.0 * radius
        v = half + offset + (uniform(h) - 0.5) * 2.0
    return Column("float", v, len(sel), decimals=6)


def _crval(sel, kw, h, t, wl):
    n = len(sel)
    if _projection(sel) != "cea":  # helioprojective: the reference pixel is the disk centre, (0, 0)
        return Column("float", np.zeros(n), n, decimals=6)
    lat, lon, _size = _harp_position(sel)
    if kw.name.upper().endswith("2"):
        return Column("float", lat, n, decimals=6)
    carr = _crln_values(t) + lon
    return Column("float", np.where(carr >= 360.0, carr - 360.0, carr), n, decimals=6)


def _crota2(sel, kw, h, t, wl):
    if _projection(sel) == "cea":  # CEA maps are drawn north up
        return Column("float", np.zeros(len(sel)), len(sel), decimals=6)
    aia = sel.sdef.name.lower().startswith("aia")
    v = (-0.13 if aia else 180.08) + (uniform(h) - 0.5) * 0.01
    return Column("float", v, len(sel), decimals=6)


_WCS_STRINGS = {"CTYPE1": "HPLN-TAN", "CTYPE2": "HPLT-TAN", "CUNIT1": "arcsec", "CUNIT2": "arcsec"}


def _wcs_string(sel, kw, h, t, wl):
    if kw.defval:  # a constant of the series (HMI, SHARP) prints its own default
        return None
    return Column("str", None, len(sel), const=_WCS_STRINGS[kw.name.upper()])


def _usflux(sel, kw, h, t, wl):
    return Column("float", 1e21 * (1.0 + 20.0 * uniform(h)), len(sel), decimals=3, sci=True)


_NAMED = {
    "QUALITY": _quality, "QUALLEV0": _quality, "QUALLEV1": _quality,
    "T_OBS": _t_obs, "DATE__OBS": _date_obs, "DATE": _date, "EXPTIME": _exptime,
    "CAMERA": _camera, "INSTRUME": _instrume, "WAVELNTH": _wavelnth, "WAVE_STR": _wave_str, "FSN": _fsn,
    "CAR_ROT": _car_rot, "CRLN_OBS": _crln_obs, "CRLT_OBS": _crlt_obs, "HGLT_OBS": _crlt_obs,
    "DSUN_OBS": _dsun_obs, "RSUN_OBS": _rsun_obs,
    "TOTVALS": _totvals, "DATAVALS": _missvals, "MISSVALS": _missvals,
    "NOAA_AR": _noaa_ar, "NOAA_NUM": _noaa_num, "NOAA_ARS": _noaa_ars,
    "LAT_MIN": _harp_geom, "LAT_MAX": _harp_geom, "LAT_FWT": _harp_geom,
    "LON_MIN": _harp_geom, "LON_MAX": _harp_geom, "LON_FWT": _harp_geom,
    "T_FRST": _t_frst, "T_LAST": _t_frst,
    "CDELT1": _cdelt, "CDELT2": _cdelt, "CRPIX1": _crpix, "CRPIX2": _crpix, "CROTA2": _crota2,
    "CRVAL1": _crval, "CRVAL2": _crval, "CTYPE1": _wcs_string, "CTYPE2": _wcs_string,
    "CUNIT1": _wcs_string, "CUNIT2": _wcs_string, "R_SUN": _r_sun, "HGLN_OBS": _hgln_obs,
    "USFLUX": _usflux,
}
for _name in ("DATAMEAN", "DATAMEDN", "DATARMS", "DATAMIN", "DATAMAX", "DATASKEW", "DATAKURT",
              "DATAMEA2", "DATAMED2", "DATARMS2", "DATAMIN2", "DATAMAX2", "DATASKE2", "DATAKUR2"):
    _NAMED[_name] = _datastat


def primekey_strings(world: World, sdef: SeriesDef, ordinals: np.ndarray) -> list[list[str]]:
    sel = Selection(world, sdef, ordinals, world.latest_versions(sdef, ordinals))
    return sel.primekey_strings()


def typed_record(sel: Selection, i: int, names: Iterable[str] | None = None) -> dict[str, Any]:
    """Typed keyword values of record ``i`` (time keywords as internal seconds), for file headers."""
    one = sel.take(np.array([i]))
    out = {}
    for kw in sel.sdef.keywords:
        if names is not None and kw.name not in names:
            continue
        if kw.hidden:
            continue
        col = one.column(kw.name)
        if col.const is not None:
            out[kw.name] = col.const
        elif col.kind == "str":
            out[kw.name] = col.values[0]
        else:
            v = np.asarray(col.values)[0]
            out[kw.name] = v.item() if hasattr(v, "item") else v
    return out
