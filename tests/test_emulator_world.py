"""The emulator's world: deterministic records, realistic values, and the changing world
(clock, nightly reprocessing and deletion) shared through the persisted state."""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

from jsocmirror import drmstime
from jsocmirror.emulator.query import select
from jsocmirror.emulator.world import DEFAULT_NOW, World, WorldError
from jsocmirror.series import builtin_series


@pytest.fixture(scope="module")
def registry():
    return builtin_series()


@pytest.fixture
def world(registry, tmp_path):
    return World(registry, state_dir=tmp_path / "emu", seed=0)


def keyword_strings(world, ds, *names):
    sel = select(world, ds)
    return {n: sel.column(n).strings() for n in names}, sel


def test_default_clock_is_fixed(world):
    assert drmstime.format_time(world.now, "TAI") == "2024.07.01_00:00:00_TAI"
    assert world.now == DEFAULT_NOW


_DIGEST = """
import hashlib, sys
from jsocmirror.emulator.world import World
from jsocmirror.emulator.query import select
from jsocmirror.series import builtin_series
w = World(builtin_series())
sel = select(w, "hmi.sharp_720s[][2015.03.01_TAI/6h]")
h = hashlib.sha256()
for name in ("HARPNUM", "T_REC", "QUALITY", "NOAA_ARS", "USFLUX", "*recnum*", "*sunum*", "DATE"):
    h.update(sel.column(name).json_array())
print(h.hexdigest())
"""


def test_records_are_the_same_in_every_process(registry):
    outs = {subprocess.run([sys.executable, "-c", _DIGEST], capture_output=True, text=True, check=True).stdout
            for _ in range(2)}
    assert len(outs) == 1
    assert len(outs.pop().strip()) == 64


def test_memory_is_proportional_to_the_answer(world):
    # fourteen years of 45 s slots exist; an hour at the end must not touch them
    tracemalloc.start()
    sel = select(world, "hmi.M_45s[2024.06.30_22:00_TAI/1h]")
    values = sel.column("DATAMEAN").strings()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(values) == 80
    assert peak < 2_000_000


def test_t_rec_on_slot_grid_and_zones(world):
    cols, _ = keyword_strings(world, "hmi.M_45s[2014.01.01_TAI/135s]", "T_REC", "T_OBS")
    assert cols["T_REC"] == ["2014.01.01_00:00:00_TAI", "2014.01.01_00:00:45_TAI", "2014.01.01_00:01:30_TAI"]
    for rec, obs in zip(cols["T_REC"], cols["T_OBS"]):
        assert abs(drmstime.parse_time(obs) - drmstime.parse_time(rec)) <= 3
    cols, _ = keyword_strings(world, "aia.lev1_euv_12s[2014.01.01_00:00:35_TAI/36s][171]", "T_REC", "T_OBS")
    assert cols["T_REC"] == ["2014-01-01T00:00:01Z", "2014-01-01T00:00:13Z", "2014-01-01T00:00:25Z"]
    assert all(o.endswith("Z") and 5 < drmstime.parse_time(o) - drmstime.parse_time(r) < 12
               for r, o in zip(cols["T_REC"], cols["T_OBS"]))


def test_quality_mostly_zero_some_flagged_some_without_image(world):
    sel = select(world, "hmi.M_45s[2014.01.01_TAI/10d]")
    q = np.asarray(sel.column("QUALITY").values)
    no_image = (q < 0).mean()
    flagged = ((q != 0) & (q > 0)).mean()
    assert 0.005 < no_image < 0.02 and 0.02 < flagged < 0.06 and (q == 0).mean() > 0.9
    strings = sel.column("QUALITY").strings()
    assert {s for s, v in zip(strings, q.tolist()) if v < 0} and all(
        s.startswith("0x8") for s, v in zip(strings, q.tolist()) if v < 0)


