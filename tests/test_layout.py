"""Layout templates: round trips for every built-in series, safety, validation, the fast matcher."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings, strategies as st

from jsocmirror import drmstime
from jsocmirror.layout import (
    Layout, LayoutError, compile_template, default_template, directory_matcher, parse_path, relative_path,
)
from jsocmirror.recordset import record_key
from jsocmirror.series import SeriesDef, builtin_series

REGISTRY = builtin_series()
SERIES = [sd.name for sd in REGISTRY]
LAYOUT = Layout(REGISTRY)
T_1993 = drmstime.parse_time("1993.01.01_00:00:00_TAI")
T_2040 = drmstime.parse_time("2040.01.01_00:00:00_TAI")
UNSAFE = re.compile(r'[:\\<>"|?*\x00-\x1f]')


def _values(sd, draw_int, draw_time):
    out = []
    for kw in sd.primekey_keywords:
        out.append(draw_time if kw.is_time else draw_int)
    return out


@st.composite
def records(draw):
    sd = REGISTRY.get(draw(st.sampled_from(SERIES)))
    values = []
    for kw in sd.primekey_keywords:
        if kw.is_time:
            values.append(float(draw(st.integers(int(T_1993), int(T_2040)))))
        else:
            values.append(draw(st.integers(-(2**31), 2**31 - 1)))
    segment = draw(st.sampled_from([s.name for s in sd.segments]))
    return sd, values, segment


def test_relative_path_examples_match_jsoc_export_names():
    assert relative_path(REGISTRY.get("hmi.M_45s"), {"T_REC": "2012.01.01_00:00:45_TAI", "CAMERA": "2"},
                         "magnetogram") == "hmi.M_45s/2012/01/01/hmi.m_45s.20120101_000045_TAI.2.magnetogram.fits"
    assert relative_path(REGISTRY.get("hmi.sharp_cea_720s"), [11465, "2024.06.28_00:00:00_TAI"], "magnetogram") == (
        "hmi.sharp_cea_720s/11465/2024/06/28/hmi.sharp_cea_720s.11465.20240628_000000_TAI.magnetogram.fits")
    path = relative_path(REGISTRY.get("aia.lev1_euv_12s"), ["2014-01-01T00:00:01Z", 171], "image")
    assert path == "aia.lev1_euv_12s/2014/01/01/00/aia.lev1_euv_12s.2014-01-01T000001Z.171.image.fits"
    assert parse_path(path, REGISTRY).record_key == "[2014-01-01T00:00:01Z][171]"


@settings(max_examples=300, deadline=None)
@given(records())
def test_parse_path_round_trips_every_builtin_series(rec):
    sd, values, segment = rec
    path = relative_path(sd, values, segment)
    assert not path.startswith("/") and ".." not in path.split("/") and not UNSAFE.search(path)
    parsed = parse_path(path, REGISTRY)
    assert parsed is not None and parsed.series == sd.name and parsed.segment == segment
    assert list(parsed.values) == values
    assert parsed.record_key == record_key([
        drmstime.format_time(v, kw.zone) if kw.is_time else str(v) for kw, v in zip(sd.primekey_keywords, values)])
    # printed strings give the same path as typed values
    assert relative_path(sd, list(parsed.printed), segment) == path


@settings(max_examples=200, deadline=None)
@given(records(), st.text(max_size=3))
def test_directory_matcher_agrees_with_parse(rec, noise):
    sd, values, segment = rec
    path = relative_path(sd, values, segment)
    dirpath, name = path.rsplit("/", 1)
    matcher = directory_matcher(LAYOUT.template(sd.name), dirpath)
    assert matcher is not None
    near = [name, name.replace(".fits", ".fit"), noise + name, name[:-5] + noise + ".fits", "x" + noise]
    matched, keys, segs, left = matcher.match(sorted(set(near)))
    for n in sorted(set(near)):
        slow = parse_path(dirpath + "/" + n, REGISTRY)
        if n in matched:
            i = matched.index(n)
            assert slow is not None and (keys[i], segs[i]) == (slow.record_key, slow.segment)
        else:
            assert n in left
    assert name in matched


@pytest.mark.parametrize("path", [
    "hmi.M_45s/2012/01/02/hmi.m_45s.20120101_000045_TAI.2.magnetogram.fits",  # wrong day directory
    "hmi.M_45s/2012/01/01/hmi.m_45s.20120101_000045_TAI.02.magnetogram.fits",  # padded number
    "hmi.M_45s/2012/01/01/hmi.m_45s.20120101_000045_TAI.2.Magnetogram.fits",  # segment case
    "hmi.M_45s/2012/02/30/hmi.m_45s.20120230_000045_TAI.2.magnetogram.fits",  # no such date
    "hmi.M_45s/2012/01/01/hmi.m_45s.20120101_250045_TAI.2.magnetogram.fits",  # hour 25
    "hmi.M_45s/2012/01/01/hmi.m_45s.20120101_000045_TAI.2.magnetogram.fits.part",
    "hmi.m_45s/2012/01/01/hmi.m_45s.20120101_000045_TAI.2.magnetogram.fits",  # series dir case
    "../hmi.M_45s/2012/01/01/hmi.m_45s.20120101_000045_TAI.2.magnetogram.fits",
    "nothing.fits",
])
def test_parse_path_near_misses_are_none(path):
    assert parse_path(path, REGISTRY) is None


def _string_series() -> SeriesDef:
    return SeriesDef.from_struct({
        "name": "su_test.strkeys", "primekeys": ["NAME", "T_OBS"],
        "keywords": [{"name": "NAME", "type": "string"}, {"name": "T_OBS", "type": "time", "units": "UTC"}],
        "segments": [{"name": "data"}],
    })


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_relative_path_string_keys_never_escape_the_series_directory(value):
    sd = _string_series()
    try:
        path = relative_path(sd, [value, "2020.01.01_00:00:00_UTC"], "data")
    except LayoutError as exc:  # escaped multi-byte text can outgrow a path component: refused, not cut
        assert "longer than 255 bytes" in str(exc) and len(value.encode()) * 3 > 200
        return
    parts = path.split("/")
    assert parts[0] == "su_test.strkeys" and ".." not in parts and "" not in parts and not UNSAFE.search(path)
    assert all(not re.fullmatch(r"(?i)(CON|PRN|AUX|NUL|COM\d|LPT\d)(\..*)?", p) for p in parts)
    parsed = parse_path(path, [sd])
    assert parsed is not None and parsed.values[0] == value
    assert parsed.printed[1] == "2020.01.01_00:00:00_UTC"


@pytest.mark.parametrize("template, message", [
    ("{series}/{T_REC}.fits", "lacks {CAMERA}, {segment}"),
    ("/{series}/{T_REC}.{CAMERA}.{segment}", "relative path"),
    ("{series}/../{T_REC}.{CAMERA}.{segment}", "'..'"),
    ("{series}/{T_REC}:{CAMERA}.{segment}", "may only use"),
    ("{series}/{T_REC}{CAMERA}.{segment}", "fixed text"),
    ("{series}/{FOO}/{T_REC}.{CAMERA}.{segment}", "{FOO} is not a placeholder"),
    ("{series}/{CAMERA:%Y}/{T_REC}.{CAMERA}.{segment}", "format '%Y' not accepted"),
])
def test_compile_template_rejects_bad_templates_with_one_line(template, message):
    with pytest.raises(LayoutError) as err:
        compile_template(REGISTRY.get("hmi.M_45s"), template)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_relative_path_custom_template_round_trips():
    sd = REGISTRY.get("hmi.sharp_720s")
    tpl = "sharp/{HARPNUM:div100}/{HARPNUM}/{T_REC:%Y}/{segment}/{T_REC}.fits"
    path = relative_path(sd, [11465, "2024.06.28_00:12:00_TAI"], "bitmap", template=tpl)
    assert path == "sharp/114/11465/2024/bitmap/20240628_001200_TAI.fits"
    assert parse_path(path, [sd], templates={"hmi.sharp_720s": tpl}).record_key == "[11465][2024.06.28_00:12:00_TAI]"
    assert parse_path("sharp/115/11465/2024/bitmap/20240628_001200_TAI.fits", [sd], templates={"hmi.sharp_720s": tpl}) is None


@pytest.mark.parametrize("values, segment, message", [
    ({"T_REC": "yesterday", "CAMERA": 2}, "magnetogram", "T_REC value 'yesterday'"),
    ({"T_REC": "2012.01.01_00:00:00_TAI"}, "magnetogram", "no value for prime key CAMERA"),
    ({"T_REC": "2012.01.01_00:00:00_TAI", "CAMERA": "two"}, "magnetogram", "CAMERA value 'two'"),
    ({"T_REC": "2012.01.01_00:00:00_TAI", "CAMERA": 2}, "image", "has no segment 'image'"),
    ({"T_REC": drmstime.MISSING_TIME, "CAMERA": 2}, "magnetogram", "MISSING"),
])
def test_relative_path_bad_values_are_one_line_errors(values, segment, message):
    with pytest.raises(LayoutError) as err:
        relative_path(REGISTRY.get("hmi.M_45s"), values, segment)
    assert message in str(err.value)


def test_default_template_partitions_fast_cadences_by_hour():
    assert "{T_REC:%H}" in default_template(REGISTRY.get("aia.lev1_euv_12s"))
    assert "{T_REC:%H}" not in default_template(REGISTRY.get("hmi.M_45s"))
    assert default_template(REGISTRY.get("hmi.sharp_720s")).startswith("{series}/{HARPNUM}/{T_REC:%Y}")


def test_directory_matcher_leaves_names_of_another_day_to_the_slow_path():
    tpl = LAYOUT.template("hmi.M_45s")
    matcher = directory_matcher(tpl, "hmi.M_45s/2012/01/02")
    right = tpl.render(["2012.01.02_00:00:45_TAI", 2], "magnetogram").rsplit("/", 1)[1]
    wrong = tpl.render(["2012.01.01_00:00:45_TAI", 2], "magnetogram").rsplit("/", 1)[1]
    matched, keys, segs, left = matcher.match([right, wrong])
    assert matched == [right] and keys == ["[2012.01.02_00:00:45_TAI][2]"] and left == [wrong]
    matched, keys, segs, left = matcher.match([wrong])
    assert matched == [] and left == [wrong]


@pytest.mark.parametrize("value", ["..", ".", "a/b", "../../etc", "a\\b", "x\x00y", "line\nbreak"])
def test_a_path_that_would_leave_the_series_directory_is_refused_even_if_escaping_failed(monkeypatch, value):
    """Defence in depth: were a value ever rendered unescaped, the path is refused, never used."""
    import jsocmirror.layout as layout

    sd = _string_series()
    template = "{series}/{NAME}/{T_OBS}.{segment}"
    safe = relative_path(sd, [value, "2020.01.01_00:00:00_UTC"], "data", template)
    assert safe.split("/")[0] == "su_test.strkeys" and len(safe.split("/")) == 3  # escaped: stays inside
    monkeypatch.setattr(layout, "_escape", lambda text: text)
    layout.compile_template.cache_clear()
    with pytest.raises(LayoutError, match="refusing path component") as caught:
        relative_path(sd, [value, "2020.01.01_00:00:00_UTC"], "data", template)
    assert "\n" not in str(caught.value) and "su_test.strkeys" in str(caught.value)
