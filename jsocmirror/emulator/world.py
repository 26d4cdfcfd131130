"""The emulator's world: which records exist now, and what each record's keywords are.

Nothing about a series is stored. Every record has an **ordinal** within its series, a pure
function of its prime keys (``model.ordinals`` / ``model.keys_of``), and its keywords are a pure
function of (series, ordinal, version), computed with vectorised 64-bit hashing (splitmix64) over
numpy arrays, so the same query answers the same everywhere and costs memory proportional to
the answer, not the series. Ordinals grow with time, so RECNUM and SUNUM grow with time too.

Three population models cover the emulated series (chosen from the definition's ``emulator``
hints, docs/series.md):

* ``grid``: a slotted time key times fixed value lists for the other prime keys
  (hmi.M_45s: T_REC x CAMERA [2]; aia.lev1_euv_12s: T_REC x WAVELNTH [94..335]);
* ``harp``: HARPNUM x T_REC where HARPs are born ~``per_day`` times a day and live 1-14 days;
* ``fsn``: aia.lev1, one record per camera frame (8 frames per 12 s), T_REC = T_OBS to the second.

The world changes (``advance``, ``next_night``, ``reprocess``, ``delete``). Only mutated records
are stored: a reprocessed record keeps its ordinal and gets a new version with a RECNUM above
the series' maximum at that moment; records created later get RECNUMs above those. The state
(clock, seed, mutation log) lives in ``<state_dir>/world.json``, written atomically and re-read
when another process changes it, so CLI commands and a running server share one world.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from jsocmirror import drmstime, recordset
from jsocmirror.errors import RecordSetError
from jsocmirror.lock import wait_for_file_lock
from jsocmirror.series import SeriesDef, SeriesRegistry

log = logging.getLogger("jsocmirror.emulator.world")

DEFAULT_NOW = drmstime.parse_time("2024.07.01_00:00:00_TAI")
DAY = 86400.0
STATE_FILE = "world.json"
STATE_FORMAT = 1

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


class WorldError(ValueError):
    """A world control that names a series or record the world does not have."""


# ------------------------------------------------------------------------------------------------
# hashing
# ------------------------------------------------------------------------------------------------
def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser on a uint64 array (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def name_key(*parts: Any) -> int:
    """A stable 64-bit key for names (crc32 is stable across processes, unlike hash())."""
    text = "\x1f".join(str(p).lower() for p in parts).encode()
    return (zlib.crc32(text) << 32) | zlib.crc32(text[::-1])


def record_hash(key: int, ordinals: np.ndarray, versions: np.ndarray | int = 0) -> np.ndarray:
    """uint64 hash of (key, ordinal, version) per record."""
    o = np.asarray(ordinals).astype(np.uint64)
    v = np.asarray(versions).astype(np.uint64)
    with np.errstate(over="ignore"):
        return splitmix64(splitmix64(o ^ np.uint64(key & 0xFFFFFFFFFFFFFFFF)) + v * np.uint64(0x632BE59BD9B4E019))


def uniform(h: np.ndarray) -> np.ndarray:
    """Floats in [0, 1) from hashes."""
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def normal(h: np.ndarray) -> np.ndarray:
    """Roughly standard normal values from hashes (sum of 4 uniforms, cheap and bounded)."""
    parts = [uniform(splitmix64(h + np.uint64(i))) for i in range(4)]
    return (sum(parts) - 2.0) * math.sqrt(3.0)


def sums_dir(sunum: int, slot: int = 0) -> str:
    """``/SUM<n>/D<sunum>/S<slot:05d>`` (the same partitioning as files.sums_dir)."""
    return f"/SUM{sunum % 100 + 1}/D{sunum}/S{slot:05d}"


# ------------------------------------------------------------------------------------------------
# constraints: what a record-set filter asks of one prime key, in the key's own value space
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Interval:
    """Values lo..hi (inclusive) taking every ``step``-th from lo; on slotted keys in slot indices."""

    lo: int
    hi: int
    step: int = 1


ANY = None  # no constraint on a key


def intervals_to_array(items: Iterable[Interval], lo: int, hi: int, cap: int) -> np.ndarray:
    """Sorted unique values of the intervals clipped to [lo, hi]; TooManyRecords above cap."""
    arrays = []
    total = 0
    for it in items:
        step = max(1, it.step)
        a = it.lo
        if a < lo:  # keep the step phase of the interval
            a = it.lo + ((lo - it.lo + step - 1) // step) * step
        b = min(it.hi, hi)
        if a > b:
            continue
        count = (b - a) // step + 1
        total += count
        if total > cap:
            raise TooManyRecords(total)
        arrays.append(np.arange(a, b + 1, step, dtype=np.int64))
    if not arrays:
        return np.empty(0, dtype=np.int64)
    out = np.concatenate(arrays)
    if len(arrays) > 1:
        out = np.unique(out)
    return out


class TooManyRecords(Exception):
    def __init__(self, count: int):
        super().__init__(count)
        self.count = count


# ------------------------------------------------------------------------------------------------
# population models
# ------------------------------------------------------------------------------------------------
class Model:
    """Maps prime keys <-> ordinals for one series and says which ordinals exist at a time."""

    kind = "base"

    def __init__(self, sdef: SeriesDef):
        self.sdef = sdef
        self.hints = sdef.emulator or {}
        self.key = name_key("series", sdef.name)
        first = self.hints.get("first_time") or "2010.05.01_00:00:00_TAI"
        self.first_time = drmstime.parse_time(first)

    # the time axis of records: seconds of the primary time (T_REC), per ordinal
    def ordinal_limit(self, now: float) -> int:
        """Ordinals 0..limit-1 may exist at ``now`` (subject to per-model gaps)."""
        raise NotImplementedError

    def enumerate(self, constraints: dict[str, list], now: float, cap: int) -> np.ndarray:
        """Existing ordinals (version ignored) matching per-key constraints, in prime-key order."""
        raise NotImplementedError

    def exists(self, ordinals: np.ndarray, now: float) -> np.ndarray:
        return (ordinals >= 0) & (ordinals < self.ordinal_limit(now))

    def base_columns(self, ordinals: np.ndarray) -> dict[str, np.ndarray]:
        """Prime-key values (ints / internal times) plus ``_time`` (the record's nominal time)."""
        raise NotImplementedError


class GridModel(Model):
    """One slotted (or counted) axis key times value lists for the other prime keys."""

    kind = "grid"

    def __init__(self, sdef: SeriesDef):
        super().__init__(sdef)
        values = {k.lower(): v for k, v in (self.hints.get("pk_values") or {}).items()}
        self.axis_key: str | None = None
        self.lane_keys: list[str] = []
        self.lane_values: list[np.ndarray] = []
        for key in sdef.primekeys:
            kw = sdef.keyword(key)
            if self.axis_key is None and sdef.slotting(key) is not None:
                self.axis_key = kw.name
            else:
                vals = values.get(key.lower())
                if vals is None:
                    vals = [1]
                self.lane_keys.append(kw.name)
                self.lane_values.append(np.asarray(vals, dtype=np.int64))
        self.slotting = sdef.slotting(self.axis_key) if self.axis_key else None
        self.offset = float(self.hints.get("trec_offset", 0.0))
        # a series made from another's records (aia.lev1_euv_12s from aia.lev1 frames) has a slot
        # only once the frames it links to exist
        self.lag = float(self.hints.get("head_lag_seconds", 0.0))
        if self.slotting is not None:
            self.first_slot = self.slotting.index(self.first_time - self.offset)
        else:
            self.first_slot = 1
        self.cadence = float(self.hints.get("cadence_seconds", self.slotting.step if self.slotting else DAY))
        self.lanes = int(np.prod([len(v) for v in self.lane_values])) if self.lane_values else 1
        # lane index -> value per lane key (cartesian product, first lane key slowest)
        grids = np.meshgrid(*self.lane_values, indexing="ij") if self.lane_values else []
        self.lane_table = [g.ravel() for g in grids]
        self.axis_first = self.sdef.primekeys[0].lower() == (self.axis_key or "").lower()

    def slot_time(self, slots: np.ndarray) -> np.ndarray:
        if self.slotting is None:
            return self.first_time + (slots - self.first_slot) * self.cadence
        return self.slotting.epoch + slots * self.slotting.step + self.offset

    def head_slot(self, now: float) -> int:
        now -= self.lag
        if self.slotting is None:
            return self.first_slot + int(math.floor((now - self.first_time) / self.cadence + 1e-9))
        return int(math.floor((now - self.offset - self.slotting.epoch) / self.slotting.step + 1e-9))

    def ordinal_limit(self, now: float) -> int:
        return max(0, self.head_slot(now) - self.first_slot + 1) * self.lanes

    def enumerate(self, constraints, now, cap):
        head = self.head_slot(now)
        axis_items = constraints.get(self.axis_key.lower()) if self.axis_key else None
        if axis_items is None:
            axis_items = [Interval(self.first_slot, head)]
        lane_mask = np.ones(self.lanes, dtype=bool)
        for key, table in zip(self.lane_keys, self.lane_table):
            items = constraints.get(key.lower())
            if items is not None:
                lane_mask &= _in_intervals(table, items)
        lanes = np.nonzero(lane_mask)[0].astype(np.int64)
        if len(lanes) == 0:
            return np.empty(0, dtype=np.int64)
        slots = intervals_to_array(axis_items, self.first_slot, head, max(1, cap // len(lanes)) + 1)
        if len(slots) * len(lanes) > cap:
            raise TooManyRecords(len(slots) * len(lanes))
        ords = ((slots - self.first_slot)[:, None] * self.lanes + lanes[None, :]).ravel()
        if not self.axis_first and len(lanes) > 1:
            ords = self._sort_by_primekeys(ords)
        return ords

    def _sort_by_primekeys(self, ords: np.ndarray) -> np.ndarray:
        cols = self.base_columns(ords)
        order = np.lexsort([cols[k.lower()] for k in reversed(self.sdef.primekeys)])
        return ords[order]

    def base_columns(self, ordinals):
        slots = self.first_slot + ordinals // self.lanes
        lane = ordinals % self.lanes
        cols = {"_slot": slots, "_lane": lane, "_time": self.slot_time(slots)}
        if self.axis_key:
            cols[self.axis_key.lower()] = cols["_time"] if self.slotting is not None and \
                self.sdef.keyword(self.axis_key).is_time else slots
        for key, table in zip(self.lane_keys, self.lane_table):
            cols[key.lower()] = table[lane]
        return cols

    def ordinals_of(self, values: dict[str, Any]) -> int | None:
        """The ordinal of one record given its prime-key values (internal times for time keys)."""
        slot = self.slotting.index(values[self.axis_key.lower()] - self.offset) if self.slotting else \
            int(values[self.axis_key.lower()])
        lane = 0
        for key, vals in zip(self.lane_keys, self.lane_values):
            hit = np.nonzero(vals == int(values[key.lower()]))[0]
            if len(hit) == 0:
                return None
            lane = lane * len(vals) + int(hit[0])
        return (slot - self.first_slot) * self.lanes + lane


def _in_intervals(values: np.ndarray, items: list[Interval]) -> np.ndarray:
    mask = np.zeros(len(values), dtype=bool)
    for it in items:
        m = (values >= it.lo) & (values <= it.hi)
        if it.step > 1:
            m &= (values - it.lo) % it.step == 0
        mask |= m
    return mask


class HarpModel(Model):
    """HARPNUM x T_REC: each HARP lives over a run of slots; ordinal = slot-major, lane = HARP % lanes."""

    kind = "harp"

    def __init__(self, sdef: SeriesDef):
        super().__init__(sdef)
        h = self.hints.get("harps") or {}
        self.harp_key = sdef.primekeys[0]
        self.time_key = next(k for k in sdef.primekeys if sdef.slotting(k) is not None)
        self.slotting = sdef.slotting(self.time_key)
        step = self.slotting.step
        self.first_harp = int(h.get("first", 1))
        self.spacing = DAY / float(h.get("per_day", 2.2)) / step  # slots between births
        life = h.get("lifetime_days", [1, 14])
        self.life_min = max(1, int(life[0] * DAY / step))
        self.life_max = max(self.life_min + 1, int(life[1] * DAY / step))
        self.lanes = int(math.ceil(self.life_max / self.spacing)) + 2
        self.first_slot = self.slotting.index(self.first_time)
        self.harp_seed = name_key("harps", sdef.name.split("_")[0] if "sharp" in sdef.name.lower() else sdef.name)

    def _births(self, harps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(first slot, slot after the last) per HARP number; shared by sharp and sharp_cea."""
        n = harps - self.first_harp
        u = uniform(record_hash(self.harp_seed, harps, 0))
        born = self.first_slot + np.floor((n + 0.9 * u) * self.spacing).astype(np.int64)
        life = self.life_min + np.floor(uniform(record_hash(self.harp_seed ^ 1, harps, 0)) *
                                        (self.life_max - self.life_min)).astype(np.int64)
        return born, born + life

    def head_slot(self, now: float) -> int:
        return self.slotting.index_floor(now) if hasattr(self.slotting, "index_floor") else \
            int(math.floor((now - self.slotting.epoch) / self.slotting.step + 1e-9))

    def last_harp(self, head: int) -> int:
        """Highest HARP number born at or before slot ``head``."""
        n = self.first_harp + int((head - self.first_slot) / self.spacing) + 1
        while n >= self.first_harp and self._births(np.array([n]))[0][0] > head:
            n -= 1
        return n

    def ordinal_limit(self, now):
        return max(0, self.head_slot(now) - self.first_slot + 1) * self.lanes

    def enumerate(self, constraints, now, cap):
        head = self.head_slot(now)
        last = self.last_harp(head)
        if last < self.first_harp:
            return np.empty(0, dtype=np.int64)
        time_items = constraints.get(self.time_key.lower())
        harp_items = constraints.get(self.harp_key.lower())
        if harp_items is None:
            harps = np.arange(self.first_harp, last + 1, dtype=np.int64)
        else:
            harps = intervals_to_array(harp_items, self.first_harp, last, cap + 1)
        born, dies = self._births(harps)
        if time_items is not None:
            lo = min(it.lo for it in time_items)
            hi = max(it.hi for it in time_items)
            keep = (born <= hi) & (dies > lo)
            harps, born, dies = harps[keep], born[keep], dies[keep]
        out = []
        total = 0
        for harp, b, d in zip(harps.tolist(), born.tolist(), dies.tolist()):
            d = min(d - 1, head)
            if d < b:
                continue
            items = time_items if time_items is not None else [Interval(b, d)]
            slots = intervals_to_array(items, b, d, cap + 1 - total)
            total += len(slots)
            if total > cap:
                raise TooManyRecords(total)
            out.append((slots - self.first_slot) * self.lanes + harp % self.lanes)
        return np.concatenate(out) if out else np.empty(0, dtype=np.int64)

    def harps_of(self, ordinals: np.ndarray) -> np.ndarray:
        slots = self.first_slot + ordinals // self.lanes
        lane = ordinals % self.lanes
        est = self.first_harp + np.floor((slots - self.first_slot) / self.spacing).astype(np.int64)
        # the HARP alive in this lane is among the last `lanes` born before the slot
        base = est - ((est - lane) % self.lanes)
        result = np.full(len(ordinals), -1, dtype=np.int64)
        for back in range(0, 3):
            cand = base - back * self.lanes
            born, dies = self._births(cand)
            ok = (result < 0) & (cand >= self.first_harp) & (born <= slots) & (dies > slots)
            result[ok] = cand[ok]
        cand = base + self.lanes
        born, dies = self._births(cand)
        ok = (result < 0) & (born <= slots) & (dies > slots)
        result[ok] = cand[ok]
        return result

    def exists(self, ordinals, now):
        ok = super().exists(ordinals, now)
        return ok & (self.harps_of(np.where(ok, ordinals, 0)) >= 0)

    def base_columns(self, ordinals):
        slots = self.first_slot + ordinals // self.lanes
        harps = self.harps_of(ordinals)
        t = self.slotting.epoch + slots * self.slotting.step
        born, dies = self._births(np.maximum(harps, self.first_harp))
        return {"_slot": slots, "_time": t, self.time_key.lower(): t, self.harp_key.lower(): harps,
                "_harp_born": self.slotting.epoch + born * self.slotting.step,
                "_harp_last": self.slotting.epoch + (dies - 1) * self.slotting.step}

    def ordinals_of(self, values):
        harp = int(values[self.harp_key.lower()])
        slot = self.slotting.index(values[self.time_key.lower()])
        born, dies = self._births(np.array([harp]))
        if not (born[0] <= slot < dies[0]):
            return None
        return (slot - self.first_slot) * self.lanes + harp % self.lanes


class FsnModel(Model):
    """aia.lev1: frame k has FSN first+k; 8 frames per 12 s group (7 EUV bands + 1600/1700 alternating)."""

    kind = "fsn"
    EUV = (94, 131, 171, 193, 211, 304, 335)

    def __init__(self, sdef: SeriesDef):
        super().__init__(sdef)
        fsn = self.hints.get("fsn") or {}
        self.fsn_first = int(fsn.get("first", 1000000))
        # group times sit on the 24 s TAI grid so euv_12s/uv_24s slots map onto whole groups
        self.g0 = math.ceil(self.first_time / 24.0) * 24.0
        keys = [k.lower() for k in sdef.primekeys]
        self.time_key = sdef.primekeys[0]
        self.fsn_key = next((k for k in sdef.primekeys if k.lower() == "fsn"), sdef.primekeys[-1])
        self._keys = keys

    def frame_wavelength(self, k: np.ndarray) -> np.ndarray:
        pos = k % 8
        euv = np.asarray(self.EUV + (0,), dtype=np.int64)[pos]
        uv = np.where((k // 8) % 2 == 0, 1600, 1700)
        return np.where(pos == 7, uv, euv)

    def t_obs(self, k: np.ndarray) -> np.ndarray:
        g, pos = k // 8, k % 8
        jitter = uniform(record_hash(self.key, k, 0)) * 0.05
        return self.g0 + 12.0 * g + 6.5 + 0.6 * pos + jitter

    def t_rec(self, k: np.ndarray) -> np.ndarray:
        return np.floor(self.t_obs(k) + 0.5)

    def ordinal_limit(self, now):
        # frames whose T_REC is <= now
        if now < self.g0:
            return 0
        est = int((now - self.g0) / 12.0 * 8) + 16
        ks = np.arange(max(0, est - 40), est + 1, dtype=np.int64)
        ok = ks[self.t_rec(ks) <= now]
        return int(ok[-1]) + 1 if len(ok) else 0

    def _k_at_or_after(self, t: float) -> int:
        est = max(0, int((t - self.g0 - 12.0) / 12.0 * 8))
        ks = np.arange(est, est + 48, dtype=np.int64)
        hit = np.nonzero(self.t_rec(ks) >= t)[0]
        return int(ks[hit[0]]) if len(hit) else est + 48

    def enumerate(self, constraints, now, cap):
        limit = self.ordinal_limit(now)
        lo, hi = 0, limit - 1
        time_items = constraints.get(self.time_key.lower())
        fsn_items = constraints.get(self.fsn_key.lower())
        pieces = []
        if time_items is not None:
            sl = self.sdef.slotting(self.time_key)
            for it in time_items:
                t_lo = sl.epoch + it.lo * sl.step
                t_hi = sl.epoch + it.hi * sl.step
                a, b = max(lo, self._k_at_or_after(t_lo)), min(hi, self._k_at_or_after(t_hi + sl.step) - 1)
                if a <= b:
                    if (b - a + 1) > cap:
                        raise TooManyRecords(b - a + 1)
                    ks = np.arange(a, b + 1, dtype=np.int64)
                    if it.step > 1:
                        slots = np.round((self.t_rec(ks) - sl.epoch) / sl.step).astype(np.int64)
                        ks = ks[(slots - it.lo) % it.step == 0]
                    pieces.append(ks)
            ks = np.unique(np.concatenate(pieces)) if pieces else np.empty(0, dtype=np.int64)
        else:
            ks = None
        if fsn_items is not None:
            fs = intervals_to_array(fsn_items, self.fsn_first + lo, self.fsn_first + hi, cap + 1) - self.fsn_first
            ks = fs if ks is None else np.intersect1d(ks, fs)
        if ks is None:
            if limit > cap:
                raise TooManyRecords(limit)
            ks = np.arange(0, limit, dtype=np.int64)
        return ks

    def base_columns(self, ordinals):
        t_obs = self.t_obs(ordinals)
        t = np.floor(t_obs + 0.5)
        return {"_time": t, "_t_obs": t_obs, self.time_key.lower(): t, self.fsn_key.lower(): self.fsn_first + ordinals,
                "_wavelnth": self.frame_wavelength(ordinals)}

    def ordinals_of(self, values):
        k = int(values[self.fsn_key.lower()]) - self.fsn_first
        if k < 0:
            return None
        if self.time_key.lower() in values and abs(self.t_rec(np.array([k]))[0] - values[self.time_key.lower()]) > 0.5:
            return None
        return k

    def group_ordinal(self, t: np.ndarray, wavelengths: np.ndarray) -> np.ndarray:
        """The frame (ordinal) of a band in the 12 s group starting at TAI ``t`` (euv/uv links)."""
        g = np.floor((t - self.g0) / 12.0 + 1e-6).astype(np.int64)
        pos = np.full(len(g), 7, dtype=np.int64)
        for i, w in enumerate(self.EUV):
            pos[wavelengths == w] = i
        g = np.where((wavelengths == 1700) & (g % 2 == 0), g + 1, g)
        g = np.where((wavelengths == 1600) & (g % 2 == 1), g - 1, g)
        return g * 8 + pos


def make_model(sdef: SeriesDef) -> Model:
    hints = sdef.emulator or {}
    kind = hints.get("model")
    if kind == "harp" or (kind is None and "harps" in hints):
        return HarpModel(sdef)
    if kind == "fsn" or (kind is None and "fsn" in hints):
        return FsnModel(sdef)
    return GridModel(sdef)


# ------------------------------------------------------------------------------------------------
# mutation log
# ------------------------------------------------------------------------------------------------
@dataclass
class SeriesLog:
    """Mutations of one series. ``events``: (head ordinal, recnums allocated, units allocated)."""

    events: list[list[int]] = field(default_factory=list)
    #: ordinal -> list of versions 1..k, each [recnum, sunum, slot, processed_time]
    versions: dict[int, list[list[float]]] = field(default_factory=dict)
    #: ordinal -> deletion time
    deleted: dict[int, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"events": self.events,
                "versions": {str(k): v for k, v in self.versions.items()},
                "deleted": {str(k): v for k, v in self.deleted.items()}}

    @classmethod
    def from_json(cls, d: dict) -> SeriesLog:
        return cls(events=[list(e) for e in d.get("events", [])],
                   versions={int(k): v for k, v in d.get("versions", {}).items()},
                   deleted={int(k): v for k, v in d.get("deleted", {}).items()})


# ------------------------------------------------------------------------------------------------
# the world
# ------------------------------------------------------------------------------------------------
class World:
    """Records of every series at the emulator clock ``now`` (internal DRMS seconds, TAI)."""

    SUNUM_BLOCK = 10**9  # sunums of one series; aia.lev1_euv_12s (unitsize 1) needs ~3e8 units
    #: share of the existing records next_night() reprocesses / deletes, per series (at most these many)
    NIGHT_REPROCESS = 25
    NIGHT_DELETE = 5

    def __init__(self, registry: SeriesRegistry, state_dir: str | Path | None = None, seed: int = 0,
                 now: float | None = None):
        self.registry = registry
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self._lock = threading.RLock()
        self._models: dict[str, Model] = {}
        self._mtime: float | None = None
        self.seed = seed
        self._now = DEFAULT_NOW if now is None else float(now)
        self.nights = 0
        self.logs: dict[str, SeriesLog] = {}
        if self.state_dir is not None:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            if self._state_path.exists():
                self._load()
                if now is not None:
                    self._now = float(now)
            else:
                self._save()
        self._build_indexes()

    # -- state ---------------------------------------------------------------------------------
    @property
    def _state_path(self) -> Path:
        return self.state_dir / STATE_FILE  # type: ignore[operator]

    def _load(self) -> None:
        path = self._state_path
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            mtime = path.stat().st_mtime_ns
            seed = int(data.get("seed", self.seed))
            now = float(data.get("now", DEFAULT_NOW))
            nights = int(data.get("nights", 0))
            logs = {k.lower(): SeriesLog.from_json(v) for k, v in data.get("series", {}).items()}
        except (OSError, ValueError, TypeError, AttributeError, KeyError) as exc:
            raise WorldError(f"emulator state {path} is unreadable ({exc}); remove it to start a fresh world") from None
        self._mtime, self.seed, self._now, self.nights, self.logs = mtime, seed, now, nights, logs
        self._build_indexes()

    def _save(self) -> None:
        if self.state_dir is None:
            return
        data = {"format": STATE_FORMAT, "seed": self.seed, "now": self._now,
                "now_text": drmstime.format_time(self._now, "TAI"), "nights": self.nights,
                "series": {k: v.to_json() for k, v in sorted(self.logs.items())
                           if v.events or v.versions or v.deleted}}
        tmp = self._state_path.with_suffix(f".tmp{os.getpid()}.{threading.get_ident()}")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self._state_path)
        self._mtime = self._state_path.stat().st_mtime_ns

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """One mutation at a time: across threads, and across processes sharing the state dir."""
        with self._lock:
            if self.state_dir is None:
                yield
                return
            with wait_for_file_lock(self.state_dir / "world.lock"):
                yield

    def refresh(self) -> None:
        """Re-read the state if another process changed it (called per request)."""
        if self.state_dir is None:
            return
        try:
            mtime = self._state_path.stat().st_mtime_ns
        except FileNotFoundError:
            return
        if mtime != self._mtime:
            with self._lock:
                self._load()

    def _build_indexes(self) -> None:
        # reverse maps of stored versions: recnum -> (ordinal, version), sunum -> [(ordinal, version)]
        self._recnum_index: dict[str, dict[int, tuple[int, int]]] = {}
        self._sunum_index: dict[str, dict[int, list[tuple[int, int, int]]]] = {}
        for name, lg in self.logs.items():
            rmap: dict[int, tuple[int, int]] = {}
            smap: dict[int, list[tuple[int, int, int]]] = {}
            for ordinal, versions in lg.versions.items():
                for i, (recnum, sunum, slot, _t) in enumerate(versions):
                    rmap[int(recnum)] = (ordinal, i + 1)
                    smap.setdefault(int(sunum), []).append((ordinal, i + 1, int(slot)))
            self._recnum_index[name] = rmap
            self._sunum_index[name] = smap

    # -- series --------------------------------------------------------------------------------
    def series(self, name: str) -> SeriesDef | None:
        return self.registry.get(name)

    def model(self, sdef: SeriesDef) -> Model:
        model = self._models.get(sdef.name.lower())
        if model is None:
            model = self._models[sdef.name.lower()] = make_model(sdef)
        return model

    def log_of(self, sdef: SeriesDef) -> SeriesLog:
        return self.logs.get(sdef.name.lower()) or SeriesLog()

    def recnum_base(self, sdef: SeriesDef) -> int:
        return int((sdef.emulator or {}).get("first_recnum", 1_000_000 + name_key(sdef.name) % 1_000_000))

    def sunum_base(self, sdef: SeriesDef) -> int:
        hint = (sdef.emulator or {}).get("sunum_base")
        if hint is not None:
            return int(hint)
        return self._sunum_blocks()[sdef.name.lower()] * self.SUNUM_BLOCK

    def _sunum_blocks(self) -> dict[str, int]:
        """A storage-unit block per series, from its name alone (so adding a series moves no other),
        built-ins first; a rare hash collision takes the next free block."""
        if getattr(self, "_blocks", None) is None or len(self._blocks) != len(self.registry):
            from jsocmirror.series import BUILTIN_DIR

            builtin = {p.name.removesuffix(".json").lower() for p in BUILTIN_DIR.glob("*.json")}
            names = sorted(d.name.lower() for d in self.registry)
            blocks: dict[str, int] = {}
            taken: set[int] = set()
            for name in [n for n in names if n in builtin] + [n for n in names if n not in builtin]:
                block = 10 + zlib.crc32(name.encode()) % 90
                while block in taken:
                    block = 10 + (block - 9) % 90
                taken.add(block)
                blocks[name] = block
            self._blocks = blocks
        return self._blocks

    # -- clock ---------------------------------------------------------------------------------
    @property
    def now(self) -> float:
        self.refresh()
        return self._now

    @now.setter
    def now(self, value: float) -> None:
        """Set the clock; like ``advance`` it only moves forward (stored versions depend on it)."""
        with self._exclusive():
            self.refresh()
            if float(value) < self._now:
                raise WorldError(f"cannot move the clock back to {drmstime.format_time(float(value), 'TAI')} "
                                 f"(now {drmstime.format_time(self._now, 'TAI')}); start a new world instead")
            self._now = float(value)
            self._save()

    def advance(self, seconds: float) -> float:
        """Move the clock forward; new records appear at the head of every series. Returns now."""
        if seconds < 0:
            raise WorldError(f"cannot advance the clock by {seconds} s (the world only moves forward)")
        with self._exclusive():
            self.refresh()
            self._now += float(seconds)
            self._save()
            return self._now

    # -- record numbering ----------------------------------------------------------------------
    def recnums(self, sdef: SeriesDef, ordinals: np.ndarray, versions: np.ndarray | None = None) -> np.ndarray:
        """RECNUM per (ordinal, version): version 0 from the formula, later versions from the log."""
        lg = self.log_of(sdef)
        base = self.recnum_base(sdef)
        out = base + ordinals.astype(np.int64)
        if lg.events:
            heads = np.array([e[0] for e in lg.events], dtype=np.int64)
            shifts = np.cumsum([e[1] for e in lg.events]).astype(np.int64)
            idx = np.searchsorted(heads, ordinals, side="left")  # events with head < ordinal
            out = out + np.where(idx > 0, shifts[np.maximum(idx - 1, 0)], 0)
        if versions is not None and lg.versions:
            for i in np.nonzero(versions > 0)[0].tolist():
                out[i] = int(lg.versions[int(ordinals[i])][int(versions[i]) - 1][0])
        return out

    def sunums(self, sdef: SeriesDef, ordinals: np.ndarray, versions: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """(SUNUM, slot within the storage unit) per (ordinal, version)."""
        lg = self.log_of(sdef)
        unit = max(1, sdef.unitsize)
        base = self.sunum_base(sdef)
        units = ordinals.astype(np.int64) // unit
        out = base + units
        slot = ordinals.astype(np.int64) % unit
        if lg.events:
            heads = np.array([e[0] for e in lg.events], dtype=np.int64)
            shifts = np.cumsum([e[2] + 1 for e in lg.events]).astype(np.int64)
            idx = np.searchsorted(heads, ordinals, side="left")
            out = out + np.where(idx > 0, shifts[np.maximum(idx - 1, 0)], 0)
        if versions is not None and lg.versions:
            for i in np.nonzero(versions > 0)[0].tolist():
                _r, s, sl, _t = lg.versions[int(ordinals[i])][int(versions[i]) - 1]
                out[i], slot[i] = int(s), int(sl)
        return out, slot

    def max_recnum(self, sdef: SeriesDef) -> int:
        model = self.model(sdef)
        limit = model.ordinal_limit(self.now)
        top = int(self.recnums(sdef, np.array([max(limit - 1, 0)], dtype=np.int64))[0]) if limit else 0
        lg = self.log_of(sdef)
        for versions in lg.versions.values():
            for v in versions:
                top = max(top, int(v[0]))
        return top

    # -- which records exist -------------------------------------------------------------------
    def latest_versions(self, sdef: SeriesDef, ordinals: np.ndarray) -> np.ndarray:
        lg = self.log_of(sdef)
        out = np.zeros(len(ordinals), dtype=np.int64)
        if lg.versions:
            keys = np.fromiter(lg.versions.keys(), dtype=np.int64, count=len(lg.versions))
            hit = np.nonzero(np.isin(ordinals, keys))[0]
            for i in hit.tolist():
                out[i] = len(lg.versions[int(ordinals[i])])
        return out

    def drop_deleted(self, sdef: SeriesDef, ordinals: np.ndarray) -> np.ndarray:
        lg = self.log_of(sdef)
        if not lg.deleted or len(ordinals) == 0:
            return ordinals
        gone = np.fromiter(lg.deleted.keys(), dtype=np.int64, count=len(lg.deleted))
        return ordinals[~np.isin(ordinals, gone)]

    def locate_recnum(self, sdef: SeriesDef, recnum: int) -> tuple[int, int] | None:
        """(ordinal, version) of a RECNUM, or None; deleted records and superseded versions included."""
        self.refresh()
        hit = self._recnum_index.get(sdef.name.lower(), {}).get(int(recnum))
        if hit is not None:
            return hit
        lg = self.log_of(sdef)
        base = self.recnum_base(sdef)
        # version 0 of ordinals in (head of event i-1, head of event i] is shifted by events 0..i-1
        heads = [-1] + [e[0] for e in lg.events] + [None]
        shift = 0
        for i in range(len(heads) - 1):
            ordinal = int(recnum) - base - shift
            lo, hi = heads[i], heads[i + 1]
            if ordinal > lo and (hi is None or ordinal <= hi):
                if ordinal >= 0 and self.model(sdef).exists(np.array([ordinal]), self._now)[0]:
                    return ordinal, 0
                return None
            if i < len(lg.events):
                shift += lg.events[i][1]
        return None

    def locate_sunum(self, sunum: int) -> tuple[SeriesDef, list[tuple[int, int, int]]] | None:
        """The series and the (ordinal, version, slot) records of a storage unit (for file serving)."""
        self.refresh()
        for sdef in self.registry:
            base = self.sunum_base(sdef)
            if not (base <= sunum < base + self.SUNUM_BLOCK):
                continue
            stored = self._sunum_index.get(sdef.name.lower(), {}).get(int(sunum))
            if stored:
                return sdef, list(stored)
            lg = self.log_of(sdef)
            unit = max(1, sdef.unitsize)
            cumulative = [0]
            for e in lg.events:
                cumulative.append(cumulative[-1] + e[2] + 1)
            bounds = [-1] + [e[0] for e in lg.events] + [None]
            for i in range(len(bounds) - 1):
                u = sunum - base - cumulative[i]
                ords = np.arange(u * unit, (u + 1) * unit, dtype=np.int64)
                lo, hi = bounds[i], bounds[i + 1]
                keep = ords > lo
                if hi is not None:
                    keep &= ords <= hi
                ords = ords[keep]
                if len(ords) == 0:
                    continue
                model = self.model(sdef)
                ords = ords[model.exists(ords, self._now)]
                ords = self.drop_deleted(sdef, ords)
                vers = self.latest_versions(sdef, ords)
                recs = [(int(o), 0, int(o % unit)) for o, v in zip(ords.tolist(), vers.tolist())]
                if recs:
                    return sdef, recs
            return None
        return None

    # -- mutations -----------------------------------------------------------------------------
    def _require(self, series: str) -> SeriesDef:
        sdef = self.series(series)
        if sdef is None:
            raise WorldError(f"unknown series {series!r} (known: {', '.join(self.registry.names())})")
        return sdef

    def ordinal_of_key(self, sdef: SeriesDef, record_key: str) -> int:
        """The ordinal of an existing record named by its record key (``[2012.01.01_00:00:45_TAI][2]``)."""
        text = record_key.strip()
        if text.lower().startswith(sdef.name.lower()):
            text = text[len(sdef.name):]
        try:
            parts = recordset.split_record_key(text)
        except RecordSetError:
            parts = []
        if len(parts) != len(sdef.primekeys):
            raise WorldError(f"record key {record_key!r} does not name the {len(sdef.primekeys)} prime keys "
                             f"{', '.join(sdef.primekeys)} of {sdef.name} (expected e.g. [v1][v2])")
        values = {}
        for key, part in zip(sdef.primekeys, parts):
            kw = sdef.keyword(key)
            try:
                values[key.lower()] = drmstime.parse_time(part) if kw.is_time else int(float(part))
            except ValueError:
                raise WorldError(f"record key {record_key!r}: {part!r} is not a value of {key}") from None
        model = self.model(sdef)
        ordinal = model.ordinals_of(values)
        if ordinal is None or ordinal < 0 or not model.exists(np.array([ordinal]), self.now)[0]:
            raise WorldError(f"{sdef.name}{record_key} does not exist in the emulator's world")
        if ordinal in self.log_of(sdef).deleted:
            raise WorldError(f"{sdef.name}{record_key} has been deleted")
        return int(ordinal)

    def record_key(self, sdef: SeriesDef, ordinal: int) -> str:
        return self.record_keys(sdef, [ordinal])[0]

    def record_keys(self, sdef: SeriesDef, ordinals: Iterable[int]) -> list[str]:
        """Record keys (``[v1][v2]``) of ordinals, as rs_list prints their prime keys."""
        from jsocmirror.emulator.query import primekey_strings  # late: query imports world

        ords = np.asarray(list(ordinals), dtype=np.int64)
        if len(ords) == 0:
            return []
        return ["".join(f"[{v}]" for v in row) for row in primekey_strings(self, sdef, ords)]

    def _reprocess_many(self, sdef: SeriesDef, ordinals: list[int]) -> list[str]:
        """One reprocessing event: new versions with RECNUMs above the current maximum."""
        if not ordinals:
            return []
        name = sdef.name.lower()
        lg = self.logs.setdefault(name, SeriesLog())
        model = self.model(sdef)
        head = model.ordinal_limit(self._now) - 1
        unit = max(1, sdef.unitsize)
        # the first free recnum/sunum: above version 0 of the head and above every stored version
        next_recnum = int(self.recnums(sdef, np.array([head + 1], dtype=np.int64))[0])
        sunum_head, _ = self.sunums(sdef, np.array([head], dtype=np.int64))
        next_sunum = int(sunum_head[0]) + 1
        for versions in lg.versions.values():
            for v in versions:
                next_recnum = max(next_recnum, int(v[0]) + 1)
                next_sunum = max(next_sunum, int(v[1]) + 1)
        start_recnum = next_recnum
        keys = self.record_keys(sdef, ordinals)
        for i, ordinal in enumerate(ordinals):
            lg.versions.setdefault(ordinal, []).append(
                [next_recnum + i, next_sunum + i // unit, i % unit, self._now])
        n = len(ordinals)
        units = (n + unit - 1) // unit
        # records created after this event number above it
        base_next = int(self.recnums(sdef, np.array([head + 1], dtype=np.int64))[0])
        lg.events.append([head, (start_recnum + n) - base_next, units + (next_sunum - int(sunum_head[0]) - 1)])
        return keys

    def reprocess(self, series: str, record_key: str) -> str:
        """Reprocess one record now: a new version (new RECNUM, SUNUM, keywords, file content)."""
        with self._exclusive():
            self.refresh()
            sdef = self._require(series)
            ordinal = self.ordinal_of_key(sdef, record_key)
            keys = self._reprocess_many(sdef, [ordinal])
            self._build_indexes()
            self._save()
            return keys[0]

    def delete(self, series: str, record_key: str) -> str:
        """Delete one record (every version); later queries no longer return it."""
        with self._exclusive():
            self.refresh()
            sdef = self._require(series)
            ordinal = self.ordinal_of_key(sdef, record_key)
            self.logs.setdefault(sdef.name.lower(), SeriesLog()).deleted[ordinal] = self._now
            self._save()
            return self.record_key(sdef, ordinal)

    def next_night(self, seconds: float = DAY) -> dict[str, dict[str, list[str]]]:
        """Advance a day, then reprocess and delete a seeded sample of each series' records.

        Returns ``{series: {"new": [...], "reprocessed": [...], "deleted": [...]}}`` of record keys
        (``new`` is capped at 1000 keys per series; ``new_count`` in the same dict has the total).
        """
        with self._exclusive():
            self.refresh()
            before = {sdef.name: self.model(sdef).ordinal_limit(self._now) for sdef in self.registry}
            self._now += float(seconds)
            self.nights += 1
            report: dict[str, dict[str, Any]] = {}
            for sdef in self.registry:
                model = self.model(sdef)
                limit = model.ordinal_limit(self._now)
                new = np.arange(before[sdef.name], limit, dtype=np.int64)
                new = new[model.exists(new, self._now)] if len(new) else new
                entry = {"new_count": int(len(new)),
                         "new": self.record_keys(sdef, new[:1000].tolist())}
                # the sample comes from the recent past (the last 30 days), where reprocessing happens
                window = max(1, min(limit, int(30 * DAY / max(1.0, self._cadence(sdef)))))
                lo = max(0, limit - window)
                h = record_hash(name_key("night", sdef.name, self.seed, self.nights),
                                np.arange(self.NIGHT_REPROCESS * 4 + self.NIGHT_DELETE * 4, dtype=np.int64))
                picks = lo + (h % np.uint64(max(1, limit - lo))).astype(np.int64)
                picks = picks[model.exists(picks, self._now)]
                picks = self.drop_deleted(sdef, np.unique(picks))
                rng_order = np.argsort(record_hash(self.seed, picks, self.nights))
                picks = picks[rng_order]
                to_delete = sorted(picks[:self.NIGHT_DELETE].tolist())
                to_reprocess = sorted(picks[self.NIGHT_DELETE:self.NIGHT_DELETE + self.NIGHT_REPROCESS].tolist())
                entry["reprocessed"] = self._reprocess_many(sdef, to_reprocess)
                lg = self.logs.setdefault(sdef.name.lower(), SeriesLog())
                entry["deleted"] = self.record_keys(sdef, to_delete)
                for o in to_delete:
                    lg.deleted[int(o)] = self._now
                report[sdef.name] = entry
            self._build_indexes()
            self._save()
            return report

    def _cadence(self, sdef: SeriesDef) -> float:
        model = self.model(sdef)
        if isinstance(model, FsnModel):
            return 1.5
        sl = getattr(model, "slotting", None)
        lanes = getattr(model, "lanes", 1)
        return (sl.step if sl else DAY) / max(1, lanes)

    def status(self) -> dict[str, Any]:
        """Clock, nights and per-series counts (for the CLI's ``emulator status``)."""
        now = self.now
        out: dict[str, Any] = {"now": drmstime.format_time(now, "TAI"), "seed": self.seed, "nights": self.nights,
                               "state_dir": str(self.state_dir) if self.state_dir else None, "series": {}}
        for sdef in self.registry:
            lg = self.log_of(sdef)
            out["series"][sdef.name] = {
                "max_recnum": self.max_recnum(sdef),
                "reprocessed": sum(len(v) for v in lg.versions.values()),
                "deleted": len(lg.deleted),
            }
        return out