def test_plausible_physical_keywords(world):
    cols, _ = keyword_strings(world, "aia.lev1_euv_12s[2014.01.01_TAI/1m]", "WAVELNTH", "CAMERA", "EXPTIME",
                              "DATAMEAN", "CAR_ROT", "INSTRUME", "WAVE_STR")
    assert cols["CAR_ROT"][0] == "2145"
    for w, cam, inst in zip(cols["WAVELNTH"], cols["CAMERA"], cols["INSTRUME"]):
        assert inst == f"AIA_{cam}"
        assert {"94": "4", "171": "3", "193": "2", "335": "1"}.get(w, cam) == cam
    assert all(0.5 < float(e) < 4 for e in cols["EXPTIME"])
    _, sel = keyword_strings(world, "hmi.M_45s[2012.01.01_00:00:45_TAI]", "CAR_ROT")
    assert sel.column("CAR_ROT").strings() == ["2118"]


def test_harps_appear_and_disappear_with_noaa_numbers(world):
    sel = select(world, "hmi.sharp_720s[][2016.01.01_TAI/20d]")
    harps = np.asarray(sel.column("HARPNUM").values)
    t = sel.base()["_time"]
    ids = np.unique(harps)
    assert 10 < len(ids) < 120
    spans = [(t[harps == h].min(), t[harps == h].max()) for h in ids]
    alive_at = [sum(a <= x <= b for a, b in spans) for x in np.linspace(t.min(), t.max(), 10)]
    assert min(alive_at) >= 3
    born_late = [h for h, (a, _b) in zip(ids, spans) if a > t.min() + 86400]
    assert born_late and any(b < t.max() - 86400 for _a, b in spans)
    ars = sel.column("NOAA_ARS").strings()
    assert any("," in a for a in ars) and "MISSING" in ars
    recnums = sel.recnums[np.argsort(t, kind="stable")]
    assert (np.diff(recnums[np.diff(np.sort(t), prepend=0) > 0]) > 0).all()


def test_recnum_and_sunum_increase_with_time_and_paths_shared_by_unit(world):
    sel = select(world, "hmi.M_45s[2024.06.01_TAI/1h]")
    assert (np.diff(sel.recnums) > 0).all() and (np.diff(sel.sunums) >= 0).all()
    paths = sel.segment_paths("magnetogram")
    units = {p.rsplit("/", 2)[0] for p in paths}
    assert len(units) in (3, 4)  # 80 records, 32 per storage unit
    assert all(p.startswith("/SUM") and p.endswith("/magnetogram.fits") for p in paths)


def test_advance_adds_records_at_the_head(world):
    before = select(world, "hmi.M_720s[$]").record_names()
    world.advance(3600)
    after = select(world, "hmi.M_720s[$]").record_names()
    assert before == ["hmi.M_720s[2024.07.01_00:00:00_TAI][3]"]
    assert after == ["hmi.M_720s[2024.07.01_01:00:00_TAI][3]"]
    assert len(select(world, "hmi.M_720s[2024.07.01_TAI/2h]")) == 6
    with pytest.raises(WorldError):
        world.advance(-1)


def test_next_night_reprocesses_and_deletes_a_seeded_sample(registry, tmp_path):
    world = World(registry, state_dir=tmp_path / "a", seed=7)
    sdef = registry.get("hmi.M_720s")
    old_max = world.max_recnum(sdef)
    report = world.next_night()["hmi.M_720s"]
    assert report["new_count"] == 120 and len(report["new"]) == 120
    assert len(report["reprocessed"]) == World.NIGHT_REPROCESS and len(report["deleted"]) == World.NIGHT_DELETE
    key = report["reprocessed"][0]
    latest = select(world, f"hmi.M_720s{key}")
    assert len(latest) == 1 and int(latest.recnums[0]) > old_max
    both = select(world, f"hmi.M_720s{key}[! CAMERA = 3 !]")
    assert len(both) == 2 and both.recnums[0] < both.recnums[1]
    assert both.column("DATE").strings()[0] != both.column("DATE").strings()[1]
    # records created after the reprocessing number above it
    world.advance(720)
    head = select(world, "hmi.M_720s[$]")
    assert int(head.recnums[0]) > int(latest.recnums[0])
    for gone in report["deleted"]:
        assert len(select(world, f"hmi.M_720s{gone}")) == 0
    # same seed, same night: the same sample
    again = World(registry, state_dir=tmp_path / "b", seed=7).next_night()["hmi.M_720s"]
    assert again["reprocessed"] == report["reprocessed"] and again["deleted"] == report["deleted"]


