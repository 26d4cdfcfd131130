"""Record-set parsing against the emulated series: DATA_MODEL.md section 2 and PROTOCOL.md section 4."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jsocmirror import drmstime
from jsocmirror.errors import RecordSetError
from jsocmirror.recordset import (
    First,
    HalfOpen,
    IndexSel,
    KeyFilter,
    Last,
    Point,
    Range,
    RecnumFilter,
    WhereFilter,
    build_recordset,
    format_range,
    format_slot,
    item_matches,
    parse_recordset,
    parse_where,
    record_key,
    record_spec,
    slot_of_value,
    slot_range,
    split_record_key,
)
from jsocmirror.series import SeriesDef, builtin_series

FIXTURES = Path(__file__).parents[1].parent / "shared" / "fixtures" / "protocol"
REGISTRY = builtin_series()
lookup = REGISTRY.get


def parse1(text: str):
    specs = parse_recordset(text, lookup)
    assert len(specs) == 1
    return specs[0]


def trec_slots(spec) -> list[str]:
    """The printed T_REC of every slot the spec's T_REC filter selects."""
    (flt,) = [f for f in spec.filters if isinstance(f, KeyFilter) and f.key == "T_REC"]
    slots = sorted({i for item in flt.items for i in slot_range(item)})
    return [format_slot(spec.series, "T_REC", i) for i in slots]


# -- DATA_MODEL.md section 2 test vectors (hmi.v_45s / hmi.B_720s slot like hmi.M_45s / hmi.M_720s) ------


def test_parse_recordset_half_open_duration_counts_slots():
    assert len(trec_slots(parse1("hmi.v_45s[2013.07.03_08:42_TAI/3m]".replace("v_45s", "M_45s")))) == 4
    assert len(trec_slots(parse1("hmi.M_45s[2013.07.03_08:42_TAI/4m]"))) == 5


def test_parse_recordset_720s_duration_starts_at_rounded_slot():
    assert trec_slots(parse1("hmi.M_720s[2013.07.03_08:42_TAI/40m]")) == [
        "2013.07.03_08:48:00_TAI", "2013.07.03_09:00:00_TAI", "2013.07.03_09:12:00_TAI"]


def test_parse_recordset_duration_with_skip():
    spec = parse1("hmi.M_45s[2016.04.01_TAI/1d@6h]")
    assert trec_slots(spec) == [f"2016.04.01_{h}:00:00_TAI" for h in ("00", "06", "12", "18")]
    assert spec.filters[0].items[0].every == 480


def test_parse_recordset_inclusive_range_81_records():
    slots = trec_slots(parse1("hmi.M_45s[2014.01.01_00:00:35_TAI-2014.01.01_01:00:35_TAI]"))
    assert len(slots) == 81 and slots[0] == "2014.01.01_00:00:45_TAI" and slots[-1] == "2014.01.01_01:00:45_TAI"


# -- PROTOCOL.md section 4 checks ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ds", "expected"),
    [
        ("hmi.M_45s[2012.01.01_00:00:34_TAI-2012.01.01_00:01:19_TAI]",
         ["2012.01.01_00:00:45_TAI", "2012.01.01_00:01:30_TAI"]),
        ("hmi.M_45s[2012.01.01_00:00:34_TAI-2012.01.01_00:02:04_TAI@90.0s]",
         ["2012.01.01_00:00:45_TAI", "2012.01.01_00:02:15_TAI"]),
        ("hmi.M_45s[2012.01.01_01:01:10_TAI-2012.01.01_01:01:12_TAI]", ["2012.01.01_01:01:30_TAI"]),
        ("aia.lev1_euv_12s[2014.01.01_00:00:35_TAI-2014.01.01_00:00:59_TAI][304]",
         ["2014-01-01T00:00:01Z", "2014-01-01T00:00:13Z", "2014-01-01T00:00:25Z"]),  # slots span [t-2, t+10)
    ],
)
def test_parse_recordset_protocol_checks(ds, expected):
    assert trec_slots(parse1(ds)) == expected


def test_parse_recordset_aia_ranges_on_observed_grid():
    spec = parse1("aia.lev1_euv_12s[2010.07.30_13:30:34_TAI-2010.07.30_14:00:34_TAI][193]")
    slots = trec_slots(spec)
    assert len(slots) == 151 and slots[0] == "2010-07-30T13:30:02Z" and slots[-1] == "2010-07-30T14:00:02Z"
    assert spec.filters[1] == KeyFilter("WAVELNTH", (Point(193),))
    assert len(trec_slots(parse1("aia.lev1_euv_12s[2014.01.01_00:00:35_TAI-2014.01.01_00:02:35_TAI][304]"))) == 11


