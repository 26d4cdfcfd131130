"""Series definitions: prime keys, keywords, segments, links and slotting of a DRMS series.

A definition is the JSON that JSOC's ``jsoc_info?op=series_struct`` returns, plus a ``name``
(series_struct replies do not carry it, so the file name stands in) and, for the emulator only,
an optional ``emulator`` object of generation hints. A real series_struct reply saved as
``<series>.json`` is therefore a valid definition. The built-in ones live in ``seriesdefs/``.

Shared by the mirror (types, prime keys, slots) and the emulator (everything).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable

from jsocmirror import drmstime

BUILTIN_DIR = Path(__file__).with_name("seriesdefs")

_STEP_UNIT_SECONDS = {
    "": 1.0, "sec": 1.0, "secs": 1.0, "second": 1.0, "seconds": 1.0, "s": 1.0,
    "min": 60.0, "mins": 60.0, "minute": 60.0, "minutes": 60.0,
    "hour": 3600.0, "hours": 3600.0, "day": 86400.0, "days": 86400.0,
}

INT_TYPES = frozenset({"char", "short", "int", "longlong"})
FLOAT_TYPES = frozenset({"float", "double"})


@dataclass(frozen=True)
class Keyword:
    name: str
    type: str
    recscope: str = "variable"
    defval: str = ""
    units: str = "none"
    note: str = ""
    linkinfo: str | None = None

    @property
    def is_time(self) -> bool:
        return self.type == "time"

    @property
    def is_int(self) -> bool:
        return self.type in INT_TYPES

    @property
    def is_float(self) -> bool:
        return self.type in FLOAT_TYPES

    @property
    def is_numeric(self) -> bool:
        return self.is_int or self.is_float or self.is_time

    @property
    def zone(self) -> str:
        """Print zone of a time keyword: TAI, UTC or ISO."""
        return drmstime.time_zone_of(self.units)

    @property
    def hidden(self) -> bool:
        """DRMS's own bookkeeping keywords (``T_REC_index``) never appear in rs_list ``**ALL**``."""
        return self.recscope == "index"

    def as_struct(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.linkinfo:
            out["linkinfo"] = self.linkinfo
        out.update(type=self.type, recscope=self.recscope, defval=self.defval, units=self.units, note=self.note)
        return out


@dataclass(frozen=True)
class Segment:
    name: str
    type: str = "int"
    units: str | None = None
    protocol: str | None = "fits"
    dims: str | None = None
    note: str | None = ""

    @property
    def is_link(self) -> bool:
        return (self.protocol or "").startswith("link")

    @property
    def link_name(self) -> str | None:
        """For a link segment (``protocol: "link via lev1"``) the link it follows."""
        return self.protocol.split()[-1] if self.is_link and self.protocol else None

    def as_struct(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "units": self.units, "protocol": self.protocol,
                "dims": self.dims, "note": self.note}


@dataclass(frozen=True)
class Link:
    name: str
    target: str
    kind: str = "DYNAMIC"
    note: str = ""

    def as_struct(self) -> dict[str, Any]:
        return {"name": self.name, "target": self.target, "kind": self.kind, "note": self.note}


@dataclass(frozen=True)
class Slotting:
    """How a slotted prime key maps values to integer slots (DRMS ts_eq / ts_slot / slot)."""

    key: str
    kind: str  # ts_eq | ts_slot | slot
    epoch: float  # internal time (time keys) or value origin
    step: float  # seconds (time keys) or value units
    round: float = 0.0  # ts_slot rounding; ts_eq rounds by a whole step

    def index(self, value: float) -> int:
        """Slot index of a value: ``floor((v - epoch + R/2) / step)`` with R = step for ts_eq."""
        rounding = self.step if self.kind == "ts_eq" else self.round
        return math.floor((value - self.epoch + rounding / 2.0) / self.step + 1e-9)

    def value(self, index: int) -> float:
        return self.epoch + index * self.step


@dataclass(frozen=True)
class SeriesDef:
    name: str
    primekeys: tuple[str, ...]
    keywords: tuple[Keyword, ...]
    segments: tuple[Segment, ...] = ()
    links: tuple[Link, ...] = ()
    note: str = ""
    retention: int = 10000
    stagingretention: int = 3
    unitsize: int = 32
    archive: int = 1
    tapegroup: int = 1
    dbindex: tuple[str, ...] = ()
    emulator: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    # -- lookups -----------------------------------------------------------------------
    @cached_property
    def _keyword_map(self) -> dict[str, Keyword]:
        return {kw.name.lower(): kw for kw in self.keywords}

    @cached_property
    def _segment_map(self) -> dict[str, Segment]:
        return {seg.name.lower(): seg for seg in self.segments}

    def keyword(self, name: str) -> Keyword | None:
        return self._keyword_map.get(name.lower())

    def segment(self, name: str) -> Segment | None:
        return self._segment_map.get(name.lower())

    def link(self, name: str) -> Link | None:
        return next((lk for lk in self.links if lk.name.lower() == name.lower()), None)

    @property
    def visible_keywords(self) -> tuple[Keyword, ...]:
        """Keywords in series order as ``**ALL**`` lists them (hidden index keywords left out)."""
        return tuple(kw for kw in self.keywords if not kw.hidden)

    @property
    def primekey_keywords(self) -> tuple[Keyword, ...]:
        return tuple(self._keyword_map[k.lower()] for k in self.primekeys)

    @cached_property
    def slottings(self) -> dict[str, Slotting]:
        """Slotting of every slotted prime key, by canonical key name."""
        out = {}
        for key in self.primekeys:
            kw = self.keyword(key)
            if kw is None or kw.recscope not in ("ts_eq", "ts_slot", "slot"):
                continue
            out[kw.name] = self._slotting_for(kw)
        return out

    def slotting(self, key: str) -> Slotting | None:
        kw = self.keyword(key)
        return self.slottings.get(kw.name) if kw else None

    def _slotting_for(self, kw: Keyword) -> Slotting:
        def const(suffix: str) -> Keyword | None:
            return self.keyword(f"{kw.name}_{suffix}")

        epoch_kw, step_kw = const("epoch"), const("step")
        if epoch_kw is None or step_kw is None:
            raise ValueError(f"series {self.name}: slotted key {kw.name} needs {kw.name}_epoch and {kw.name}_step")
        epoch = drmstime.parse_time(epoch_kw.defval) if kw.is_time else float(epoch_kw.defval)
        unit_kw = const("unit")
        unit = (unit_kw.defval if unit_kw else step_kw.units or "").strip().lower()
        scale = _STEP_UNIT_SECONDS.get(unit, 1.0) if kw.is_time else 1.0
        step = float(step_kw.defval) * scale
        round_kw = const("round")
        rounding = float(round_kw.defval) * scale if round_kw else 0.0
        return Slotting(key=kw.name, kind=kw.recscope, epoch=epoch, step=step, round=rounding)

    # -- (de)serialisation -----------------------------------------------------------------
    @classmethod
    def from_struct(cls, struct: dict[str, Any], name: str | None = None) -> SeriesDef:
        """A definition from a series_struct reply (or a definition file's JSON)."""
        series_name = struct.get("name") or name
        if not series_name:
            raise ValueError("a series definition needs a name (a 'name' field or the file name)")
        try:
            keywords = tuple(
                Keyword(
                    name=k["name"], type=k["type"], recscope=k.get("recscope", "variable"),
                    defval=str(k.get("defval", "")), units=k.get("units") or "none", note=k.get("note") or "",
                    linkinfo=k.get("linkinfo"),
                )
                for k in struct["keywords"]
            )
            segments = tuple(
                Segment(name=s["name"], type=s.get("type", "int"), units=s.get("units"),
                        protocol=s.get("protocol"), dims=s.get("dims"), note=s.get("note"))
                for s in struct.get("segments") or ()
            )
            links = tuple(
                Link(name=lk["name"], target=lk["target"], kind=lk.get("kind", "DYNAMIC"), note=lk.get("note", ""))
                for lk in struct.get("links") or ()
            )
            primekeys = tuple(struct["primekeys"])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"series definition {series_name!r} lacks a required field: {exc}") from None
        known = {k.name.lower() for k in keywords}
        missing = [k for k in primekeys if k.lower() not in known]
        if missing:
            raise ValueError(f"series definition {series_name!r}: prime keys {missing} are not keywords")
        return cls(
            name=series_name, primekeys=primekeys, keywords=keywords, segments=segments, links=links,
            note=struct.get("note", ""), retention=int(struct.get("retention", 10000)),
            stagingretention=int(struct.get("stagingretention", 3)), unitsize=int(struct.get("unitsize", 32)),
            archive=int(struct.get("archive", 1)), tapegroup=int(struct.get("tapegroup", 1)),
            dbindex=tuple(struct.get("dbindex") or primekeys), emulator=dict(struct.get("emulator") or {}),
        )

    def to_struct(self) -> dict[str, Any]:
        """The series_struct fields JSOC sends, in JSOC's order (no Interval/runtime/status)."""
        pkinfo = []
        for key in self.primekeys:
            slot = self.slotting(key)
            if slot is None:
                pkinfo.append({"name": key, "slotted": 0})
            else:
                step_kw = self.keyword(f"{key}_step")
                pkinfo.append({"name": key, "slotted": 1, "step": step_kw.defval if step_kw else str(slot.step)})
        return {
            "note": self.note, "retention": self.retention, "stagingretention": self.stagingretention,
            "unitsize": self.unitsize, "archive": self.archive, "tapegroup": self.tapegroup,
            "primekeys": list(self.primekeys), "primekeysinfo": pkinfo, "dbindex": list(self.dbindex),
            "keywords": [k.as_struct() for k in self.keywords],
            "segments": [s.as_struct() for s in self.segments],
            "links": [lk.as_struct() for lk in self.links],
        }


