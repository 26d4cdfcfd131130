"""Generated segment files: deterministic FITS bytes per record version, and export file names.

Every file the emulator serves is generated from (series, recnum, segment), never read from disk,
so no URL can ever reach a real file. Files look like real JSOC ones (DATA_MODEL.md section 3):
an empty primary HDU and a RICE_1 tile-compressed image in HDU 1 (row tiles), with the pixel type,
BSCALE/BZERO/BLANK of the real series. Two flavours share the same pixels (so the same DATASUM):

* **as-is** (a file read straight from SUMS): only the compression keywords, BLANK/BZERO/BSCALE
  and CHECKSUM/DATASUM;
* **fits** (a ``protocol=fits`` export): all the record's keywords under their FITS names, then
  RECNUM, DRMS_ID, PRIMARYK, LICENSE, LONGSTRN, CHECKSUM and DATASUM.

A reprocessed record has a new recnum, hence different pixels and different bytes. Generated
bytes are kept in a byte-bounded LRU cache so that serving a file twice costs nothing.

Also here: the ``filenamefmt`` template engine of jsoc_fetch (DATA_MODEL.md section 5) and the
building of url-tar archives.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
import tarfile
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from jsocmirror import drmstime
from jsocmirror.fitsheader import encode_checksum, ones_complement_sum
from jsocmirror.series import Keyword, Segment, SeriesDef

# Structural FITS keywords the generator writes itself; a series keyword of the same name is skipped.
_STRUCTURAL = frozenset({
    "SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", "XTENSION", "PCOUNT", "GCOUNT",
    "BSCALE", "BZERO", "BLANK", "CHECKSUM", "DATASUM", "END", "TFIELDS", "COMMENT", "HISTORY",
    "RECNUM", "DRMS_ID", "PRIMARYK", "LICENSE", "LONGSTRN", "HEADSUM",
})
_FITS_KEY_RE = re.compile(r"^[A-Z0-9_-]{1,8}$")
_PER_SEGMENT_RE = re.compile(r"^(?P<base>.+)_(?P<idx>\d{3})$")
_INT_MISSING = {"char": -128, "short": -32768, "int": -2147483648, "longlong": -9223372036854775808}
_CHECKSUM_WHEN = "2024-07-01T00:00:00"


class FilenameFormatError(ValueError):
    """A ``filenamefmt`` template that cannot be applied (bad braces, unknown keyword, bad modifier)."""


# --------------------------------------------------------------------------------------------
# Records as the file generator sees them
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FileRecord:
    """What the generator needs of one record version.

    ``values`` maps keyword names (any case) to typed values (time as internal DRMS seconds,
    ints, floats, strings) or to the strings rs_list prints; both are accepted.
    ``sunum``/``slot`` place the record's segment files in SUMS (``/SUM<n>/D<sunum>/S<slot>/``).
    """

    series: SeriesDef
    recnum: int
    values: Mapping[str, Any]
    sunum: int = 0
    slot: int = 0
    online: bool = True  # False: on tape (``*online*`` 0); exports of it are delayed
    size: int = 0  # bytes of the record's storage unit (``*size*``), for export sizes and caps
    # For link segments: the record the link points to (aia.lev1_euv_12s -> aia.lev1), if known.
    link_target: Callable[[str], "FileRecord | None"] | None = field(default=None, compare=False)
    # Prime-key values as the world prints them (else printed here from ``values``).
    pk_strings: tuple[str, ...] | None = None

    def value(self, name: str) -> Any:
        if name in self.values:
            return self.values[name]
        lower = name.lower()
        for key, val in self.values.items():
            if key.lower() == lower:
                return val
        return None

    @property
    def primekey_strings(self) -> list[str]:
        if self.pk_strings is not None:
            return list(self.pk_strings)
        return [print_value(kw, self.value(kw.name)) for kw in self.series.primekey_keywords]

    def record_string(self, segment: str | None = None) -> str:
        """``hmi.M_45s[2012.01.01_01:01:30_TAI][2]`` (with ``{segment}`` when given), as JSOC prints it."""
        text = self.series.name + "".join(f"[{v}]" for v in self.primekey_strings)
        return text + (f"{{{segment}}}" if segment else "")


def sums_dir(sunum: int, slot: int = 0) -> str:
    """SUMS directory of a storage unit: ``/SUM<n>/D<sunum>/S<slot:05d>``. The partition is derived
    from the sunum so a unit always lives in the same place."""
    return f"/SUM{sunum % 100 + 1}/D{sunum}/S{slot:05d}"


# --------------------------------------------------------------------------------------------
# Keyword values: typed, printed, FITS
# --------------------------------------------------------------------------------------------
def typed_value(kw: Keyword, value: Any) -> Any:
    """A keyword value as Python data (time -> internal seconds); None when MISSING."""
    if value is None:
        return None
    if kw.is_time:
        t = drmstime.parse_time(value) if isinstance(value, str) else float(value)
        return None if drmstime.is_missing(t) else t
    if kw.is_int:
        if isinstance(value, str):
            text = value.strip()
            if not text:
                return None
            try:
                number = int(text, 0) if text.lower().startswith("0x") else int(float(text))
            except ValueError:
                return None
        else:
            number = int(value)
        if kw.type == "int" and number >= 0x80000000:  # hex QUALITY words print unsigned
            number -= 1 << 32
        return None if number == _INT_MISSING.get(kw.type) else number
    if kw.is_float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            return None
        return None if math.isnan(number) else number
    text = str(value)
    return text if text else None


def print_value(kw: Keyword, value: Any) -> str:
    """The keyword value as JSOC prints it in rs_list and record strings."""
    typed = typed_value(kw, value)
    if kw.is_time:
        return drmstime.format_time(drmstime.MISSING_TIME if typed is None else typed, kw.zone)
    if typed is None:
        return "MISSING" if kw.is_numeric else ""
    if kw.is_float:
        return repr(typed) if not float(typed).is_integer() else f"{typed:g}"
    return str(typed)


def fits_name(drms_name: str) -> str:
    """FITS keyword name of a DRMS keyword, as JSOC's exporter maps it.

    Valid FITS names stay (upper-cased); ``DATE__OBS`` -> ``DATE-OBS``; other long names lose
    their underscores and are cut to 8 characters (``T_REC_epoch`` -> ``TRECEPOC``).
    """
    upper = drms_name.upper()
    if _FITS_KEY_RE.match(upper):
        return upper
    if "__" in upper:
        dashed = upper.replace("__", "-")
        if _FITS_KEY_RE.match(dashed):
            return dashed
    return upper.replace("_", "")[:8]


def _is_implicit(drms_name: str, series: SeriesDef) -> bool:
    """DRMS bookkeeping keywords that exports leave out: ``cparms_sgNNN``, ``<segment>_bzero/_bscale``."""
    lower = drms_name.lower()
    if re.fullmatch(r"cparms_sg\d+", lower):
        return True
    base, _, suffix = lower.rpartition("_")
    return suffix in ("bzero", "bscale") and series.segment(base) is not None


def _fits_time_text(t: float, zone: str) -> str:
    text = drmstime.format_time(t, zone, precision=3)
    return text[:-1] if zone == "ISO" else text  # FITS shows ISO times without the Z


def _header_cards(rec: FileRecord, segment: Segment) -> list[tuple[str, Any, str]]:
    """(fits name, value or None for MISSING, comment) for every exported keyword of ``rec``."""
    from astropy.io.fits.card import UNDEFINED

    series = rec.series
    seg_index = next((i for i, s in enumerate(series.segments) if s.name == segment.name), 0)
    cards: list[tuple[str, Any, str]] = []
    seen: set[str] = set()
    for kw in series.keywords:
        if kw.hidden:
            continue
        drms_name = kw.name
        per_seg = _PER_SEGMENT_RE.match(drms_name)
        if per_seg:
            if int(per_seg["idx"]) != seg_index:
                continue
            name = fits_name(per_seg["base"])
        else:
            name = fits_name(drms_name)
        if name in _STRUCTURAL or name in seen or _is_implicit(drms_name, series):
            continue
        seen.add(name)
        raw = rec.value(drms_name)
        if raw is None and kw.recscope == "constant":
            raw = kw.defval
        typed = typed_value(kw, raw)
        unit = kw.zone if kw.is_time else (kw.units or "")
        parts = []
        if unit and unit.lower() not in ("none", "na"):
            parts.append(f"[{unit}]")
        if typed is None:
            parts.append("(MISSING)")
        if kw.note:
            parts.append(kw.note)
        if name != drms_name.upper():
            parts.append(f"{{{drms_name}}}")
        comment = " ".join(parts)
        if typed is None:
            value: Any = UNDEFINED
        elif kw.is_time:
            value = _fits_time_text(typed, kw.zone)
        else:
            value = typed
        cards.append((name, value, comment))
    return cards


# --------------------------------------------------------------------------------------------
# Pixels
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PixelFormat:
    dtype: str  # numpy dtype of the stored integers
    bscale: float
    bzero: float
    blank: int | None


def pixel_format(series: SeriesDef, segment: Segment, target_segment: Segment | None = None) -> PixelFormat:
    """Stored pixel type and scaling of a segment, as the real series use them.

    HMI int segments: int32, BSCALE 0.1, BZERO 0, BLANK -2147483648 (SHARP/M_45s headers);
    AIA images: int16, no scaling, BLANK -32768; char segments (SHARP bitmap): uint8.
    A series definition may override per segment with ``emulator.segments.<name>`` hints
    (``bscale``, ``bzero``, ``type``).
    """
    seg = target_segment or segment
    hints = (series.emulator.get("segments") or {}).get(segment.name, {})
    seg_type = hints.get("type", seg.type or "int")
    if seg_type == "char":
        return PixelFormat("uint8", 1.0, 0.0, None)
    if seg_type == "short" or series.name.lower().startswith("aia."):
        fmt = PixelFormat("int16", 1.0, 0.0, -32768)
    else:
        default_scale = 0.1 if series.name.lower().startswith(("hmi.", "mdi.")) else 1.0
        if seg_type in ("float", "double"):
            default_scale = 0.001
        fmt = PixelFormat("int32", default_scale, 0.0, -2147483648)
    return PixelFormat(fmt.dtype, float(hints.get("bscale", fmt.bscale)), float(hints.get("bzero", fmt.bzero)),
                       fmt.blank)


def _seed(*parts: Any) -> int:
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def generate_pixels(series: str, recnum: int, segment: str, fmt: PixelFormat, shape: tuple[int, int]) -> np.ndarray:
    """A deterministic, vaguely solar image: a limb-darkened disk plus noise, BLANK off the disk."""
    ny, nx = shape
    rng = np.random.default_rng(_seed(series, recnum, segment))
    yy, xx = np.mgrid[0:ny, 0:nx]
    r = np.hypot((xx - nx / 2 + 0.5) / (nx / 2), (yy - ny / 2 + 0.5) / (ny / 2))
    disk = np.clip(1.0 - r * r, 0.0, None)
    if fmt.dtype == "uint8":
        return ((disk > 0.3).astype(np.uint8) * 33 + rng.integers(0, 2, size=shape, dtype=np.uint8))
    top = 3000.0 if fmt.dtype == "int16" else 2000.0 / max(fmt.bscale, 1e-6) * 0.1
    noise = rng.normal(0.0, top * 0.05, size=shape)
    image = np.rint(disk * top + noise)
    info = np.iinfo(fmt.dtype)
    image = np.clip(image, info.min + 1, info.max).astype(fmt.dtype)
    if fmt.blank is not None:
        image[r > 1.02] = fmt.blank
    return image


# --------------------------------------------------------------------------------------------
# FITS bytes
# --------------------------------------------------------------------------------------------
def _card(key: str, value: str, comment: str) -> bytes:
    text = f"{key:<8}= {value:<20} / {comment}"
    return text[:80].ljust(80).encode("ascii")


def _add_checksums(raw: bytes, when: str) -> bytes:
    """Append CHECKSUM/DATASUM to the last HDU of a written FITS file, with a fixed timestamp.

    astropy stamps the wall-clock time into the comments, which would make bytes differ per run;
    the cards are placed and summed here exactly as astropy's ``checksum=True`` would.
    """
    # Find the last HDU's header: walk headers from the start.
    pos, last_start = 0, 0
    while pos < len(raw):
        start = pos
        end_card = None
        naxis: dict[int, int] = {}
        bitpix = pcount = 0
        gcount = 1
        while end_card is None:
            block = raw[pos:pos + 2880]
            pos += 2880
            for i in range(0, 2880, 80):
                card = block[i:i + 80]
                key = card[:8].decode("ascii").strip()
                if key == "END":
                    end_card = pos - 2880 + i
                    break
                if card[8:10] == b"= ":
                    val = card[10:].split(b"/")[0].strip()
                    if key == "BITPIX":
                        bitpix = int(val)
                    elif key.startswith("NAXIS") and key != "NAXIS":
                        naxis[int(key[5:])] = int(val)
                    elif key == "PCOUNT":
                        pcount = int(val)
                    elif key == "GCOUNT":
                        gcount = int(val)
        data_bytes = (abs(bitpix) // 8 * gcount * (pcount + math.prod(naxis.values()))) if naxis else 0
        last_start, last_end_card, header_end = start, end_card, pos
        pos = header_end + -(-data_bytes // 2880) * 2880
    cards = raw[last_start:last_end_card]
    data = raw[header_end:]
    datasum = ones_complement_sum(data)
    new_cards = cards + _card("CHECKSUM", "'0000000000000000'", f"HDU checksum updated {when}") + _card(
        "DATASUM", f"'{datasum}'", f"data unit checksum updated {when}") + b"END".ljust(80)
    header = new_cards + b" " * (-len(new_cards) % 2880)
    checksum = encode_checksum(~ones_complement_sum(header, datasum) & 0xFFFFFFFF)
    header = header.replace(b"'0000000000000000'", f"'{checksum}'".encode(), 1)
    return raw[:last_start] + header + data


def build_fits(rec: FileRecord, segment: Segment, *, protocol: str = "as-is",
               shape: tuple[int, int] = (64, 64)) -> bytes:
    """The bytes of one segment file of one record version (``protocol`` as-is or fits)."""
    from astropy.io import fits
    from astropy.io.fits.card import UNDEFINED

    target_rec, target_seg = resolve_link(rec, segment)
    fmt = pixel_format(rec.series, segment, target_seg)
    pixels = generate_pixels(target_rec.series.name, target_rec.recnum, target_seg.name, fmt, shape)
    header = fits.Header()
    if protocol == "fits":
        # Comments are cut to fit the card here, as JSOC's exporter does, so astropy never warns
        # (warnings.catch_warnings is not thread-safe and the server builds files in threads).
        for name, value, comment in _header_cards(rec, segment):
            if value is UNDEFINED:  # JSOC pads an empty value to the usual column
                header.append(fits.Card.fromstring(f"{name:<8}= {'':20} / {comment}"[:80]), end=True)
            else:
                header.append(_fitted_card(fits, name, value, comment), end=True)
        header.append(("RECNUM", rec.recnum, "Recnum"), end=True)
        header.append(("DRMS_ID", f"{rec.series.name}:{rec.recnum}:{segment.name}", "DRMS ID"), end=True)
        header.append(("PRIMARYK", ", ".join(rec.series.primekeys), "DRMS primary key"), end=True)
        header.append(("LICENSE", "LICENSE", "CC0 1.0"), end=True)
        header.append(("LONGSTRN", "OGIP 1.0", "The HEASARC Long String Convention may be used."), end=True)
    hdu = fits.CompImageHDU(data=pixels, header=header, compression_type="RICE_1", tile_shape=(1, shape[1]))
    if fmt.blank is not None:
        hdu.header["BLANK"] = fmt.blank
    if fmt.dtype != "uint8":
        hdu.header["BZERO"] = fmt.bzero
        hdu.header["BSCALE"] = fmt.bscale
    out = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(out)
    return _add_checksums(out.getvalue(), _CHECKSUM_WHEN)


def _fitted_card(fits: Any, name: str, value: Any, comment: str) -> Any:
    """A card whose comment is cut so that the card fits its 80 columns (long strings: CONTINUE)."""
    bare = fits.Card(name, value).image
    if len(bare) <= 80:
        room = 80 - max(len(bare.rstrip()), 30) - 3  # with a comment the value fills at least column 30
        return fits.Card(name, value, comment[:room] if room > 0 else "")
    return fits.Card(name, value, comment[:40])


def resolve_link(rec: FileRecord, segment: Segment) -> tuple[FileRecord, Segment]:
    """For a link segment, the target record and segment holding the file (else ``rec``, ``segment``).

    The target segment is the one of the same name, else the first whose name starts with it
    (aia.lev1_euv_12s ``image`` -> aia.lev1 ``image_lev1``).
    """
    if not segment.is_link or rec.link_target is None:
        return rec, segment
    target = rec.link_target(segment.link_name or "")
    if target is None:
        return rec, segment
    seg = target.series.segment(segment.name) or next(
        (s for s in target.series.segments if s.name.lower().startswith(segment.name.lower())), None)
    return (target, seg) if seg is not None else (rec, segment)


def stored_filename(rec: FileRecord, segment: Segment) -> str:
    """The segment's file name in SUMS: ``magnetogram.fits``; a link's target file (``image_lev1.fits``)."""
    _, seg = resolve_link(rec, segment)
    return f"{seg.name}.fits"


# --------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------
class FileCache:
    """Byte-bounded, thread-safe LRU of generated files, keyed by (protocol, series, recnum, segment, shape)."""

    def __init__(self, max_bytes: int = 256 << 20):
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: tuple, make: Callable[[], bytes]) -> bytes:
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
                self.hits += 1
                return data
            self.misses += 1
        data = make()  # outside the lock: two threads may build the same file, both get equal bytes
        with self._lock:
            if key not in self._items and len(data) <= self.max_bytes:
                self._items[key] = data
                self._bytes += len(data)
                self._evict()
        return data

    def resize(self, max_bytes: int) -> None:
        with self._lock:
            self.max_bytes = max_bytes
            self._evict()

    def _evict(self) -> None:
        while self._bytes > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self._bytes -= len(old)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0


# --------------------------------------------------------------------------------------------
# filenamefmt
# --------------------------------------------------------------------------------------------
DEFAULT_FILENAMEFMT = "{seriesname}.{recnum:%lld}.{segment}"
_FIELD_RE = re.compile(r"\{([^{}]*)\}")
_PRINTF_RE = re.compile(r"^%(?P<flags>[-0 +#]*)(?P<width>\d*)(?:\.(?P<prec>\d+))?(?:ll|l|h)?(?P<conv>[dioxXufFeEgGs])$")


@dataclass(frozen=True)
class FilenameTemplate:
    """A parsed ``filenamefmt``: literal text and ``{field[:modifier]}`` slots."""

    parts: tuple[tuple[str, str | None, str | None], ...]  # (literal, field, modifier)
    source: str

    @classmethod
    def parse(cls, fmt: str | None, series: SeriesDef | None = None) -> FilenameTemplate:
        fmt = fmt if fmt not in (None, "") else DEFAULT_FILENAMEFMT
        parts: list[tuple[str, str | None, str | None]] = []
        pos = 0
        for match in _FIELD_RE.finditer(fmt):
            literal = fmt[pos:match.start()]
            _check_literal(literal, fmt)
            body = match[1].strip()
            if not body:
                raise FilenameFormatError(f"malformed filenamefmt {fmt!r}: empty {{}} field")
            name, _, modifier = body.partition(":")
            name = name.strip()
            if series is not None and name.lower() not in ("seriesname", "recnum", "#", "segment") \
                    and series.keyword(name) is None:
                raise FilenameFormatError(
                    f"malformed filenamefmt {fmt!r}: {name!r} is not a keyword of {series.name} "
                    "(accepted: seriesname, recnum, segment, # or a keyword name)")
            parts.append((literal, name, modifier.strip() or None))
            pos = match.end()
        tail = fmt[pos:]
        _check_literal(tail, fmt)
        parts.append((tail, None, None))
        return cls(tuple(parts), fmt)

    def render(self, rec: FileRecord, segment: Segment, index: int = 0) -> str:
        out = []
        for literal, name, modifier in self.parts:
            out.append(literal)
            if name is not None:
                out.append(_safe(_render_field(rec, segment, index, name, modifier, self.source)))
        return "".join(out)


def template_keywords(fmt: str | None) -> list[str]:
    """Keyword names a filenamefmt refers to (so a caller can fetch just those values)."""
    special = {"seriesname", "recnum", "#", "segment"}
    names = [m.split(":")[0].strip() for m in _FIELD_RE.findall(fmt or "")]
    return [n for n in names if n and n.lower() not in special]


def _check_literal(text: str, fmt: str) -> None:
    if "{" in text or "}" in text:
        raise FilenameFormatError(f"malformed filenamefmt {fmt!r}: unbalanced braces")
    if "/" in text or "\\" in text or text.startswith(".."):
        raise FilenameFormatError(f"malformed filenamefmt {fmt!r}: file names cannot contain '/', '\\' or '..'")


def _safe(text: str) -> str:
    """A substituted value never turns a name into a path."""
    return text.replace("/", "_").replace("\\", "_").replace("..", "_")


def _printf(modifier: str, value: Any, fmt: str) -> str:
    match = _PRINTF_RE.match(modifier)
    if match is None:
        raise FilenameFormatError(f"malformed filenamefmt {fmt!r}: bad format {modifier!r} (expected e.g. %d, %05d, %.2f)")
    conv = match["conv"]
    pyfmt = f"%{match['flags']}{match['width']}{'.' + match['prec'] if match['prec'] else ''}{'d' if conv in 'iu' else conv}"
    try:
        return pyfmt % value
    except (TypeError, ValueError):
        raise FilenameFormatError(f"malformed filenamefmt {fmt!r}: format {modifier!r} does not fit {value!r}") from None


def _render_field(rec: FileRecord, segment: Segment, index: int, name: str, modifier: str | None, fmt: str) -> str:
    lname = name.lower()
    if lname == "seriesname":
        return rec.series.name
    if lname == "recnum":
        return _printf(modifier, rec.recnum, fmt) if modifier else str(rec.recnum)
    if lname == "#":
        return _printf(modifier, index, fmt) if modifier else str(index)
    if lname == "segment":
        return stored_filename(rec, segment)
    kw = rec.series.keyword(name)
    if kw is None:
        raise FilenameFormatError(f"malformed filenamefmt {fmt!r}: {name!r} is not a keyword of {rec.series.name}")
    source = rec
    if kw.is_time and segment.is_link:
        source = resolve_link(rec, segment)[0]  # time keys of link segments come from the target
        kw = source.series.keyword(name) or kw
    value = typed_value(kw, source.value(kw.name))
    if kw.is_time:
        return _render_time(kw, value, modifier, fmt)
    if modifier:
        if value is None:
            return "MISSING"
        return _printf(modifier, value, fmt)
    return print_value(kw, value)


def _render_time(kw: Keyword, value: float | None, modifier: str | None, fmt: str) -> str:
    t = drmstime.MISSING_TIME if value is None else value
    zone, precision, compact, as_dirs = kw.zone, 0, False, False
    for item in (modifier or "").split(","):
        item = item.strip()
        if not item:
            continue
        if item.upper() in ("TAI", "UTC", "UT", "ISO", "Z"):
            zone = "ISO" if item.upper() in ("ISO", "Z") else ("UTC" if item.upper() == "UT" else item.upper())
        elif item == "A":
            compact = True
        elif item == "D":
            as_dirs = True
        elif re.fullmatch(r"-?\d", item):
            precision = max(0, int(item))
        else:
            raise FilenameFormatError(
                f"malformed filenamefmt {fmt!r}: bad time modifier {item!r} (accepted: A, D, a precision, a zone)")
    if compact:
        return drmstime.format_time_compact(t, zone)
    text = drmstime.format_time(t, zone, precision)
    if as_dirs:
        return text.split("_")[0].split("T")[0]  # the date part; a '/' would make a directory
    return text


# --------------------------------------------------------------------------------------------
# url-tar
# --------------------------------------------------------------------------------------------
def build_tar(members: Iterable[tuple[str, bytes]], mtime: float = 0.0) -> bytes:
    """A ustar archive of (name, bytes) members, deterministic for the same input."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), int(mtime), 0o644
            info.uname = info.gname = "jsoc"
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def install(emulator: Any) -> None:
    """Plugin hook (server.PLUGIN_MODULES): file routes are registered by exports.install."""