def _recorded_rs_lists():
    index = FIXTURES / "sunpyvcr2020_interactions.tsv"
    if not index.is_file():
        return []
    out = []
    for line in index.read_text().splitlines()[1:]:
        cols = line.split("\t")
        if "rs_list" in cols[0]:
            ds = urllib.parse.parse_qs(urllib.parse.urlparse(cols[4]).query)["ds"][0]
            out.append((cols[0], ds))
    return out


@pytest.mark.skipif(not FIXTURES.is_dir(), reason="shared fixtures absent")
@pytest.mark.parametrize(("name", "ds"), _recorded_rs_lists(), ids=lambda v: v if "[" in str(v) else "")
def test_parse_recordset_matches_recorded_jsoc_answers(name, ds):
    reply = json.loads((FIXTURES / name).read_text())
    spec = parse1(ds)
    recorded = {k["name"]: k["values"] for k in reply.get("keywords", [])}
    if not any(isinstance(f, KeyFilter) and f.key == "T_REC" for f in spec.filters):
        assert spec.filters == (KeyFilter("HARPNUM", (Point(3604),)),) and spec.segments == ("Bp", "magnetogram")
        return
    assert trec_slots(spec) == list(dict.fromkeys(recorded["T_REC"]))
    assert len(recorded["T_REC"]) == reply["count"]


# -- sunpy's forms ------------------------------------------------------------------------------


def test_parse_recordset_sunpy_sharp_query():
    spec = parse1(
        "hmi.sharp_720s[][2020.01.01_00:00:35_TAI-2020.01.01_01:00:35_TAI@300.0s]{continuum,magnetogram}")
    assert spec.series.name == "hmi.sharp_720s"
    assert [f.key for f in spec.filters] == ["T_REC"]  # [] skipped HARPNUM
    assert trec_slots(spec)[0] == "2020.01.01_00:00:00_TAI" and len(trec_slots(spec)) == 6
    assert spec.segments == ("continuum", "magnetogram")


def test_parse_recordset_sunpy_quoted_and_unquoted_where_are_equal():
    quoted = parse1("aia.lev1_euv_12s[2014-01-01T00:00:01Z][171][? QUALITY='0' AND EXPTIME>'2' ?]")
    unquoted = parse1("aia.lev1_euv_12s[2014-01-01T00:00:01Z][171][? QUALITY=0 AND EXPTIME>2 ?]")
    assert quoted.filters == unquoted.filters
    where = quoted.filters[-1]
    assert isinstance(where, WhereFilter) and not where.all_versions
    assert where.expr.evaluate({"QUALITY": 0, "EXPTIME": 2.9}.get)
    assert not where.expr.evaluate({"QUALITY": 0, "EXPTIME": 1.9}.get)
    assert not where.expr.evaluate({"QUALITY": 1024, "EXPTIME": 2.9}.get)


# -- binding, lists, specials ---------------------------------------------------------------------


def test_parse_recordset_series_name_is_case_insensitive_and_lookup_gets_raw_name():
    seen = []

    def recording_lookup(name):
        seen.append(name)
        return lookup(name)

    spec = parse_recordset("HMI.m_45S[2012.01.01_00:00:45_TAI][2]", recording_lookup)[0]
    assert seen == ["HMI.m_45S"] and spec.series.name == "hmi.M_45s"


def test_parse_recordset_named_and_positional_binding():
    spec = parse1("hmi.M_45s[camera=2]")
    assert spec.filters == (KeyFilter("CAMERA", (Point(2),)),)
    spec = parse1("hmi.M_45s[CAMERA=2][2012.01.01_00:00:45_TAI]")
    assert [f.key for f in spec.filters] == ["CAMERA", "T_REC"]
    spec = parse1("hmi.sharp_720s[T_REC=2024.06.28_00:00:00_TAI][11465]")
    assert [f.key for f in spec.filters] == ["T_REC", "HARPNUM"]
    assert spec.filters[1].items == (Point(11465),)
    # a named bracket does not advance the position (drms_names.c): [2] is taken for T_REC
    with pytest.raises(RecordSetError, match="bad time '2' for T_REC"):
        parse1("hmi.M_45s[T_REC=2012.01.01_00:00:45_TAI][2]")
    spec = parse1("hmi.M_45s[T_REC=2012.01.01_00:00:45_TAI][][2]")
    assert [f.key for f in spec.filters] == ["T_REC", "CAMERA"]


