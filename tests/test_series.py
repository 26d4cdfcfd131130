"""Built-in series definitions: they load, slot like JSOC, round-trip, and agree with real replies."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from jsocmirror import drmstime
from jsocmirror.series import BUILTIN_DIR, SeriesDef, SeriesRegistry, builtin_series, load_series_file

FIXTURES = Path(__file__).parents[1].parent / "shared" / "fixtures" / "protocol"
BUILTIN_NAMES = [
    "hmi.M_45s", "hmi.M_720s", "hmi.sharp_720s", "hmi.sharp_cea_720s",
    "aia.lev1", "aia.lev1_euv_12s", "aia.lev1_uv_24s",
]


def _t(text: str) -> float:
    return drmstime.parse_time(text)


def _printed_slots(series: SeriesDef, lo: str, hi: str) -> list[str]:
    """T_REC values of the inclusive slot range lo-hi, printed on the series' observed grid."""
    slot = series.slotting("T_REC")
    offset = float(series.emulator.get("trec_offset", 0))
    zone = series.keyword("T_REC").zone
    return [drmstime.format_time(slot.value(i) + offset, zone) for i in range(slot.index(_t(lo)), slot.index(_t(hi)) + 1)]


@pytest.fixture(scope="module")
def registry() -> SeriesRegistry:
    return builtin_series()


def test_builtin_series_every_required_series_loads(registry):
    assert set(BUILTIN_NAMES) <= {d.name for d in registry}
    for path in sorted(BUILTIN_DIR.glob("*.json")):
        definition = load_series_file(path)
        assert definition.name == path.name.removesuffix(".json")
        assert json.loads(path.read_text())["name"] == definition.name


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_builtin_series_structure_is_consistent(registry, name):
    d = registry.get(name.upper())  # lookups are case-insensitive
    assert d is not None and d.name == name
    names = [k.name for k in d.keywords]
    assert len(names) == len(set(names)), "duplicate keyword"
    assert "T_REC" in d.slottings
    assert d.keyword("T_REC_index").hidden and "T_REC_index" not in [k.name for k in d.visible_keywords]
    assert d.keyword("QUALITY").defval == "0x80000000"
    for kw in d.keywords:
        assert kw.type in {"time", "char", "short", "int", "longlong", "float", "double", "string"}, kw
        if kw.is_time and kw.recscope != "constant":
            assert drmstime.is_missing(_t(kw.defval)), kw
    for seg in d.segments:
        if not seg.is_link and name.startswith("hmi."):
            i = d.segments.index(seg)
            assert d.keyword(f"cparms_sg{i:03d}").defval in ("compress Rice", "")
            float(d.keyword(f"{seg.name}_bzero").defval), float(d.keyword(f"{seg.name}_bscale").defval)
        if seg.is_link:
            assert d.link(seg.link_name).target == "aia.lev1"
    emu = d.emulator
    assert {"first_time", "first_recnum", "file_size", "dims"} <= set(emu)
    # the first record time is on the series' printed grid
    slot = d.slotting("T_REC")
    first = _t(emu["first_time"])
    offset = float(emu.get("trec_offset", 0))
    assert slot.value(slot.index(first - offset)) + offset == pytest.approx(first)


def test_builtin_series_prime_keys_zones_and_segments(registry):
    m45, m720 = registry.get("hmi.m_45s"), registry.get("hmi.M_720S")
    assert m45.primekeys == m720.primekeys == ("T_REC", "CAMERA")
    assert m45.emulator["pk_values"] == {"CAMERA": [2]} and m720.emulator["pk_values"] == {"CAMERA": [3]}
    assert m45.keyword("T_REC").zone == "TAI" and registry.get("aia.lev1_euv_12s").keyword("T_REC").zone == "ISO"
    sharp, cea = registry.get("hmi.sharp_720s"), registry.get("hmi.sharp_cea_720s")
    assert sharp.primekeys == cea.primekeys == ("HARPNUM", "T_REC")
    assert len(sharp.segments) == 31 and len(cea.segments) == 11
    assert {"Br", "Bt", "Bp", "Br_err", "Bt_err", "Bp_err", "conf_disambig"} <= {s.name for s in cea.segments}
    for kw in ("NOAA_ARS", "T_FRST", "T_LAST", "USFLUX", "TOTUSJH", "LAT_FWT"):
        assert sharp.keyword(kw) is not None and cea.keyword(kw) is not None
    assert sharp.keyword("CTYPE1").defval == "HPLN-TAN" and cea.keyword("CTYPE1").defval == "CRLN-CEA"
    euv, uv, lev1 = registry.get("aia.lev1_euv_12s"), registry.get("aia.lev1_uv_24s"), registry.get("aia.lev1")
    assert euv.primekeys == uv.primekeys == ("T_REC", "WAVELNTH") and lev1.primekeys == ("T_REC", "FSN")
    assert euv.emulator["pk_values"]["WAVELNTH"] == [94, 131, 171, 193, 211, 304, 335]
    assert uv.emulator["pk_values"]["WAVELNTH"] == [1600, 1700]
    assert [s.protocol for s in euv.segments] == ["link via lev1", "link via lev1"]
    assert lev1.slotting("T_REC").kind == "ts_slot" and lev1.slotting("T_REC").round == 1.0
    assert {s.name for s in lev1.segments} == {"image_lev1", "spikes"}


