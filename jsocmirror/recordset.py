"""DRMS record-set strings: building them (the mirror) and parsing them (the emulator).

Shared by the mirror's planner/sync (which build record-set strings for JSOC) and the
emulator (which parses what clients send). See DATA_MODEL.md section 2 for the grammar.
"""

from __future__ import annotations

from typing import Iterable, Sequence


def record_key(values: Sequence[str]) -> str:
    """The canonical key of one record: its prime-key values as JSOC prints them, bracketed.

    ``["2012.01.01_00:00:45_TAI", "2"]`` -> ``[2012.01.01_00:00:45_TAI][2]``. With the series
    name in front it is the record string JSOC itself prints (``hmi.M_45s[...][2]``).
    """
    return "".join(f"[{v}]" for v in values)


def record_spec(series: str, values: Sequence[str], segments: Iterable[str] | None = None) -> str:
    """``series[v1][v2]{seg,...}``: one record as a record-set string."""
    spec = series + record_key(values)
    segs = list(segments or ())
    return spec + ("{" + ",".join(segs) + "}" if segs else "")