def test_parse_recordset_lists_first_last_and_index():
    spec = parse1("aia.lev1_euv_12s[$][171, 193,304]")
    assert spec.filters[0].items == (Last(),) and [p.value for p in spec.filters[1].items] == [171, 193, 304]
    spec = parse1("hmi.M_45s[^][#3]")
    assert spec.filters[0].items == (First(),) and spec.filters[1].items == (IndexSel(3, 3),)
    assert parse1("hmi.M_45s[#^,#$]").filters[0].items == (First(), Last())
    spec = parse1("hmi.M_45s[#100-#105,2012.01.01_00:00:45_TAI]")
    assert spec.filters[0].items[0] == IndexSel(100, 105)
    assert slot_range(spec.filters[0].items[1]) == range(spec.filters[0].items[1].value, spec.filters[0].items[1].value + 1)
    spec = parse1("hmi.sharp_720s[100-110@5]")
    assert spec.filters[0].items == (Range(100, 110, 5),)
    assert [v for v in range(95, 120) if item_matches(spec.filters[0].items[0], v)] == [100, 105, 110]
    spec = parse1("hmi.sharp_720s[100/10]")
    assert spec.filters[0].items == (HalfOpen(100, 110),)
    assert item_matches(HalfOpen(100, 110), 109) and not item_matches(HalfOpen(100, 110), 110)


def test_parse_recordset_iso_and_date_only_ranges():
    a = trec_slots(parse1("aia.lev1_euv_12s[2014-01-01T00:00:00Z-2014-01-01T00:01:00Z]"))
    b = trec_slots(parse1("aia.lev1_euv_12s[2014.01.01_00:00:35_TAI-2014.01.01_00:01:35_TAI]"))
    assert a == b and len(a) == 6
    days = trec_slots(parse1("hmi.M_720s[2014-01-01-2014-01-02]"))
    assert days[0] == "2014.01.01_00:00:00_TAI" and days[-1] == "2014.01.02_00:00:00_TAI" and len(days) == 121
    assert trec_slots(parse1("hmi.M_720s[2014.01.01_00:00:00_UTC/1h@1u]")) == trec_slots(
        parse1("hmi.M_720s[2014.01.01_00:00:35_TAI/3600s]"))


def test_parse_recordset_ts_slot_durations():
    lev1 = trec_slots(parse1("aia.lev1[2014-01-01T00:00:00Z/1m]"))
    assert len(lev1) == 60 and lev1[0] == "2014-01-01T00:00:00Z" and lev1[-1] == "2014-01-01T00:00:59Z"
    assert trec_slots(parse1("aia.lev1[2014-01-01T00:00:00.4Z/0.5s]")) == ["2014-01-01T00:00:00Z"]
    assert trec_slots(parse1("aia.lev1[2014-01-01T00:00:00.5Z]")) == ["2014-01-01T00:00:01Z"]  # ts_slot rounds


def test_parse_recordset_slots_across_leap_second():
    # 2016-12-31T23:59:60Z is TAI 2017.01.01_00:00:36, a grid point of the 12 s AIA series
    before = trec_slots(parse1("aia.lev1_euv_12s[2016-12-31T23:59:40Z-2017-01-01T00:00:20Z][171]"))
    assert before == ["2016-12-31T23:59:36Z", "2016-12-31T23:59:48Z", "2016-12-31T23:59:60Z", "2017-01-01T00:00:11Z"]
    lev1 = parse1("aia.lev1[2016-12-31T23:59:59Z-2017-01-01T00:00:00Z]")
    assert trec_slots(lev1) == ["2016-12-31T23:59:59Z", "2016-12-31T23:59:60Z", "2017-01-01T00:00:00Z"]


def test_parse_recordset_recnum_filters():
    assert parse1("hmi.M_45s[:#100]").filters == (RecnumFilter(((100, 100),)),)
    assert parse1("hmi.M_45s[:#100-#200]").filters == (RecnumFilter(((100, 200),)),)
    flt = parse1("hmi.M_45s[:#100/10,#5]").filters[0]
    assert flt.ranges == ((100, 109), (5, 5)) and flt.matches(109) and not flt.matches(110)