def test_explicit_reprocess_and_delete(world):
    key = "[2024.06.30_12:00:00_TAI][2]"
    before = select(world, "hmi.M_45s" + key)
    world.reprocess("hmi.M_45s", key)
    after = select(world, "hmi.M_45s" + key)
    assert after.recnums[0] > world.max_recnum(world.series("hmi.M_45s")) - 1 > before.recnums[0]
    assert after.segment_paths("magnetogram") != before.segment_paths("magnetogram")
    world.delete("hmi.M_45s", key)
    assert len(select(world, "hmi.M_45s" + key)) == 0
    with pytest.raises(WorldError, match="deleted"):
        world.reprocess("hmi.M_45s", key)
    with pytest.raises(WorldError, match="unknown series"):
        world.delete("hmi.nope", key)
    with pytest.raises(WorldError, match="does not name"):
        world.delete("hmi.M_45s", "[2024.06.30_12:00:00_TAI]")


def test_recnum_queries_find_every_version(world):
    key = "[2024.06.30_12:00:00_TAI][2]"
    v0 = int(select(world, "hmi.M_45s" + key).recnums[0])
    world.reprocess("hmi.M_45s", key)
    v1 = int(select(world, "hmi.M_45s" + key).recnums[0])
    assert select(world, f"hmi.M_45s[:#{v0}]").record_names() == [f"hmi.M_45s{key}"]
    assert select(world, f"hmi.M_45s[:#{v1}]").record_names() == [f"hmi.M_45s{key}"]
    located = world.locate_sunum(int(select(world, "hmi.M_45s" + key).sunums[0]))
    assert located is not None and located[0].name == "hmi.M_45s"


def test_state_is_shared_by_processes_and_a_running_server(registry, tmp_path):
    from jsocmirror.emulator import Emulator

    state = tmp_path / "shared"
    with Emulator(state_dir=state) as emu:
        cli = [sys.executable, "-m", "jsocmirror", "emulator"]
        subprocess.run(cli + ["advance", "1d", "--state-dir", str(state)], check=True, capture_output=True)
        out = subprocess.run(cli + ["next-night", "--state-dir", str(state)], check=True, capture_output=True, text=True)
        report = json.loads(out.stdout)
        assert report["now"] == "2024.07.03_00:00:00_TAI"
        assert drmstime.format_time(emu.world.now, "TAI") == "2024.07.03_00:00:00_TAI"
        key = report["series"]["hmi.M_45s"]["deleted"][0]
        assert len(select(emu.world, "hmi.M_45s" + key)) == 0
        from click.testing import CliRunner

        from jsocmirror.cli import cli as cli_group

        status = json.loads(CliRunner().invoke(cli_group, ["emulator", "status", "--state-dir", str(state)]).stdout)
        assert status["nights"] == 1 and status["series"]["hmi.M_45s"]["deleted"] == World.NIGHT_DELETE
    fresh = World(registry, state_dir=state)
    assert fresh.nights == 1 and len(select(fresh, "hmi.M_45s" + key)) == 0
    stored = json.loads((state / "world.json").read_text())
    assert len(json.dumps(stored)) < 50_000  # only mutated records are kept


def test_cli_rejects_bad_input_with_one_line(tmp_path):
    from click.testing import CliRunner

    from jsocmirror.cli import cli

    runner = CliRunner()
    res = runner.invoke(cli, ["emulator", "advance", "soon", "--state-dir", str(tmp_path)])
    assert res.exit_code == 2 and res.stderr.strip().splitlines() == [
        "Error: bad duration 'soon' (expected e.g. 3600, 90s, 12m, 6h or 1d)"]
    res = runner.invoke(cli, ["emulator", "delete", "hmi.M_45s", "[2099.01.01_TAI][2]", "--state-dir", str(tmp_path)])
    assert res.exit_code == 2 and "does not exist" in res.stderr
    res = runner.invoke(cli, ["emulator", "reprocess", "hmi.nope", "[2014.01.01_TAI][2]", "--state-dir", str(tmp_path)])
    assert res.exit_code == 2 and "unknown series 'hmi.nope'" in res.stderr


