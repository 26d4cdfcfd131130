"""JSOC/DRMS time: parsing and printing time strings, TAI and UTC.

DRMS keeps a time as seconds since 1977.01.01_00:00:00_TAI ("internal time"); this module
does the same, so slot arithmetic is plain float arithmetic. Calendar conversion is done
with integer day counts (proleptic Gregorian), not ``datetime``, because it sits on the
hot path of every record we print or parse. Shared by the mirror and the emulator.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone

#: DRMS's MISSING time (JD 0 = -4712.01.01_12:00 UT), as internal seconds.
MISSING_TIME = -211087684832.184
#: DRMS prints MISSING times like this, followed by the zone suffix.
_MISSING_TEXT = "-4712.01.01_11:59:28"
#: Internal time of 1993.01.01_00:00:00_TAI, the epoch of HMI/MDI slots.
EPOCH_1993 = 504921600.0

#: Days from 1970-01-01 (numpy and Unix day counts) to 1977-01-01 (the DRMS epoch).
DAYS_1970_TO_1977 = 2557

# (UTC day number since 1977-01-01 on which TAI-UTC became the value, TAI-UTC seconds).
# Source: IERS Bulletin C; no leap second has been announced after 2017-01-01.
_LEAP_TABLE_DATES = [
    ((1972, 1, 1), 10), ((1972, 7, 1), 11), ((1973, 1, 1), 12), ((1974, 1, 1), 13),
    ((1975, 1, 1), 14), ((1976, 1, 1), 15), ((1977, 1, 1), 16), ((1978, 1, 1), 17),
    ((1979, 1, 1), 18), ((1980, 1, 1), 19), ((1981, 7, 1), 20), ((1982, 7, 1), 21),
    ((1983, 7, 1), 22), ((1985, 7, 1), 23), ((1988, 1, 1), 24), ((1990, 1, 1), 25),
    ((1991, 1, 1), 26), ((1992, 7, 1), 27), ((1993, 7, 1), 28), ((1994, 7, 1), 29),
    ((1996, 1, 1), 30), ((1997, 7, 1), 31), ((1999, 1, 1), 32), ((2006, 1, 1), 33),
    ((2009, 1, 1), 34), ((2012, 7, 1), 35), ((2015, 7, 1), 36), ((2017, 1, 1), 37),
]


def days_from_civil(y, m, d):
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).

    Written with floor division and no branches so the same code serves Python ints and
    numpy integer arrays (the emulator and sync convert whole columns at once).
    """
    y = y - (m <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * ((m + 9) % 12) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def civil_from_days(z):
    """(year, month, day) of a day count since 1970-01-01; ints or numpy integer arrays."""
    z = z + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = (mp + 2) % 12 + 1
    return y + (m <= 2), m, d


def calendar_seconds(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: float = 0.0) -> float:
    """Seconds since 1977-01-01 00:00:00 of a calendar reading, ignoring leap seconds."""
    days = days_from_civil(y, mo, d) - DAYS_1970_TO_1977
    return days * 86400.0 + h * 3600 + mi * 60 + s


# Change points as UTC calendar seconds since 1977, ascending.
_LEAPS = [(calendar_seconds(*ymd), dat) for ymd, dat in _LEAP_TABLE_DATES]


def tai_minus_utc_at_utc(utc_cal: float) -> int:
    """TAI-UTC in seconds at a UTC calendar reading (seconds since 1977 on the UTC calendar)."""
    dat = 10
    for change, value in _LEAPS:
        if utc_cal >= change:
            dat = value
        else:
            break
    return dat


def tai_minus_utc_at_tai(t: float) -> int:
    """TAI-UTC in seconds at an internal (TAI) time."""
    dat = 10
    for change, value in _LEAPS:
        if t - value >= change:
            dat = value
        else:
            break
    return dat


_TIME_RE = re.compile(
    r"""^\s*(?P<y>-?\d{1,4})[.\-/](?P<mo>\d{1,2})[.\-/](?P<d>\d{1,2})
    (?:[_T\s](?P<h>\d{1,2}):(?P<mi>\d{1,2})(?::(?P<s>\d{1,2}(?:\.\d*)?))?)?
    (?:[_\s]?(?P<zone>TAI|UTC|UT|TDT|TT|Z|[+-]\d{4}))?\s*$""",
    re.X | re.I,
)
_JD_RE = re.compile(r"^\s*(?P<kind>JD|MJD)_(?P<v>\d+(?:\.\d*)?)(?:_?(?P<zone>TAI|UTC|UT|Z))?\s*$", re.I)


def parse_time(text: str) -> float:
    """Internal time (seconds since 1977.01.01_00:00:00_TAI) of a JSOC time string.

    Accepts ``YYYY.MM.DD`` or ``YYYY-MM-DD``, then ``_``, ``T`` or a space, then an optional
    ``HH:MM[:SS[.f]]``, then an optional zone (``_TAI``, ``_UTC``, ``_UT``, ``Z``, ``_TDT``,
    ``±hhmm``); ``JD_…``/``MJD_…`` too. No zone means UTC, as in DRMS.
    Raises ValueError naming the text when it is not a time.
    """
    if text.strip().startswith("-4712.01.01"):
        return MISSING_TIME
    match = _TIME_RE.match(text)
    if match is None:
        jd = _JD_RE.match(text)
        if jd is None:
            raise ValueError(
                f"not a JSOC time: {text!r} (expected e.g. 2014.01.01_00:00:00_TAI or 2014-01-01T00:00:00Z)"
            )
        value = float(jd["v"]) + (2400000.5 if jd["kind"].upper() == "MJD" else 0.0)
        cal = (value - 2443144.5) * 86400.0
        return _apply_zone(cal, (jd["zone"] or "UTC").upper())
    y, mo, d = int(match["y"]), int(match["mo"]), int(match["d"])
    h = int(match["h"] or 0)
    mi = int(match["mi"] or 0)
    s = float(match["s"] or 0.0)
    if not (1 <= mo <= 12 and 1 <= d <= 31 and h <= 24 and mi <= 59 and s < 61):
        raise ValueError(f"not a JSOC time: {text!r} (a field is out of range)")
    zone = (match["zone"] or "UTC").upper()
    if s >= 60.0:
        # 23:59:60.x is the leap second itself: one second after 23:59:59.x on the old offset
        return _apply_zone(calendar_seconds(y, mo, d, h, mi, s - 1.0), zone) + 1.0
    return _apply_zone(calendar_seconds(y, mo, d, h, mi, s), zone)


def _apply_zone(cal: float, zone: str) -> float:
    if zone == "TAI":
        return cal
    if zone in ("TDT", "TT"):
        return cal - 32.184
    if zone in ("UTC", "UT", "Z"):
        return cal + tai_minus_utc_at_utc(cal)
    sign = 1 if zone[0] == "+" else -1
    offset = sign * (int(zone[1:3]) * 3600 + int(zone[3:5]) * 60)
    utc = cal - offset
    return utc + tai_minus_utc_at_utc(utc)


def is_missing(t: float | None) -> bool:
    return t is None or (isinstance(t, float) and math.isnan(t)) or t <= MISSING_TIME + 1.0


def _leap_second_at(t: float) -> tuple[int, float | None]:
    """TAI-UTC at internal time t, and the UTC change point if t lies inside an inserted leap second."""
    dat, nxt = 10, None
    for change, value in _LEAPS:
        if t - value >= change:
            dat = value
        else:
            nxt = (change, value)
            break
    if nxt is not None and nxt[1] == dat + 1 and t - dat >= nxt[0]:
        return dat, nxt[0]
    return dat, None


def _split(t: float, zone: str, precision: int) -> tuple[int, int, int, int, int, float]:
    scale = 10**precision
    if zone == "TAI":
        return _split_calendar(t, scale)
    dat, leap = _leap_second_at(t)
    cal = t - dat
    if leap is not None:
        # inside an inserted leap second UTC reads 23:59:60.x, as DRMS prints it
        frac_ticks = round((cal - leap) * scale)
        if frac_ticks < scale:
            y, mo, d, h, mi, _ = _split_calendar(leap - 1.0, scale)
            return y, mo, d, h, mi, 60 + frac_ticks / scale
        cal = leap
    return _split_calendar(cal, scale)


def _split_calendar(cal: float, scale: int) -> tuple[int, int, int, int, int, float]:
    ticks = round(cal * scale)
    days, rem = divmod(ticks, 86400 * scale)
    y, mo, d = civil_from_days(days + DAYS_1970_TO_1977)
    h, rem = divmod(rem, 3600 * scale)
    mi, rem = divmod(rem, 60 * scale)
    return y, mo, d, h, mi, rem / scale


def _seconds_text(s: float, precision: int) -> str:
    if precision <= 0:
        return f"{int(s):02d}"
    return f"{s:0{3 + precision}.{precision}f}"


def format_time(t: float, zone: str = "TAI", precision: int = 0) -> str:
    """Print an internal time as JSOC does for a keyword whose unit is ``zone``.

    ``TAI`` gives ``2012.01.01_00:00:45_TAI``, ``UTC`` gives ``2012.01.01_00:00:10_UTC`` and
    ``ISO`` (AIA's T_REC) gives ``2014-01-01T00:00:01Z``; MISSING prints as DRMS prints it.
    """
    zone = zone.upper()
    if zone in ("UT", "Z"):
        zone = "UTC"
    if zone not in ("TAI", "UTC", "ISO"):
        raise ValueError(f"unknown time zone {zone!r} (expected TAI, UTC or ISO)")
    if is_missing(t):
        return _MISSING_TEXT + ("Z" if zone == "ISO" else f"_{zone}")
    y, mo, d, h, mi, s = _split(t, zone, precision)
    sec = _seconds_text(s, precision)
    if zone == "ISO":
        return f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{sec}Z"
    return f"{y:04d}.{mo:02d}.{d:02d}_{h:02d}:{mi:02d}:{sec}_{zone}"


def format_time_compact(t: float, zone: str = "TAI") -> str:
    """The ``{T_REC:A}`` form of JSOC file names: ``20120101_010130_TAI`` or ``2010-07-30T133009Z``."""
    zone = zone.upper()
    if zone in ("UT", "Z"):
        zone = "UTC"
    y, mo, d, h, mi, s = _split(t, "ISO" if zone == "ISO" else zone, 0)
    if zone == "ISO":
        return f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}{mi:02d}{int(s):02d}Z"
    return f"{y:04d}{mo:02d}{d:02d}_{h:02d}{mi:02d}{int(s):02d}_{zone}"