def test_parse_recordset_all_versions_and_segments():
    spec = parse1("hmi.M_45s[2012.01.01_00:00:45_TAI][! QUALITY >= 0 !]{ MAGNETOGRAM }")
    assert spec.all_versions and spec.segments == ("magnetogram",)
    assert parse1("hmi.M_45s{}").segments == () and parse1("hmi.M_45s").segments is None
    assert parse1("hmi.sharp_cea_720s{**ALL**}").segments[-1] == "conf_disambig"


def test_parse_recordset_top_level_commas():
    specs = parse_recordset(
        "hmi.M_45s[2012.01.01_00:00:45_TAI,2012.01.01_00:01:30_TAI][2]{magnetogram}, "
        "aia.lev1_euv_12s[$][171,193][? WAVELNTH IN (171, 193) ?]", lookup)
    assert [s.series.name for s in specs] == ["hmi.M_45s", "aia.lev1_euv_12s"]
    assert len(specs[0].filters[0].items) == 2 and len(specs[1].filters[1].items) == 2


# -- the where subset ---------------------------------------------------------------------------

M45 = REGISTRY.get("hmi.M_45s")


@pytest.mark.parametrize(
    "where",
    [
        "QUALITY = 0",
        "QUALITY <> 0 AND NOT (DATAMEAN > 1.5)",
        "quality != 0x00000400 OR datamean <= -1",
        "CAMERA IN (1, '2', 3) AND DATAMEAN BETWEEN -1 AND 1",
        "CAMERA NOT IN (2) OR DATAMEAN NOT BETWEEN 0 AND 2",
        "DATAMEAN IS NULL OR QUALITY < 0",
        "DATAMEAN IS NOT NULL AND DATAMIN < DATAMAX",
        "T_OBS >= $(2012.01.01_00:00:00_TAI) AND T_OBS < '2012.01.01_00:30:00_TAI'",
        "T_REC > 2012-01-01T00:10:00Z",
        "INSTRUME = 'HMI_FRONT2' OR INSTRUME='HMI_SIDE1'",
        "INSTRUME = HMI_FRONT2",
        "INSTRUME > 'HMI_F'",
        "INSTRUME IS NULL OR INSTRUME IN ('HMI_SIDE1', 'HMI_COMBINED')",
        "INSTRUME NOT BETWEEN 'HMI_D' AND 'HMI_G'",
        "CALVER64 IN (0x400, 1025) AND QUALITY NOT IN (0x400)",
        "((QUALITY = 0x80000000))",
        "NOT NOT QUALITY >= 0",
    ],
)
def test_evaluate_columns_agrees_with_evaluate(where):
    rng = np.random.default_rng(7)
    n = 500
    t0 = drmstime.parse_time("2012.01.01_00:00:00_TAI")
    cols = {
        "QUALITY": rng.choice([0, 0, 0, 1024, -2147483648], n).astype(np.int64),
        "CAMERA": rng.choice([1, 2, 3], n).astype(np.int64),
        "CALVER64": rng.choice([1024, 1025, 2**62 + 1024], n).astype(np.int64),
        "DATAMEAN": np.where(rng.random(n) < 0.1, np.nan, rng.normal(0.5, 1.0, n)),
        "DATAMIN": rng.normal(-100, 10, n),
        "DATAMAX": rng.normal(-95, 10, n),
        "T_OBS": t0 + rng.uniform(0, 3600, n),
        "T_REC": t0 + 45 * rng.integers(0, 80, n),
        "INSTRUME": rng.choice(np.array(["HMI_FRONT2", "HMI_SIDE1", "HMI_COMBINED", None], dtype=object), n),
    }
    expr = parse1(f"hmi.M_45s[? {where} ?]").filters[0].expr
    vector = expr.evaluate_columns(cols)
    assert vector.dtype == bool and vector.shape == (n,)
    scalar = [expr.evaluate(lambda k, i=i: cols[k][i].item() if hasattr(cols[k][i], "item") else cols[k][i])
              for i in range(n)]
    assert vector.tolist() == scalar
    assert 0 < sum(scalar) < n, "the expression should split the sample"
    assert expr.keywords <= set(cols)


def test_parse_where_hex_is_the_int32_bit_pattern():
    expr = parse_where("QUALITY = 0x80000000", M45)
    assert expr.evaluate({"QUALITY": -2147483648}.get) and not expr.evaluate({"QUALITY": 0}.get)
    assert parse_where("CALVER64 = 0x0000000000000400", M45).evaluate({"CALVER64": 1024}.get)