def test_last_record_skips_deleted_head(world):
    head = select(world, "hmi.M_720s[$]").record_names()[0]
    world.delete("hmi.M_720s", head[len("hmi.M_720s"):])
    assert select(world, "hmi.M_720s[$]").record_names() == ["hmi.M_720s[2024.06.30_23:48:00_TAI][3]"]


def test_unreadable_state_is_a_clear_error(registry, tmp_path):
    from click.testing import CliRunner

    from jsocmirror.cli import cli

    (tmp_path / "world.json").write_text("{not json")
    with pytest.raises(WorldError, match="unreadable"):
        World(registry, state_dir=tmp_path)
    res = CliRunner().invoke(cli, ["emulator", "status", "--state-dir", str(tmp_path)])
    assert res.exit_code == 2 and "unreadable" in res.stderr and "Traceback" not in res.output


def test_locate_recnum_maps_every_version_back(world):
    sdef = world.series("hmi.M_720s")
    before = select(world, "hmi.M_720s[2024.06.30_12:00_TAI/1h]")
    world.reprocess("hmi.M_720s", "[2024.06.30_12:12:00_TAI][3]")
    world.advance(7200)
    after = select(world, "hmi.M_720s[2024.06.30_12:00_TAI/1h],hmi.M_720s[2024.07.01_01:00_TAI/1h]")
    for sel in (before, after):
        for ordinal, version, recnum in zip(sel.ordinals.tolist(), sel.versions.tolist(), sel.recnums.tolist()):
            assert world.locate_recnum(sdef, recnum) == (ordinal, version)
    assert world.locate_recnum(sdef, int(after.recnums.max()) + 10_000) is None


def test_vectorised_number_printing_matches_python_formatting():
    import orjson

    from jsocmirror.emulator.query import format_times, numbers_json_array, time_json_array

    rng = np.random.default_rng(3)
    x = (rng.random(5000) - 0.5) * 10.0 ** rng.integers(-3, 8, 5000)
    x[::7] = np.nan
    for decimals in (1, 2, 4, 6):
        expected = ["MISSING" if v != v else f"{round(v * 10**decimals) / 10**decimals:.{decimals}f}" for v in x.tolist()]
        got = orjson.loads(numbers_json_array(x, decimals))
        assert [g for g, e in zip(got, expected) if g != e and e.lstrip("-") != g] == []
    ints = np.array([0, -5, 2147483647, -2147483648, 7])
    assert orjson.loads(numbers_json_array(ints, 0, missing=ints == -2147483648)) == ["0", "-5", "2147483647", "MISSING", "7"]
    t = np.array([drmstime.parse_time("2016.12.31_23:59:59_UTC"), drmstime.parse_time("2017.01.01_00:00:00_UTC"),
                  drmstime.parse_time("1999.12.31_12:00:00.25_TAI")])
    for zone, precision in (("TAI", 0), ("UTC", 0), ("ISO", 2)):
        expected = [drmstime.format_time(v, zone, precision) for v in t.tolist()]
        assert format_times(t, zone, precision) == expected
        assert orjson.loads(time_json_array(t, zone, precision)) == expected


def test_where_filter_picks_latest_matching_version(world):
    key = "[2024.06.30_12:00:00_TAI][2]"
    world.reprocess("hmi.M_45s", key)
    both = select(world, f"hmi.M_45s{key}[! CAMERA = 2 !]")
    v0_recnum, v1_recnum = both.recnums.tolist()
    v1_date = both.column("DATE").typed()[1]
    # the latest version fails DATE < its own processing time, version 0 passes: DRMS answers version 0
    older = select(world, f"hmi.M_45s{key}[? DATE < {v1_date - 1} ?]")
    assert older.recnums.tolist() == [v0_recnum]
    assert select(world, f"hmi.M_45s{key}[? CAMERA = 2 ?]").recnums.tolist() == [v1_recnum]