def test_slotting_index_hmi_test_vectors(registry):
    m45, m720 = registry.get("hmi.M_45s"), registry.get("hmi.M_720s")
    assert _printed_slots(m45, "2012.01.01_00:00:34_TAI", "2012.01.01_00:01:19_TAI") == [
        "2012.01.01_00:00:45_TAI", "2012.01.01_00:01:30_TAI"]
    assert _printed_slots(m45, "2012.01.01_01:01:10_TAI", "2012.01.01_01:01:12_TAI") == ["2012.01.01_01:01:30_TAI"]
    hour = _printed_slots(m45, "2014.01.01_00:00:35_TAI", "2014.01.01_01:00:35_TAI")
    assert len(hour) == 81 and hour[0] == "2014.01.01_00:00:45_TAI" and hour[-1] == "2014.01.01_01:00:45_TAI"
    slot = m720.slotting("T_REC")
    start = slot.index(_t("2013.07.03_08:42_TAI"))  # exactly half a step: ts_eq rounds up
    assert drmstime.format_time(slot.value(start)) == "2013.07.03_08:48:00_TAI"
    assert m45.slotting("T_REC").epoch == drmstime.EPOCH_1993 and slot.step == 720.0


def test_slotting_index_aia_observed_grid(registry):
    euv = registry.get("aia.lev1_euv_12s")
    slots = _printed_slots(euv, "2010.07.30_13:30:34_TAI", "2010.07.30_14:00:34_TAI")
    assert len(slots) == 151 and slots[0] == "2010-07-30T13:30:02Z" and slots[-1] == "2010-07-30T14:00:02Z"
    slots = _printed_slots(euv, "2014.01.01_00:00:35_TAI", "2014.01.01_00:02:35_TAI")
    assert len(slots) == 11 and slots[0] == "2014-01-01T00:00:01Z" and slots[-1] == "2014-01-01T00:02:01Z"
    # the real definition keeps JSOC's epoch; only printing uses the observed grid
    assert drmstime.format_time(euv.slotting("T_REC").epoch) == "1993.01.01_00:00:04_TAI"


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_to_struct_round_trips(registry, name):
    d = registry.get(name)
    struct = d.to_struct()
    again = SeriesDef.from_struct(json.loads(json.dumps(struct)), name=name)
    assert again == d  # the emulator hints are not part of series_struct and not compared
    assert again.slottings == d.slottings
    raw = json.loads((BUILTIN_DIR / f"{name}.json").read_text())
    assert struct["primekeysinfo"] == raw["primekeysinfo"]
    assert struct["keywords"] == raw["keywords"] and struct["segments"] == raw["segments"]


def test_from_dirs_user_directory_adds_series(tmp_path):
    struct = builtin_series().get("hmi.M_45s").to_struct()
    struct["note"] = "my copy"
    (tmp_path / "hmi.V_45s.json").write_text(json.dumps(struct))  # no "name": the file name stands in
    registry = SeriesRegistry.from_dirs(tmp_path)
    assert registry.get("hmi.v_45s").name == "hmi.V_45s" and registry.get("hmi.v_45s").note == "my copy"
    assert len(registry) == len(builtin_series()) + 1


def test_load_series_file_rejects_bad_definitions(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="cannot read series definition"):
        load_series_file(bad)
    bad.write_text(json.dumps({"primekeys": ["T_REC"], "keywords": []}))
    with pytest.raises(ValueError, match="prime keys"):
        load_series_file(bad)


def _fixture_structs():
    if not FIXTURES.is_dir():
        return []
    return sorted(FIXTURES.glob("*series_struct*.json"))


@pytest.mark.skipif(not FIXTURES.is_dir(), reason="shared fixtures absent")
@pytest.mark.parametrize("path", _fixture_structs(), ids=lambda p: p.name.split("__")[-1])
def test_real_series_struct_loads_and_slots_like_ours(registry, path, tmp_path):
    name = path.name.split("__")[-1].removesuffix(".json")
    copy = tmp_path / f"{name}.json"  # a user drops a real reply into a definitions directory
    shutil.copyfile(path, copy)
    real = SeriesRegistry.from_dirs(tmp_path, builtin=False).get(name)
    assert real is not None and real.name == name
    ours = registry.get(name) or registry.get("hmi.M_45s")  # hmi.v_45s slots like hmi.M_45s
    assert real.primekeys == ours.primekeys
    assert real.dbindex == ours.dbindex
    assert real.slottings == ours.slottings
    if registry.get(name) is not None:
        assert [s.name for s in real.segments] == [s.name for s in ours.segments]
        assert [s.protocol for s in real.segments] == [s.protocol for s in ours.segments]
        assert [lk.target for lk in real.links] == [lk.target for lk in ours.links]
        for kw in ours.keywords:  # every keyword we define exists upstream, alike in all but notes/units
            upstream = real.keyword(kw.name)
            assert upstream is not None, kw.name
            assert (upstream.type, upstream.recscope, upstream.defval, upstream.linkinfo) == (
                kw.type, kw.recscope, kw.defval, kw.linkinfo), kw.name
            assert not kw.is_time or upstream.zone == kw.zone, kw.name
        order = [k.name for k in real.keywords if ours.keyword(k.name) is not None]
        assert order == [k.name for k in ours.keywords], "keywords in JSOC's series order"
    raw = json.loads(path.read_text())
    assert real.to_struct()["primekeysinfo"] == raw["primekeysinfo"]