# -- malformed input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty record set"),
        ("[2014.01.01]", "no series name"),
        ("@/etc/passwd", "not supported"),
        ("hmi.nope[2014.01.01]", "Invalid series name: 'hmi.nope'"),
        ("hmi.M_45s[2014.01.01", "missing ']'"),
        ("hmi.M_45s]", "unbalanced ']'"),
        ("hmi.M_45s[2014.01.01_TAI]]", "unbalanced ']'"),
        ("hmi.M_45s[[2014.01.01_TAI]]", "unbalanced"),
        ("hmi.M_45s{magnetogram", "missing '}'"),
        ("hmi.M_45s{magnetogram}[2]", "after the segment list"),
        ("hmi.M_45s[? QUALITY=0", "missing '?]'"),
        ("hmi.M_45s[2014.99.01_TAI]", "bad time '2014.99.01_TAI' for T_REC"),
        ("hmi.M_45s[yesterday]", "bad time 'yesterday'"),
        ("hmi.M_45s[2014.01.01_TAI/0s]", "must be positive"),
        ("hmi.M_45s[2014.01.01_TAI@6h]", "needs a range"),
        ("hmi.M_45s[][two]", "bad value 'two' for int keyword CAMERA"),
        ("hmi.M_45s[NOPE=3]", "'NOPE' in [NOPE=3] is not a prime key of hmi.M_45s (prime keys: T_REC, CAMERA)"),
        ("hmi.M_45s[CAMERA=]", "gives no value"),
        ("hmi.M_45s[][][]", "too many [] filters"),
        ("hmi.M_45s{nope}", "unknown segment 'nope' of hmi.M_45s (segments: magnetogram)"),
        ("hmi.M_45s[:#abc]", "bad record-number filter"),
        ("hmi.M_45s[#x]", "bad index selection"),
        ("hmi.M_45s,", "empty record set between commas"),
        ("hmi.M_45s x", "unexpected 'x'"),
        ("hmi.M_45s[? ?]", "empty condition"),
        ("hmi.M_45s[? 1=1; DROP TABLE x ?]", "';"),
        ("hmi.M_45s[? QUALITY=0 OR sleep(1) ?]", "function call sleep(...) is not allowed"),
        ("hmi.M_45s[? QUALITY=0 -- comment ?]", "'-- comment"),
        ("hmi.M_45s[? QUALITY=0 /* x */ ?]", "'/* x */"),
        ("hmi.M_45s[? QUALITY IN (SELECT 1) ?]", "SQL word 'SELECT' is not allowed"),
        ("hmi.M_45s[? QUALITY=0 UNION SELECT * FROM x ?]", "SQL word 'UNION' is not allowed"),
        ("hmi.M_45s[? QUALITY = 'x'' OR 1=1 --' ?]", "is not a number, but QUALITY is a int keyword"),
        ("hmi.M_45s[? QUALTY=0 ?]", "unknown keyword 'QUALTY' of hmi.M_45s in [? QUALTY=0 ?]; did you mean QUALITY"),
        ("hmi.M_45s[? 1=1 ?]", "names no keyword"),
        ("hmi.M_45s[? QUALITY ?]", "unexpected end"),
        ("hmi.M_45s[? QUALITY = ?]", "unexpected end"),
        ("hmi.M_45s[? QUALITY=0 AND (CAMERA=2 ?]", "expected ')'"),
        ("hmi.M_45s[? QUALITY=0 ) ?]", "unexpected ')'"),
        ("hmi.M_45s[? QUALITY LIKE 0 ?]", "SQL word 'LIKE'"),
        ("hmi.M_45s[? QUALITY = 'abc ?]", "unterminated"),
        ("hmi.M_45s[? T_OBS > 'noon' ?]", "bad time 'noon' for T_OBS"),
        ("hmi.M_45s[? INSTRUME < DATAMEAN ?]", "cannot compare string keyword INSTRUME with float keyword DATAMEAN"),
        ("hmi.M_45s[? INSTRUME = $(2014.01.01) ?]", "gives a time"),
        ("hmi.M_45s[? QUALITY BETWEEN 0 1 ?]", "expected AND"),
        ("hmi.M_45s[? QUALITY IS 0 ?]", "expected NULL"),
        ("hmi.M_45s[? pg_sleep(10) IS NULL ?]", "function call pg_sleep"),
        ("hmi.M_45s[? QUALITY = 0 ; ?]", "';"),
    ],
)
def test_parse_recordset_rejects_malformed_input(text, message):
    with pytest.raises(RecordSetError) as info:
        parse_recordset(text, lookup)
    text_of_error = str(info.value)
    assert message in text_of_error
    assert "\n" not in text_of_error


