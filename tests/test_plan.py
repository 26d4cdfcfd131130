"""The planner: planned record sets select exactly the gap set, in few queries, under the caps."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jsocmirror import recordset
from jsocmirror.errors import UsageError
from jsocmirror.plan import (
    Gap, PlanLimits, compress_positions, per_record_query_count, per_run_query_count, plan_gaps,
)
from jsocmirror.series import builtin_series

REGISTRY = builtin_series()


def universe(series: str, start: str, n_slots: int, others: list[str]) -> list[list[str]]:
    """Prime-key value lists of n_slots consecutive slots x each value of the other prime key."""
    definition = REGISTRY.get(series)
    first = recordset.slot_of_value(definition, "T_REC", start)
    out = []
    t_index = [k.upper() for k in definition.primekeys].index("T_REC")
    for i in range(n_slots):
        for other in others:
            values = [other, other]
            values[t_index] = recordset.format_slot(definition, "T_REC", first + i)
            out.append(values)
    return out


def selected(query: str, records: list[list[str]]) -> set[str]:
    """Which of ``records`` the record-set string selects, evaluated with the shared parser."""
    hits = set()
    for spec in recordset.parse_recordset(query, REGISTRY.get):
        definition = spec.series
        for values in records:
            ok = True
            for flt in spec.filters:
                assert isinstance(flt, recordset.KeyFilter), flt
                pos = [k.upper() for k in definition.primekeys].index(flt.key.upper())
                if definition.slotting(flt.key):
                    value = recordset.slot_of_value(definition, flt.key, values[pos])
                else:
                    value = int(values[pos])
                if not any(recordset.item_matches(item, value) for item in flt.items):
                    ok = False
                    break
            if ok:
                hits.add(recordset.record_key(values))
    return hits


def check_exact(plan, series: str, records: list[list[str]], gap_keys: set[str]) -> None:
    covered: list[str] = []
    for query in plan.queries:
        got = selected(query.recordset, records)
        assert got == set(query.record_keys), query.recordset
        covered.extend(query.record_keys)
    assert sorted(covered) == sorted(gap_keys)  # every gap exactly once


def test_plan_gaps_runs_steps_and_lists_for_hmi():
    records = universe("hmi.M_720s", "2024.06.01_00:00:00_TAI", 120, ["3"])
    picks = list(range(0, 30)) + list(range(40, 80, 4)) + [90, 97, 101]
    gaps = [Gap("hmi.M_720s", recordset.record_key(records[i]), "magnetogram") for i in picks]
    plan = plan_gaps(gaps, REGISTRY)
    assert len(plan.queries) == 1
    text = plan.queries[0].recordset
    assert text.startswith("hmi.M_720s[2024.06.01_00:00:00_TAI-2024.06.01_05:48:00_TAI,")
    assert "@2880s" in text and text.endswith("[3]{magnetogram}")
    check_exact(plan, "hmi.M_720s", records, {g.record_key for g in gaps})


def test_plan_gaps_groups_wavelengths_and_segments_for_aia():
    records = universe("aia.lev1_euv_12s", "2024-06-01T00:00:00Z", 50, ["171", "193", "304"])
    by_key = {recordset.record_key(v): v for v in records}
    gaps = []
    for key, values in by_key.items():
        if values[1] in ("171", "193"):
            gaps += [Gap("aia.lev1_euv_12s", key, "image"), Gap("aia.lev1_euv_12s", key, "spikes")]
    keys_304 = [k for k, v in by_key.items() if v[1] == "304"][::5]
    gaps += [Gap("aia.lev1_euv_12s", k, "image") for k in keys_304]
    plan = plan_gaps(gaps, REGISTRY)
    texts = sorted(q.recordset for q in plan.queries)
    assert len(texts) == 2
    assert any(t.endswith("[171,193]{image,spikes}") for t in texts)
    assert any(t.endswith("[304]{image}") and "@60s" in t for t in texts)
    check_exact(plan, "aia.lev1_euv_12s", records, {g.record_key for g in gaps})
    assert per_record_query_count(gaps) == 110 and per_run_query_count(gaps, REGISTRY) == 12


def test_plan_gaps_splits_under_record_byte_and_length_caps():
    records = universe("hmi.M_45s", "2024.06.01_00:00:00_TAI", 400, ["2"])
    gaps = [Gap("hmi.M_45s", recordset.record_key(v), "magnetogram", size=1000) for v in records]
    by_records = plan_gaps(gaps, REGISTRY, PlanLimits(max_records=150))
    assert [q.n_records for q in by_records.queries] == [150, 150, 100]
    by_bytes = plan_gaps(gaps, REGISTRY, PlanLimits(max_bytes=50_000))
    assert len(by_bytes.queries) == 8 and all(q.est_bytes <= 50_000 for q in by_bytes.queries)
    scattered = [g for i, g in enumerate(gaps) if i % 3 != 1 and i % 7 != 0]
    short = plan_gaps(scattered, REGISTRY, PlanLimits(max_query_chars=300))
    assert len(short.queries) > 1 and all(len(q.recordset) <= 300 for q in short.queries)
    for plan, gap_set in ((by_records, gaps), (by_bytes, gaps), (short, scattered)):
        check_exact(plan, "hmi.M_45s", records, {g.record_key for g in gap_set})


def test_plan_gaps_defaults_follow_jsoc_advice():
    assert PlanLimits().records_for("aia.lev1_euv_12s") == 15_000
    assert PlanLimits().records_for("hmi.M_45s") == 30_000
    assert PlanLimits().max_bytes == 100 * 10**9


def test_plan_gaps_sharp_lists_harpnums():
    definition = REGISTRY.get("hmi.sharp_720s")
    first = recordset.slot_of_value(definition, "T_REC", "2024.06.01_00:00:00_TAI")
    records = [[str(h), recordset.format_slot(definition, "T_REC", first + i)]
               for h in (11465, 11466, 11470) for i in range(20)]
    gaps = [Gap("hmi.sharp_720s", recordset.record_key(v), seg) for v in records if v[0] != "11470"
            for seg in ("magnetogram", "bitmap")]
    plan = plan_gaps(gaps, REGISTRY)
    assert len(plan.queries) == 1
    assert plan.queries[0].recordset.startswith("hmi.sharp_720s[11465,11466][")
    assert plan.queries[0].recordset.endswith("{magnetogram,bitmap}")
    check_exact(plan, "hmi.sharp_720s", records, {g.record_key for g in gaps})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32 - 1), st.floats(0.05, 0.95))
def test_plan_gaps_is_exact_for_random_gap_sets(seed, density):
    records = universe("aia.lev1_euv_12s", "2024-06-01T00:00:00Z", 60, ["94", "171", "193"])
    rng = random.Random(seed)
    gaps = [Gap("aia.lev1_euv_12s", recordset.record_key(v), "image") for v in records if rng.random() < density]
    if not gaps:
        return
    plan = plan_gaps(gaps, REGISTRY, PlanLimits(max_records=rng.choice([7, 40, 1000])))
    check_exact(plan, "aia.lev1_euv_12s", records, {g.record_key for g in gaps})
    assert len(plan.queries) <= per_record_query_count(gaps)


def test_compress_positions_prefers_ranges():
    assert compress_positions([1, 2, 3, 7, 9, 11, 13, 20]) == [(1, 3, 1), (7, 13, 2), (20, 20, 1)]
    assert compress_positions([5, 8]) == [(5, 5, 1), (8, 8, 1)]


def test_plan_gaps_rejects_bad_keys_and_unknown_series():
    with pytest.raises(UsageError, match="not a record key"):
        plan_gaps([Gap("hmi.M_720s", "2024.06.01_TAI", "magnetogram")], REGISTRY)
    with pytest.raises(UsageError, match="no series definition"):
        plan_gaps([Gap("hmi.nope", "[1]", "x")], REGISTRY)
    with pytest.raises(UsageError, match="prime keys"):
        plan_gaps([Gap("hmi.M_720s", "[2024.06.01_00:00:00_TAI]", "magnetogram")], REGISTRY)


# -- on the emulator: the planned queries select exactly the gap set ------------------------------------
@pytest.fixture(scope="module")
def emu():
    from jsocmirror.emulator import Emulator

    with Emulator(state_dir=None, seed=5) as emulator:
        yield emulator


def emulator_keys(emu, ds: str, series: str) -> list[str]:
    from jsocmirror.jsoc import JsocClient

    definition = REGISTRY.get(series)
    reply = JsocClient(emu.url).rs_list(ds, list(definition.primekeys))
    if not reply.get("count"):
        return []
    cols = {k["name"]: k["values"] for k in reply["keywords"]}
    return [recordset.record_key(v) for v in zip(*(cols[pk] for pk in definition.primekeys))]


@pytest.mark.parametrize("series,window,segments", [
    ("hmi.M_720s", "hmi.M_720s[2024.06.20_00:00_TAI/2d]", ["magnetogram"]),
    ("aia.lev1_euv_12s", "aia.lev1_euv_12s[2024-06-20T00:00:00Z/30m][171,193,304]", ["image", "spikes"]),
    ("hmi.sharp_720s", "hmi.sharp_720s[][2024.06.20_00:00_TAI/1d]", ["magnetogram", "bitmap"]),
])
def test_plan_gaps_queries_select_exactly_the_gaps_on_the_emulator(emu, series, window, segments):
    every = emulator_keys(emu, window, series)
    assert len(every) > 50
    rng = random.Random(len(every))
    # realistic gaps: a few long runs (missed nights), a regular sample, and scattered records
    start = rng.randrange(len(every) // 2)
    gap_keys = set(every[start:start + len(every) // 4]) | set(every[::7]) | set(rng.sample(every, 10))
    gaps = [Gap(series, k, s) for k in sorted(gap_keys) for s in segments]
    plan = plan_gaps(gaps, REGISTRY, PlanLimits(max_records=400))
    covered = []
    for query in plan.queries:
        got = emulator_keys(emu, query.recordset, series)
        assert sorted(got) == sorted(query.record_keys), query.recordset
        covered += got
    assert sorted(covered) == sorted(gap_keys)
    n_record, n_run = per_record_query_count(gaps), per_run_query_count(gaps, REGISTRY)
    assert len(plan.queries) < n_run < n_record
    print(f"{series}: {len(gap_keys)} gap records -> {len(plan.queries)} queries "
          f"(one per run: {n_run}, one per record: {n_record})")


def test_plan_gaps_lists_a_unique_key_under_one_time_range_on_the_emulator(emu):
    """aia.lev1's records are (T_REC, FSN) with one FSN per record: per time slot the product
    plan needs a query each; listing FSNs (compressed into ranges) under one covering T_REC range
    needs one, and still selects exactly the gaps."""
    every = emulator_keys(emu, "aia.lev1[2024-06-20T00:00:00Z/10m]", "aia.lev1")
    assert len(every) > 300
    rng = random.Random(3)
    gap_keys = set(every[50:150]) | set(every[::5]) | set(rng.sample(every, 20))
    gaps = [Gap("aia.lev1", k, "image_lev1") for k in sorted(gap_keys)]
    products = plan_gaps(gaps, REGISTRY)
    for limits in (PlanLimits(unique_keys=(("aia.lev1", "FSN"),)),
                   PlanLimits(max_records=40, unique_keys=(("AIA.lev1", "FSN"),))):
        plan = plan_gaps(gaps, REGISTRY, limits)
        covered = []
        for query in plan.queries:
            assert query.n_records <= limits.records_for("aia.lev1")
            got = emulator_keys(emu, query.recordset, "aia.lev1")
            assert sorted(got) == sorted(query.record_keys), query.recordset
            covered += got
        assert sorted(covered) == sorted(gap_keys)
        assert len(plan.queries) == -(-len(gap_keys) // limits.records_for("aia.lev1"))
    assert len(products.queries) > 50  # one per slot with a gap, about
    print(f"aia.lev1: {len(gap_keys)} gap records -> 1 query by FSN, {len(products.queries)} by time slot")


def test_plan_gaps_ignores_a_unique_key_that_would_not_help():
    """The unique-key plan is only taken when it gives fewer queries (HMI's CAMERA is not the point)."""
    records = universe("hmi.M_720s", "2024.06.01_00:00:00_TAI", 120, ["3"])
    gaps = [Gap("hmi.M_720s", recordset.record_key(v), "magnetogram") for v in records[:60]]
    plain = plan_gaps(gaps, REGISTRY)
    hinted = plan_gaps(gaps, REGISTRY, PlanLimits(unique_keys=(("hmi.M_720s", "CAMERA"),)))
    assert [q.recordset for q in hinted.queries] == [q.recordset for q in plain.queries]
    with pytest.raises(UsageError, match="'QUALITY' is not one of its prime keys"):
        plan_gaps(gaps, REGISTRY, PlanLimits(unique_keys=(("hmi.M_720s", "QUALITY"),)))
