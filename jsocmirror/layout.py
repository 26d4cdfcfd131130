"""Where a record's segment file lives in the mirror: pure path logic, no I/O.

A *layout template* is a ``/``-separated relative path with placeholders (docs/layout.md):

- ``{series}`` the series name as JSOC spells it (``hmi.M_45s``); ``{series:lower}`` lower-cased,
  as JSOC's export file names spell it (``hmi.m_45s``);
- ``{segment}`` the segment name (``magnetogram``);
- ``{KEY}`` a prime key's full value. A time key prints compactly, as JSOC's ``{T_REC:A}`` does
  (``20120101_000045_TAI``, ``2014-01-01T000001Z``); integers in decimal; other values
  percent-escaped so they never hold a separator or a character some filesystem refuses;
- ``{KEY:%Y}``, ``{KEY:%m}``, ``{KEY:%d}``, ``{KEY:%H}`` calendar parts of a time key (in its zone),
  ``{KEY:divN}`` an integer key divided by N (rounded down): partitions, never the key itself.

A template must hold every prime key in full and ``{segment}``; ``relative_path`` and
``parse_path`` are exact inverses (a path is accepted only if rendering its values gives it
back, so near-misses are rejected rather than guessed at).
"""

from __future__ import annotations

import math
import re
import string
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, Iterable, Mapping, Sequence

from jsocmirror import drmstime
from jsocmirror.errors import UsageError
from jsocmirror.recordset import record_key
from jsocmirror.series import SeriesDef, SeriesRegistry


class LayoutError(UsageError):
    """A layout template or a key value that cannot become a safe path."""


#: Above this many slots a day (a step under 30 s) the default layout adds an hour directory,
#: so that with several values of the other prime keys no directory holds more than ~10k files.
HOUR_PARTITION_SLOTS_PER_DAY = 2880

_SAFE_LITERAL = re.compile(r"^[A-Za-z0-9._+-]*$")
_SAFE_VALUE_CHARS = frozenset(string.ascii_letters + string.digits + "_+-")
_WINDOWS_RESERVED = re.compile(r"^(CON|PRN|AUX|NUL|COM[0-9]|LPT[0-9])$", re.I)
_MAX_COMPONENT = 255
_UNSAFE_COMPONENT = re.compile(r"[/\\\x00-\x1f\x7f]")
_TIME_PARTS = {"%Y": ("y", r"\d{4}"), "%m": ("mo", r"\d\d"), "%d": ("d", r"\d\d"), "%H": ("h", r"\d\d")}
_PRINTED_TIME = re.compile(
    r"^(?P<y>\d{4})[.-](?P<mo>\d\d)[.-](?P<d>\d\d)[_T](?P<h>\d\d):(?P<mi>\d\d):(?P<s>\d\d)(?P<f>\.\d+)?"
)


@dataclass(frozen=True)
class ParsedPath:
    """What a layout path says: series, prime-key values (as JSOC prints them), segment."""

    series: str
    keys: tuple[str, ...]  # prime-key names, in series order
    printed: tuple[str, ...]  # each value as rs_list prints it
    values: tuple[Any, ...]  # typed: internal time (float) for time keys, int, float or str
    segment: str

    @property
    def record_key(self) -> str:
        return record_key(self.printed)

    @property
    def key_values(self) -> dict[str, str]:
        return dict(zip(self.keys, self.printed))


@dataclass(frozen=True)
class _Field:
    kind: str  # series | segment | key
    key: str | None = None  # canonical prime-key name
    fmt: str | None = None  # None (full value), lower, %Y.. or divN