# -- formatting and building ------------------------------------------------------------------------


def test_format_slot_and_slot_of_value_are_inverse():
    m45, euv = REGISTRY.get("hmi.M_45s"), REGISTRY.get("aia.lev1_euv_12s")
    i = slot_of_value(m45, "T_REC", "2012.01.01_00:00:45_TAI")
    assert format_slot(m45, "t_rec", i) == "2012.01.01_00:00:45_TAI"
    j = slot_of_value(euv, "T_REC", "2014-01-01T00:00:01Z")
    assert format_slot(euv, "T_REC", j) == "2014-01-01T00:00:01Z"
    assert slot_of_value(euv, "T_REC", drmstime.parse_time("2014-01-01T00:00:01Z")) == j
    # the observed time slots to the same index through a query, too
    assert parse1("aia.lev1_euv_12s[2014-01-01T00:00:01Z]").filters[0].items == (Point(j),)
    with pytest.raises(RecordSetError, match="not a slotted prime key"):
        format_slot(m45, "CAMERA", 1)


def test_format_range_round_trips_through_the_parser():
    m45 = REGISTRY.get("hmi.M_45s")
    lo = slot_of_value(m45, "T_REC", "2012.01.01_00:00:45_TAI")
    text = format_range(m45, "T_REC", lo, lo + 2, every=2)
    assert text == "2012.01.01_00:00:45_TAI-2012.01.01_00:02:15_TAI@90s"
    assert parse1(f"hmi.M_45s[{text}]").filters[0].items == (Range(lo, lo + 2, 2),)
    assert format_range(m45, "T_REC", lo, lo) == "2012.01.01_00:00:45_TAI"
    with pytest.raises(RecordSetError, match="empty slot range"):
        format_range(m45, "T_REC", lo, lo - 1)


def test_build_recordset_builds_parseable_text():
    text = build_recordset("hmi.M_45s", ["2012.01.01_00:00:45_TAI-2012.01.01_00:02:15_TAI", "2"],
                           segments=["magnetogram"], where="QUALITY >= 0")
    assert text == "hmi.M_45s[2012.01.01_00:00:45_TAI-2012.01.01_00:02:15_TAI][2][? QUALITY >= 0 ?]{magnetogram}"
    spec = parse1(text)
    assert [type(f).__name__ for f in spec.filters] == ["KeyFilter", "KeyFilter", "WhereFilter"]
    assert build_recordset("hmi.sharp_720s", ["", "2024.06.28_00:00:00_TAI"]) == "hmi.sharp_720s[][2024.06.28_00:00:00_TAI]"
    with pytest.raises(RecordSetError):
        build_recordset("hmi.M_45s", ["a]b"])
    assert record_spec("hmi.M_45s", ["2012.01.01_00:00:45_TAI", "2"], ["magnetogram"]) == (
        "hmi.M_45s" + record_key(["2012.01.01_00:00:45_TAI", "2"]) + "{magnetogram}")


SLOTTED = [d for d in REGISTRY if d.slottings]


@settings(max_examples=200, deadline=None)
@given(series=st.sampled_from(SLOTTED), fraction=st.floats(min_value=0.0, max_value=1.0))
def test_format_slot_then_parse_gives_the_same_slot(series: SeriesDef, fraction: float):
    slot = series.slotting("T_REC")
    lo = slot.index(drmstime.parse_time("2010.05.01_00:00:00_TAI"))
    hi = slot.index(drmstime.parse_time("2030.01.01_00:00:00_TAI"))
    index = lo + int(fraction * (hi - lo))
    text = format_slot(series, "T_REC", index)
    assert slot_of_value(series, "T_REC", text) == index
    spec = parse1(f"{series.name.upper()}[T_REC={text}]")
    assert spec.filters == (KeyFilter("T_REC", (Point(index),)),)