def load_series_file(path: str | Path) -> SeriesDef:
    """A definition from a JSON file; the file name (less ``.json``) names it if the JSON does not."""
    path = Path(path)
    try:
        struct = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read series definition {path}: {exc}") from None
    return SeriesDef.from_struct(struct, name=path.name.removesuffix(".json"))


class SeriesRegistry:
    """Series definitions by case-insensitive name: the built-ins plus any extra directories."""

    def __init__(self, defs: Iterable[SeriesDef] = ()):
        self._defs: dict[str, SeriesDef] = {}
        for d in defs:
            self.add(d)

    @classmethod
    def from_dirs(cls, *dirs: str | Path, builtin: bool = True) -> SeriesRegistry:
        registry = cls()
        for directory in ([BUILTIN_DIR] if builtin else []) + [Path(d) for d in dirs]:
            for path in sorted(Path(directory).glob("*.json")):
                registry.add(load_series_file(path))
        return registry

    def add(self, definition: SeriesDef) -> None:
        self._defs[definition.name.lower()] = definition

    def get(self, name: str) -> SeriesDef | None:
        return self._defs.get(name.strip().lower())

    def names(self) -> list[str]:
        return sorted((d.name for d in self._defs.values()), key=str.lower)

    def __iter__(self):
        return iter(sorted(self._defs.values(), key=lambda d: d.name.lower()))

    def __len__(self) -> int:
        return len(self._defs)


def builtin_series() -> SeriesRegistry:
    return SeriesRegistry.from_dirs()