class Template:
    """A compiled layout template for one series."""

    def __init__(self, series_def: SeriesDef, text: str):
        self.series_def = series_def
        self.text = text
        self.components: list[list[str | _Field]] = [_parse_component(series_def, text, c) for c in _split(text)]
        full = {f.key for comp in self.components for f in comp if isinstance(f, _Field) and f.kind == "key" and f.fmt is None}
        has_segment = any(isinstance(f, _Field) and f.kind == "segment" for comp in self.components for f in comp)
        lacking = [k for k in series_def.primekeys if series_def.keyword(k).name not in full]
        if lacking or not has_segment:
            need = ", ".join("{" + k + "}" for k in series_def.primekeys)
            what = ", ".join("{" + k + "}" for k in lacking) + ("" if has_segment else (", " if lacking else "") + "{segment}")
            raise LayoutError(
                f"layout template {text!r} for {series_def.name} lacks {what} "
                f"(a template needs every prime key in full ({need}) and {{segment}})"
            )
        self._keywords = {kw.name: kw for kw in series_def.primekey_keywords}
        self._segments = {s.name: s for s in series_def.segments}
        self.regex = re.compile("/".join(self._component_regex(c, i) for i, c in enumerate(self.components)))
        first = self.components[0]
        #: The first directory when it is fixed text (``hmi.M_45s``): lets a registry pick the template fast.
        self.prefix = "".join(first) if all(isinstance(t, str) for t in first) and len(self.components) > 1 else None
        if self.prefix is None and len(first) == 1 and isinstance(first[0], _Field) and first[0].kind == "series":
            self.prefix = series_def.name if first[0].fmt is None else series_def.name.lower()

    # -- rendering -------------------------------------------------------------------------
    def render(self, values: Mapping[str, Any] | Sequence[Any], segment: str) -> str:
        typed = self.typed_values(values)
        seg = self._segment_name(segment)
        return self._render_typed(typed, seg)

    def _render_typed(self, typed: dict[str, Any], segment: str) -> str:
        texts = {key: _value_text(self._keywords[key], value) for key, value in typed.items()}
        out = []
        for comp in self.components:
            part = "".join(tok if isinstance(tok, str) else self._field_text(tok, typed, texts, segment) for tok in comp)
            if len(part.encode()) > _MAX_COMPONENT:
                raise LayoutError(f"path component {part[:40]!r}... is longer than {_MAX_COMPONENT} bytes")
            if part in ("", ".", "..") or _UNSAFE_COMPONENT.search(part):
                # Values are escaped above, so this never happens; it is the last line of defence
                # that a path made of a server's values stays inside its series' directory.
                shown = repr(part) if len(part) <= 60 else repr(part[:56]) + "..."
                raise LayoutError(
                    f"{self.series_def.name}: refusing path component {shown} made from prime-key values "
                    f"{_shown_values(typed)} (accepted: a name without '/', '\\' or control characters, "
                    "other than '.' and '..')")
            out.append(part)
        return "/".join(out)

    def _field_text(self, field: _Field, typed: dict[str, Any], texts: dict[str, str], segment: str) -> str:
        if field.kind == "series":
            return self.series_def.name.lower() if field.fmt == "lower" else self.series_def.name
        if field.kind == "segment":
            return segment
        if field.fmt is None:
            return texts[field.key]
        value = typed[field.key]
        if field.fmt.startswith("div"):
            return str(value // int(field.fmt[3:]))
        parts = _time_parts(value, self._keywords[field.key].zone)
        return parts[_TIME_PARTS[field.fmt][0]]

    def typed_values(self, values: Mapping[str, Any] | Sequence[Any]) -> dict[str, Any]:
        """Prime-key values (typed or as rs_list prints them) as typed values by canonical key name."""
        sd = self.series_def
        if isinstance(values, Mapping):
            lowered = {str(k).lower(): v for k, v in values.items()}
            missing = [k for k in sd.primekeys if k.lower() not in lowered]
            if missing:
                raise LayoutError(f"{sd.name}: no value for prime key {missing[0]} (prime keys: {', '.join(sd.primekeys)})")
            raw = [lowered[k.lower()] for k in sd.primekeys]
        else:
            raw = list(values)
            if len(raw) != len(sd.primekeys):
                raise LayoutError(
                    f"{sd.name}: {len(raw)} prime-key values {raw!r} given; expected {len(sd.primekeys)} "
                    f"({', '.join(sd.primekeys)})"
                )
        return {kw.name: _coerce(sd.name, kw, v) for kw, v in zip(sd.primekey_keywords, raw)}

    def _segment_name(self, segment: str) -> str:
        seg = self.series_def.segment(segment)
        if seg is None:
            names = ", ".join(s.name for s in self.series_def.segments) or "none"
            raise LayoutError(f"{self.series_def.name} has no segment {segment!r} (segments: {names})")
        if not _SAFE_LITERAL.match(seg.name) or seg.name in (".", ".."):
            raise LayoutError(f"segment name {seg.name!r} cannot be a path component")
        return seg.name

    # -- parsing ---------------------------------------------------------------------------
    def parse(self, relpath: str) -> ParsedPath | None:
        match = self.regex.fullmatch(relpath)
        if match is None:
            return None
        typed: dict[str, Any] = {}
        segment = None
        try:
            for name, text in match.groupdict().items():
                field = self._group_fields[name]
                if field.kind == "segment":
                    segment = text
                elif field.kind == "key" and field.fmt is None:
                    value = _value_from_text(self._keywords[field.key], text)
                    if typed.setdefault(field.key, value) != value:
                        return None
            if segment is None or self._render_typed(typed, segment) != relpath:
                return None  # not canonical: a near miss (wrong directory, padded number, bad date...)
        except (ValueError, LayoutError, OverflowError):
            return None
        return self._parsed(typed, segment)

    def _parsed(self, typed: dict[str, Any], segment: str) -> ParsedPath:
        kws = self.series_def.primekey_keywords
        return ParsedPath(
            series=self.series_def.name,
            keys=tuple(kw.name for kw in kws),
            printed=tuple(printed_value(kw, typed[kw.name]) for kw in kws),
            values=tuple(typed[kw.name] for kw in kws),
            segment=segment,
        )

    def _component_regex(self, comp: list[str | _Field], index: int) -> str:
        if index == 0:
            self._group_fields: dict[str, _Field] = {}
        out = []
        for tok in comp:
            if isinstance(tok, str):
                out.append(re.escape(tok))
                continue
            name = f"g{len(self._group_fields)}"
            self._group_fields[name] = tok
            out.append(f"(?P<{name}>{self._field_regex(tok)})")
        return "".join(out)

    def _field_regex(self, field: _Field) -> str:
        if field.kind == "series":
            return re.escape(self.series_def.name.lower() if field.fmt == "lower" else self.series_def.name)
        if field.kind == "segment":
            names = sorted((s.name for s in self.series_def.segments), key=len, reverse=True)
            return "|".join(re.escape(n) for n in names) or "(?!)"
        kw = self._keywords[field.key]
        if field.fmt is None:
            if kw.is_time:
                if kw.zone == "ISO":
                    return r"\d{4}-\d\d-\d\dT\d{6}(?:\.\d+)?Z"
                return r"\d{8}_\d{6}(?:\.\d+)?_" + kw.zone
            if kw.is_int:
                return r"-?\d+"
            return r"[A-Za-z0-9_+%~-]+"
        if field.fmt.startswith("div"):
            return r"-?\d+"
        return _TIME_PARTS[field.fmt][1]


def _split(text: str) -> list[str]:
    if not isinstance(text, str) or not text.strip():
        raise LayoutError(f"layout template {text!r} is empty (expected e.g. {{series}}/{{T_REC:%Y}}/...)")
    if text.startswith("/") or "\\" in text:
        raise LayoutError(f"layout template {text!r} must be a relative path with '/' separators")
    parts = text.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise LayoutError(f"layout template {text!r} has an empty, '.' or '..' path component")
    return parts


_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


def _parse_component(sd: SeriesDef, text: str, comp: str) -> list[str | _Field]:
    tokens: list[str | _Field] = []
    pos = 0
    for m in _PLACEHOLDER.finditer(comp):
        if m.start() > pos:
            tokens.append(_literal(text, comp[pos:m.start()]))
        field = _field(sd, text, m.group(1))
        if tokens and isinstance(tokens[-1], _Field) and _is_variable(field) and _is_variable(tokens[-1]):
            raise LayoutError(
                f"layout template {text!r}: placeholders {{{m.group(1)}}} and the one before it need "
                "some fixed text between them (e.g. '.')"
            )
        tokens.append(field)
        pos = m.end()
    if pos < len(comp):
        tokens.append(_literal(text, comp[pos:]))
    return tokens


def _is_variable(field: _Field) -> bool:
    return field.kind != "series"


def _literal(text: str, lit: str) -> str:
    if "{" in lit or "}" in lit or not _SAFE_LITERAL.match(lit):
        raise LayoutError(
            f"layout template {text!r}: text {lit!r} may only use letters, digits and . _ + - "
            "(placeholders are {series}, {segment}, {KEY}, {KEY:%Y|%m|%d|%H}, {KEY:divN})"
        )
    return lit


def _field(sd: SeriesDef, text: str, spec: str) -> _Field:
    name, _, fmt = spec.partition(":")
    fmt = fmt or None
    if name == "series":
        if fmt not in (None, "lower"):
            raise LayoutError(f"layout template {text!r}: {{series:{fmt}}} is not known (use {{series}} or {{series:lower}})")
        return _Field("series", fmt=fmt)
    if name == "segment":
        if fmt is not None:
            raise LayoutError(f"layout template {text!r}: {{segment}} takes no format")
        return _Field("segment")
    kw = sd.keyword(name)
    if kw is None or kw.name.lower() not in {k.lower() for k in sd.primekeys}:
        raise LayoutError(
            f"layout template {text!r}: {{{spec}}} is not a placeholder of {sd.name} "
            f"(use {{series}}, {{segment}} or a prime key: {', '.join(sd.primekeys)})"
        )
    if fmt == "A":
        fmt = None
    if fmt is not None:
        if kw.is_time and fmt in _TIME_PARTS:
            pass
        elif kw.is_int and re.fullmatch(r"div[1-9]\d*", fmt):
            pass
        else:
            accepted = "%Y, %m, %d or %H" if kw.is_time else ("divN, e.g. div1000" if kw.is_int else "no format")
            raise LayoutError(f"layout template {text!r}: {{{spec}}}: format {fmt!r} not accepted for {kw.name} ({accepted})")
    return _Field("key", key=kw.name, fmt=fmt)


# -- values ------------------------------------------------------------------------------------
def _coerce(series: str, kw, value: Any) -> Any:
    """A typed prime-key value from a typed value or the text rs_list prints."""
    try:
        if kw.is_time:
            if isinstance(value, str):
                t = drmstime.parse_time(value)
            elif isinstance(value, datetime):
                t = drmstime.from_datetime(value)
            else:
                t = float(value)
            if drmstime.is_missing(t) or not math.isfinite(t):
                raise ValueError("a MISSING time")
            return t
        if kw.is_int:
            if isinstance(value, str):
                text = value.strip()
                return int(text, 16) if text.lower().startswith(("0x", "-0x")) else int(text)
            if isinstance(value, float):
                if not value.is_integer():
                    raise ValueError("not a whole number")
                return int(value)
            return int(value)
        if kw.is_float:
            f = float(value)
            if not math.isfinite(f):
                raise ValueError("not finite")
            return f
        return str(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise LayoutError(
            f"{series}: prime key {kw.name} value {value!r} is not a valid {kw.type} ({exc})"
        ) from None


def _shown_values(typed: dict[str, Any]) -> str:
    text = repr(list(typed.values()))
    return text if len(text) <= 80 else text[:76] + "...]"


def _time_precision(t: float) -> int:
    frac = abs(t - round(t))
    if frac < 5e-7:
        return 0
    return 3 if abs(t * 1000 - round(t * 1000)) < 5e-4 else 6


def _time_parts(t: float, zone: str) -> dict[str, str]:
    precision = _time_precision(t)
    text = drmstime.format_time(t, zone, precision)
    m = _PRINTED_TIME.match(text)
    if m is None or len(m["y"]) != 4:
        raise LayoutError(f"time {text!r} cannot be part of a path (years 0000-9999 only)")
    return m.groupdict()


def _value_text(kw, value: Any) -> str:
    """The path form of one prime-key value."""
    if kw.is_time:
        p = _time_parts(value, kw.zone)
        f = p["f"] or ""
        if kw.zone == "ISO":
            return f"{p['y']}-{p['mo']}-{p['d']}T{p['h']}{p['mi']}{p['s']}{f}Z"
        return f"{p['y']}{p['mo']}{p['d']}_{p['h']}{p['mi']}{p['s']}{f}_{kw.zone}"
    if kw.is_int:
        return str(value)
    return _escape(_float_text(value) if kw.is_float else value)


def _value_from_text(kw, text: str) -> Any:
    if kw.is_time:
        if kw.zone == "ISO":
            m = re.fullmatch(r"(\d{4})-(\d\d)-(\d\d)T(\d\d)(\d\d)(\d\d)(\.\d+)?Z", text)
            printed = f"{m[1]}-{m[2]}-{m[3]}T{m[4]}:{m[5]}:{m[6]}{m[7] or ''}Z"
        else:
            m = re.fullmatch(r"(\d{4})(\d\d)(\d\d)_(\d\d)(\d\d)(\d\d)(\.\d+)?_([A-Z]+)", text)
            printed = f"{m[1]}.{m[2]}.{m[3]}_{m[4]}:{m[5]}:{m[6]}{m[7] or ''}_{m[8]}"
        return drmstime.parse_time(printed)
    if kw.is_int:
        return int(text)
    raw = _unescape(text)
    return float(raw) if kw.is_float else raw


def printed_value(kw, value: Any) -> str:
    """A typed prime-key value as rs_list prints it (and as record keys hold it)."""
    if kw.is_time:
        return drmstime.format_time(value, kw.zone, _time_precision(value))
    if kw.is_int:
        return str(value)
    if kw.is_float:
        return _float_text(value)
    return str(value)


def _float_text(value: float) -> str:
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def _escape(value: str) -> str:
    """Percent-escape everything but letters, digits, ``_+-``; ``~`` stands for the empty string."""
    if value == "":
        return "~"
    out = "".join(ch if ch in _SAFE_VALUE_CHARS else "".join(f"%{b:02X}" for b in ch.encode()) for ch in value)
    if _WINDOWS_RESERVED.match(out):
        out = f"%{ord(out[0]):02X}" + out[1:]
    return out


def _unescape(text: str) -> str:
    if text == "~":
        return ""
    if "~" in text:
        raise ValueError("'~' only stands alone")
    data = bytearray()
    i = 0
    while i < len(text):
        if text[i] == "%":
            data.append(int(text[i + 1:i + 3], 16))
            i += 3
        else:
            data.extend(text[i].encode())
            i += 1
    return data.decode()


# -- defaults and the public API ---------------------------------------------------------------
def default_template(series_def: SeriesDef) -> str:
    """JSOC-like names, partitioned: leading non-time keys, then year/month/day (and hour) directories."""
    kws = series_def.primekey_keywords
    time_index = next((i for i, kw in enumerate(kws) if kw.is_time), None)
    dirs = ["{series}"]
    if time_index is not None:
        dirs += ["{" + kw.name + "}" for kw in kws[:time_index]]
        t = kws[time_index].name
        dirs += [f"{{{t}:%Y}}", f"{{{t}:%m}}", f"{{{t}:%d}}"]
        slot = series_def.slotting(t)
        if slot is not None and slot.step > 0 and 86400.0 / slot.step > HOUR_PARTITION_SLOTS_PER_DAY:
            dirs.append(f"{{{t}:%H}}")
    elif kws and kws[0].is_int:
        dirs.append("{" + kws[0].name + ":div1000}")
    name = "{series:lower}." + "".join("{" + kw.name + "}." for kw in kws) + "{segment}.fits"
    return "/".join(dirs + [name])


@lru_cache(maxsize=512)
def compile_template(series_def: SeriesDef, template: str | None = None) -> Template:
    """The compiled template of a series (its default when ``template`` is None). Cached."""
    return Template(series_def, template or default_template(series_def))


def validate_template(series_def: SeriesDef, template: str) -> None:
    """Raise LayoutError (one line, naming what is wrong) unless ``template`` is usable."""
    compile_template(series_def, template)


def relative_path(
    series_def: SeriesDef, key_values: Mapping[str, Any] | Sequence[Any], segment: str, template: str | None = None
) -> str:
    """The path, relative to the data root, of one segment file of one record.

    ``key_values`` maps prime keys to values, or lists them in prime-key order; values may be
    typed (internal time, datetime, int) or the strings rs_list prints.
    """
    return compile_template(series_def, template).render(key_values, segment)


class Layout:
    """The templates of many series: renders paths and tells which series a path belongs to."""

    def __init__(self, series_defs: SeriesRegistry | Iterable[SeriesDef], templates: Mapping[str, str | None] | None = None):
        defs = list(series_defs)
        templates = {k.lower(): v for k, v in (templates or {}).items()}
        self.templates = {sd.name.lower(): compile_template(sd, templates.get(sd.name.lower())) for sd in defs}
        self._by_prefix: dict[str, list[Template]] = {}
        self._others: list[Template] = []
        for tpl in self.templates.values():
            if tpl.prefix is None:
                self._others.append(tpl)
            else:
                self._by_prefix.setdefault(tpl.prefix, []).append(tpl)

    def template(self, series: str) -> Template | None:
        return self.templates.get(series.lower())

    def candidates(self, relpath: str) -> list[Template]:
        """Templates that could match a path (by its first directory)."""
        first = relpath.split("/", 1)[0]
        return self._by_prefix.get(first, []) + self._others

    def parse(self, relpath: str) -> ParsedPath | None:
        for tpl in self.candidates(relpath):
            parsed = tpl.parse(relpath)
            if parsed is not None:
                return parsed
        return None

    def relative_path(self, series: str, key_values, segment: str) -> str:
        tpl = self.template(series)
        if tpl is None:
            raise LayoutError(f"series {series!r} has no layout here (known: {', '.join(sorted(self.templates))})")
        return tpl.render(key_values, segment)


def parse_path(
    relpath: str,
    registry_or_series_defs: SeriesRegistry | Iterable[SeriesDef] | Layout,
    templates: Mapping[str, str | None] | None = None,
) -> ParsedPath | None:
    """Series, prime-key values and segment of a layout path, or None if it is not one.

    Never opens the file. ``templates`` maps series names to custom templates (default otherwise).
    """
    layout = registry_or_series_defs if isinstance(registry_or_series_defs, Layout) else _layout_for(
        registry_or_series_defs, templates
    )
    return layout.parse(relpath)


def _layout_for(defs, templates) -> Layout:
    try:
        key = (tuple(defs), tuple(sorted((templates or {}).items())))
        hash(key)
    except TypeError:
        return Layout(defs, templates)
    return _cached_layout(*key)


@lru_cache(maxsize=32)
def _cached_layout(defs: tuple[SeriesDef, ...], templates: tuple) -> Layout:
    return Layout(defs, dict(templates))


# -- the scanner's fast path ------------------------------------------------------------------
class DirectoryMatcher:
    """Record keys of many file names in one directory at C speed (used by ``scan``).

    Only for templates whose directories fix a time key's date (and whose file name holds all
    full key values): then one regex over the whole listing accepts the names ``Template.parse``
    would accept, and a format string with the directory's values baked in turns each match into
    its record key. The regex depends only on the template, not on the directory (compiling one
    per directory cost ~1 ms each), so the values the directory fixes are captured and compared
    afterwards; a name whose captured value differs is left to the slow path, like any name the
    regex does not accept.
    """

    def __init__(self, regex: re.Pattern, key_format: str, key_groups: tuple[int, ...], seg_group: int,
                 fixed: tuple[tuple[int, str], ...]):
        self.regex = regex
        self.key_format = key_format
        self.key_groups = key_groups  # findall columns that fill key_format, in its order
        self.seg_group = seg_group
        self.fixed = fixed  # (findall column, the text the directory requires there)

    def match(self, names: list[str]) -> tuple[list[str], list[str], list[str], list[str]]:
        """(matched names, their record keys, their segments, names left for the slow path)."""
        odd = [n for n in names if "\n" in n]  # a newline in a name would split it in two
        if odd:
            names = [n for n in names if "\n" not in n]
        found = self.regex.findall("\n".join(names))
        if self.regex.groups == 1:
            found = [(f,) for f in found]  # findall gives bare strings for a single group
        cols = list(zip(*found))
        if len(found) == len(names) and all(cols and len(set(cols[i])) == 1 and cols[i][0] == text
                                            for i, text in self.fixed):
            matched, left = names, []  # the usual case: every name matched, in order
        else:  # which names matched: one at a time (rare: stray or misplaced files)
            matched, rows = [], []
            for name in names:
                m = self.regex.fullmatch(name)
                if m is not None and all(m.group(i + 1) == text for i, text in self.fixed):
                    matched.append(name)
                    rows.append(m.groups())
            cols = list(zip(*rows))
            left = sorted(set(names) - set(matched))
        if not matched:
            return [], [], [], list(names) + odd
        segments = list(cols[self.seg_group])
        if self.key_groups:
            keys = list(map(self.key_format.__mod__, zip(*[cols[i] for i in self.key_groups])))
        else:
            keys = [self.key_format] * len(matched)
        return list(matched), keys, segments, left + odd


def directory_matcher(tpl: Template, dirpath: str) -> DirectoryMatcher | None:
    """A fast matcher for the files directly in ``dirpath`` (relative), or None when there is none."""
    if len(tpl.components) < 2:
        return None
    dir_comps, file_comp = tpl.components[:-1], tpl.components[-1]
    dir_fields: dict[str, _Field] = {}
    pattern = []
    for comp in dir_comps:
        part = []
        for tok in comp:
            if isinstance(tok, str):
                part.append(re.escape(tok))
            else:
                name = f"g{len(dir_fields)}"
                dir_fields[name] = tok
                part.append(f"(?P<{name}>{tpl._field_regex(tok)})")
        pattern.append("".join(part))
    m = re.fullmatch("/".join(pattern), dirpath)
    if m is None:
        return None
    fixed_parts: dict[str, dict[str, str]] = {}
    fixed_ints: dict[str, str] = {}
    for name, text in m.groupdict().items():
        field = dir_fields[name]
        if field.kind != "key":
            continue
        kw = tpl._keywords[field.key]
        if field.fmt is None:
            if not kw.is_int or text != str(int(text)) or fixed_ints.setdefault(field.key, text) != text:
                return None
        elif field.fmt in _TIME_PARTS:
            part = _TIME_PARTS[field.fmt][0]
            if fixed_parts.setdefault(field.key, {}).setdefault(part, text) != text:
                return None
        else:
            return None  # divN buckets: leave to the slow path
    for key, parts in fixed_parts.items():
        if not {"y", "mo", "d"} <= parts.keys() or not _valid_date(tpl._keywords[key].zone, parts):
            return None
    # findall columns: one per group below, in order
    regex_parts: list[str] = []
    printed: dict[str, str] = {}  # key -> printf piece
    key_cols: list[tuple[str, int]] = []  # (key name, column) of each column that fills a %s
    fixed: list[tuple[int, str]] = []
    seg_group = None
    n_cols = 0

    def group(rx: str) -> int:
        nonlocal n_cols
        regex_parts.append("(" + rx + ")")
        n_cols += 1
        return n_cols - 1

    for tok in file_comp:
        if isinstance(tok, str):
            regex_parts.append(re.escape(tok))
            continue
        if tok.kind == "series":
            regex_parts.append(tpl._field_regex(tok))
        elif tok.kind == "segment":
            if seg_group is not None:
                return None
            seg_group = group(tpl._field_regex(tok))
        elif tok.fmt is not None or tok.key in printed:
            return None
        else:
            kw = tpl._keywords[tok.key]
            if kw.is_int:
                if tok.key in fixed_ints:
                    fixed.append((group(r"0|-?[1-9]\d*"), fixed_ints[tok.key]))
                    printed[tok.key] = fixed_ints[tok.key]
                else:
                    key_cols.append((tok.key, group(r"0|-?[1-9]\d*")))
                    printed[tok.key] = "%s"
            elif kw.is_time and tok.key in fixed_parts:
                p = fixed_parts[tok.key]
                hour_fixed = "h" in p
                hour_pf = p["h"] if hour_fixed else "%s"
                # the date (and hour) the directory fixes: one column, compared as a whole
                if kw.zone == "ISO":
                    day_rx, day = r"\d{4}-\d\d-\d\dT", f"{p['y']}-{p['mo']}-{p['d']}T"
                else:
                    day_rx, day = r"\d{8}_", f"{p['y']}{p['mo']}{p['d']}_"
                if hour_fixed:
                    fixed.append((group(day_rx + r"(?:[01]\d|2[0-3])"), day + p["h"]))
                else:
                    fixed.append((group(day_rx), day))
                    key_cols.append((tok.key, group(r"[01]\d|2[0-3]")))
                key_cols += [(tok.key, group(r"[0-5]\d")), (tok.key, group(r"[0-5]\d"))]
                if kw.zone == "ISO":
                    regex_parts.append("Z")
                    printed[tok.key] = f"{p['y']}-{p['mo']}-{p['d']}T{hour_pf}:%s:%sZ"
                else:
                    regex_parts.append("_" + re.escape(kw.zone))
                    printed[tok.key] = f"{p['y']}.{p['mo']}.{p['d']}_{hour_pf}:%s:%s_{kw.zone}"
            else:
                return None
    names = [kw.name for kw in tpl.series_def.primekey_keywords]
    if seg_group is None or set(printed) != set(names):
        return None
    key_format = "".join("[" + printed[k].replace("%", "%%").replace("%%s", "%s") + "]" for k in names)
    # record-key order of the key columns (a time key's columns stay together and in order)
    key_groups = tuple(col for _, col in sorted(key_cols, key=lambda kc: (names.index(kc[0]), kc[1])))
    # the pattern text depends on the template only, so re's cache compiles it once
    regex = re.compile("^" + "".join(regex_parts) + "$", re.M)
    return DirectoryMatcher(regex, key_format, key_groups, seg_group, tuple(fixed))


def _valid_date(zone: str, parts: dict[str, str]) -> bool:
    hour = parts.get("h", "00")
    if zone == "ISO":
        text = f"{parts['y']}-{parts['mo']}-{parts['d']}T{hour}:00:00Z"
    else:
        text = f"{parts['y']}.{parts['mo']}.{parts['d']}_{hour}:00:00_{zone}"
    try:
        again = _time_parts(drmstime.parse_time(text), zone)
    except (ValueError, LayoutError):
        return False
    return all(again[k] == v for k, v in parts.items())