@pytest.mark.parametrize(
    "form",
    [
        "2014.01.01_00:00:00_TAI", "2014.01.01_00:00_TAI", "2014.1.1", "2014.01.01_TAI", "2014-01-01T00:00:00Z",
        "2014-01-01T00:00:00", "2014.01.01_00:00:00_UTC", "2014.01.01_00:00:00_UT", "2014.01.01_01:00:00+0100",
        "2013.12.31_17:00:00-0700", "2014.01.01_00:00:32.184_TDT", "2025-01-01T04:33:30.000", "JD_2456658.5",
        "MJD_56658", "2014-01-01t00:00:00z", "2014.01.01_00:00:00.5_tai",
    ],
)
def test_parse_recordset_accepts_every_time_form(form):
    spec = parse1(f"hmi.M_45s[{form}]")
    assert spec.filters == (KeyFilter("T_REC", (Point(M45.slotting("T_REC").index(drmstime.parse_time(form))),)),)
    ranged = parse1(f"hmi.M_45s[{form}-{form}]").filters[0].items[0]
    assert (ranged.lo, ranged.hi) == (spec.filters[0].items[0].value,) * 2


def test_parse_recordset_brackets_and_commas_inside_quotes():
    specs = parse_recordset(
        "aia.lev1_euv_12s[$][? FLAT_REC = 'aia.flatfield[:#135]' OR WAVE_STR = \"171,THIN?]\" ?],hmi.M_45s[$]",
        lookup)
    assert [s.series.name for s in specs] == ["aia.lev1_euv_12s", "hmi.M_45s"]
    expr = specs[0].filters[1].expr
    assert expr.evaluate({"FLAT_REC": "aia.flatfield[:#135]", "WAVE_STR": ""}.get)
    assert expr.evaluate({"FLAT_REC": "", "WAVE_STR": "171,THIN?]"}.get)
    assert not expr.evaluate({"FLAT_REC": "", "WAVE_STR": "171_THIN"}.get)


def _user_series() -> dict[str, SeriesDef]:
    """Two user-defined series: a non-time slotted key, and an unslotted time prime key."""
    carr = SeriesDef.from_struct({
        "name": "my.synoptic", "primekeys": ["CAR_ROT"],
        "keywords": [
            {"name": "CAR_ROT", "type": "int", "recscope": "slot", "defval": "-2147483648"},
            {"name": "CAR_ROT_epoch", "type": "int", "recscope": "constant", "defval": "0"},
            {"name": "CAR_ROT_step", "type": "int", "recscope": "constant", "defval": "1"},
        ],
    })
    obs = SeriesDef.from_struct({
        "name": "my.obs", "primekeys": ["T_OBS", "FSN"],
        "keywords": [
            {"name": "T_OBS", "type": "time", "defval": "-4712.01.01_11:59:28Z", "units": "ISO"},
            {"name": "FSN", "type": "int", "defval": "-2147483648"},
        ],
    })
    return {"my.synoptic": carr, "my.obs": obs}


def test_parse_recordset_user_series_slotted_number_and_unslotted_time():
    defs = _user_series()
    get = lambda name: defs.get(name.lower())  # noqa: E731
    (spec,) = parse_recordset("MY.SYNOPTIC[2100-2106@2]", get)
    item = spec.filters[0].items[0]
    assert [format_slot(spec.series, "CAR_ROT", i) for i in slot_range(item)] == ["2100", "2102", "2104", "2106"]
    assert format_range(spec.series, "CAR_ROT", 2100, 2106, every=2) == "2100-2106@2"
    (spec,) = parse_recordset("my.obs[2014-01-01T00:00:00Z/1m][100-200]", get)
    window, fsn = spec.filters
    t0 = drmstime.parse_time("2014-01-01T00:00:00Z")
    assert window.items == (HalfOpen(t0, t0 + 60.0),) and fsn.items == (Range(100, 200),)
    assert item_matches(window.items[0], t0 + 59.9) and not item_matches(window.items[0], t0 + 60.0)
    (spec,) = parse_recordset("my.obs[2014-01-01T00:00:00Z-2014-01-01T00:01:00Z@30s]", get)
    assert [item_matches(spec.filters[0].items[0], t0 + s) for s in (0, 15, 30, 60)] == [True, False, True, True]
    with pytest.raises(RecordSetError, match="not a slotted prime key"):
        format_slot(spec.series, "T_OBS", 0)


def test_parse_recordset_error_quotes_huge_input_briefly():
    huge = "hmi.M_45s[" + ",".join(f"2014.01.01_{h:02d}:{m:02d}:00_TAI" for h in range(24) for m in range(60)) + ",nope]"
    with pytest.raises(RecordSetError) as info:
        parse_recordset(huge, lookup)
    assert "bad time 'nope'" in str(info.value) and len(str(info.value)) < 400
    with pytest.raises(RecordSetError) as info:
        parse_recordset("hmi.M_45s[? QUALITY = 0 AND\n" + "CAMERA = 2 AND " * 500 + "; ?]", lookup)
    assert "';" in str(info.value) and len(str(info.value)) < 600 and "\n" not in str(info.value)