def time_zone_of(unit: str | None) -> str:
    """The print zone of a time keyword from its DRMS ``units`` field (TAI, UTC or ISO)."""
    unit = (unit or "TAI").upper()
    if unit in ("ISO", "Z"):
        return "ISO"
    if unit in ("UTC", "UT"):
        return "UTC"
    return "TAI"


def to_datetime_utc(t: float) -> datetime | None:
    """A timezone-aware UTC datetime for an internal time (None for MISSING)."""
    if is_missing(t):
        return None
    y, mo, d, h, mi, s = _split(t, "UTC", 6)
    whole = int(s)
    return datetime(y, mo, d, h, mi, min(whole, 59), int(round((s - whole) * 1e6)) % 1000000, tzinfo=timezone.utc)


def from_datetime(dt: datetime) -> float:
    """Internal time of a datetime; a naive datetime is taken as UTC."""
    if dt.tzinfo is not None:
        dt = dt.astimezone(timezone.utc)
    cal = calendar_seconds(dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second + dt.microsecond / 1e6)
    return cal + tai_minus_utc_at_utc(cal)


def now() -> float:
    """The current internal time."""
    return from_datetime(datetime.now(timezone.utc))


_DURATION_RE = re.compile(r"^\s*(?P<v>\d+(?:\.\d*)?|\.\d+)\s*(?P<u>[smhdu]?)\s*$", re.I)
_UNIT_SECONDS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str, step: float | None = None) -> float:
    """Seconds in a DRMS duration (``90.0s``, ``3m``, ``6h``, ``1d``; ``5u`` = 5 slots of ``step``)."""
    match = _DURATION_RE.match(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r} (expected a number followed by s, m, h, d or u)")
    value, unit = float(match["v"]), match["u"].lower()
    if unit == "u":
        if step is None:
            raise ValueError(f"duration {text!r} counts slots, which only a slotted key has")
        return value * step
    return value * _UNIT_SECONDS[unit]