_VALID = [
    "hmi.M_45s[2012.01.01_00:00:34_TAI-2012.01.01_00:02:04_TAI@90.0s][2]{magnetogram}",
    "aia.lev1_euv_12s[2014-01-01T00:00:01Z/1m][171,193][? QUALITY='0' AND EXPTIME>'2' ?]{image}",
    "hmi.sharp_720s[][2020.01.01_00:00:35_TAI-2020.01.01_01:00:35_TAI@300.0s]{continuum,magnetogram}",
    "hmi.M_45s[:#100/10][! T_OBS >= $(2012.01.01) OR CAMERA IN (1,2) !]",
]


@settings(max_examples=400, deadline=None)
@given(
    base=st.sampled_from(_VALID),
    cut=st.integers(min_value=0, max_value=120),
    insert=st.text(alphabet="[]{}?!:#$^@/-,;'\"()=<> 0123456789._TAIZaz*\n\t\\", max_size=6),
    drop=st.integers(min_value=0, max_value=4),
)
def test_parse_recordset_mangled_input_raises_only_recordset_error(base, cut, insert, drop):
    cut = min(cut, len(base))
    text = base[:cut] + insert + base[cut + drop:]
    try:
        specs = parse_recordset(text, lookup)
    except RecordSetError as exc:
        assert "\n" not in str(exc) and str(exc)
    else:
        assert specs and all(s.series.name in {d.name for d in REGISTRY} for s in specs)


@settings(max_examples=100, deadline=None)
@given(series=st.sampled_from(SLOTTED), start=st.integers(0, 10**6), length=st.integers(0, 500),
       every=st.integers(1, 20))
def test_format_range_then_parse_gives_the_same_range(series: SeriesDef, start: int, length: int, every: int):
    slot = series.slotting("T_REC")
    lo = slot.index(drmstime.parse_time("2011.01.01_00:00:00_TAI")) + start
    text = format_range(series, "T_REC", lo, lo + length, every)
    (item,) = parse1(f"{series.name}[T_REC={text}]").filters[0].items
    expected = Range(lo, lo + length, every if every > 1 else None) if length else Point(lo)
    assert item == expected


def test_slot_of_value_slots_any_time_as_a_query_does():
    euv = REGISTRY.get("aia.lev1_euv_12s")
    for text in ("2014-01-01T00:00:05Z", "2014-01-01T00:00:10Z", "2014-01-01T00:00:11Z", "2014.01.01_00:00:35_TAI"):
        (item,) = parse1(f"aia.lev1_euv_12s[{text}]").filters[0].items
        assert slot_of_value(euv, "T_REC", text) == item.value, text
    # with JSOC's 1993.01.01_00:00:04_TAI epoch the slot of 00:00:01Z spans 23:59:59Z up to 00:00:11Z
    assert format_slot(euv, "T_REC", slot_of_value(euv, "T_REC", "2014-01-01T00:00:10Z")) == "2014-01-01T00:00:01Z"
    assert format_slot(euv, "T_REC", slot_of_value(euv, "T_REC", "2014-01-01T00:00:11Z")) == "2014-01-01T00:00:13Z"
    assert format_slot(euv, "T_REC", slot_of_value(euv, "T_REC", "2013-12-31T23:59:59Z")) == "2014-01-01T00:00:01Z"


def test_format_slot_rejects_an_offset_beyond_half_a_step():
    struct = REGISTRY.get("aia.lev1_euv_12s").to_struct()
    broken = SeriesDef.from_struct({**struct, "emulator": {"trec_offset": -7}}, name="aia.broken")
    with pytest.raises(RecordSetError, match="trec_offset -7 s puts records outside their 12 s slot"):
        format_slot(broken, "T_REC", 0)


@pytest.mark.parametrize("values", [["2012.01.01_00:00:45_TAI", "2"], ["11465", "2024.06.28_00:00:00_TAI"],
                                    ["2014-01-01T00:00:01Z"]])
def test_split_record_key_inverts_record_key(values):
    assert split_record_key(record_key(values)) == values


@pytest.mark.parametrize("bad", ["", "2012.01.01", "[a]b", "[a][b", "[[a]]", "x[a]"])
def test_split_record_key_rejects_what_is_not_a_key(bad):
    with pytest.raises(RecordSetError, match="not a record key"):
        split_record_key(bad)
