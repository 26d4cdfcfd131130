"""Never keep a bad answer (issue 16): a lying rs_list reply is refused whole, and clean nights converge.

Each case puts tests/hostile.py's proxy in front of the emulator and rewrites the first full
rs_list reply of a sync (the one asking for ``*online*``): prime keys that are not of their
type or would climb out of the mirror, counts and list lengths that disagree, repeated keys,
values that do not fit their column. The sync must exit 1 with one line naming the series, the
keyword and the value, store nothing of the reply and leave the watermark where it was; once the
rule is spent, a clean sync must give the same keyword table as a mirror that only ever saw clean
replies, and an update the same files under the same paths.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import quick_emulator

from jsocmirror import config as cfg
from jsocmirror.catalog import Catalog
from jsocmirror.cli import cli
from jsocmirror.download import RetryPolicy
from jsocmirror.net import NetPolicy
from jsocmirror.stage import StagePolicy
from jsocmirror.update import UpdateOptions, update_mirror
from tests.hostile import HostileProxy, rewrite

SERIES = "hmi.M_720s"
START = "2024.06.30_21:00:00_TAI"  # 3 hours up to the emulator's "now": 16 slots x cameras
FULL_FETCH = "%2Aonline%2A"  # in the query of sync's full-row rs_list requests only (not the head or RECNUM ones)
OPTIONS = dict(retry_policy=RetryPolicy(attempts=2, backoff=0.01, max_backoff=0.05, net=NetPolicy(idle_timeout=10)),
               stage_policy=StagePolicy(poll_interval=0.02, export_wait=3.0, busy_wait=0.02, max_busy_wait=0.1,
                                        busy_retries=40))


def make_mirror(path: Path, url: str, recheck: str = "2d") -> cfg.MirrorConfig:
    path.mkdir(parents=True, exist_ok=True)
    config = cfg.MirrorConfig(
        mirror_dir=path, server=url, email="mirror@example.org",
        series=[cfg.SeriesConfig(series=SERIES, segments=["magnetogram"], start=START)],
        sync=cfg.SyncConfig(recheck=recheck),
        transfer=cfg.TransferConfig(max_connections=2, method="url_quick", protocol="as-is", poll_interval=0.05),
    )
    cfg.save_config(config)
    Path(config.data_root).mkdir(parents=True, exist_ok=True)
    return cfg.load_config(path)


def table_rows(config: cfg.MirrorConfig) -> list[tuple]:
    """The keyword table without the sync's own timestamps (the same content, synced at another moment)."""
    with Catalog(config.catalog_path, read_only=True) as catalog:
        if not catalog.has_table("kw_hmi_m_720s"):
            return []
        return catalog.execute("SELECT * EXCLUDE (_synced_at) FROM kw_hmi_m_720s ORDER BY _key").fetchall()


def sync_state(config: cfg.MirrorConfig) -> tuple | None:
    with Catalog(config.catalog_path, read_only=True) as catalog:
        rows = catalog.execute("SELECT watermark_index, complete, max_recnum FROM sync_state").fetchall()
    return rows[0] if rows else None


def mirror_files(config: cfg.MirrorConfig) -> dict[str, bytes]:
    root = Path(config.data_root)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def run(args: list[str], config: cfg.MirrorConfig):
    return CliRunner().invoke(cli, [args[0], "-m", str(config.mirror_dir), *args[1:]])


def values(reply: dict, name: str) -> list:
    return next(k for k in reply["keywords"] if k["name"] == name)["values"]


def set_value(name: str, index: int, value):
    def edit(reply):
        values(reply, name)[index] = value(values(reply, name)[index]) if callable(value) else value
    return edit


def _duplicate(reply):
    for name in ("T_REC", "CAMERA"):
        values(reply, name)[1] = values(reply, name)[0]


def _count(reply):
    reply["count"] += 1


def _segments(reply):
    n = reply["count"]
    reply["segments"] = [{"name": "magnetogram", "values": ["/SUM1/D1/S00000/magnetogram.fits"] * (n - 1),
                          "dims": ["4096x4096"] * (n - 1)}]


def _short_keyword(reply):
    values(reply, "DATAMEAN").pop()


def _cameras_to_strings(reply):
    cams = values(reply, "CAMERA")
    cams[:] = [f"camera {c}" for c in cams]


def _trec_not_times(reply):
    trec = values(reply, "T_REC")
    trec[:] = [f"T{i}" for i in range(len(trec))]


def _next_year(reply):
    trec = values(reply, "T_REC")
    trec[0] = "2025" + trec[0][4:]


# (id, rewrite of the reply, text the one-line error must hold)
CASES = [
    ("trec-not-times", _trec_not_times, "prime key T_REC value 'T0' is not a time"),
    ("trec-nul", set_value("T_REC", 0, lambda v: v + "\x00"), "T_REC value"),
    ("key-slash", set_value("CAMERA", 0, "3/../../x"), "prime key CAMERA value '3/../../x'"),
    ("key-dotdot", set_value("CAMERA", 0, ".."), "prime key CAMERA value '..'"),
    ("key-nul", set_value("CAMERA", 0, "3\x00"), "prime key CAMERA value '3\\x00'"),
    ("key-overflow", set_value("CAMERA", 0, "2147483648"), "from -2147483648 to 2147483647"),
    ("int-overflow", set_value("TOTVALS", 0, "99999999999"), "TOTVALS value '99999999999' does not fit its INTEGER"),
    ("longlong-overflow", set_value("CALVER64", 0, "123456789012345678901234567890"), "CALVER64 value"),
    ("float-word", set_value("DATAMEAN", 0, "plenty"), "DATAMEAN value 'plenty' does not fit its DOUBLE"),
    ("count-mismatch", _count, "for a count of"),
    ("keyword-short", _short_keyword, "keyword 'DATAMEAN' has"),
    ("segment-mismatch", _segments, "segment 'magnetogram' has"),
    ("duplicate-keys", _duplicate, "occur 2 times"),
    ("type-drift-to-strings", _cameras_to_strings, "prime key CAMERA value 'camera "),
    ("outside-window", _next_year, "outside the record set asked for"),
]


@pytest.fixture(scope="module")
def emu():
    with quick_emulator() as emulator:
        yield emulator


@pytest.fixture(scope="module")
def clean(emu, tmp_path_factory):
    """A mirror that only ever saw clean replies: its keyword table and files."""
    config = make_mirror(tmp_path_factory.mktemp("clean"), emu.url)
    summary = update_mirror(config, emu.url, UpdateOptions(**OPTIONS))
    assert summary.exit_code == 0, summary.render()
    files = mirror_files(config)
    assert len(files) > 10
    return table_rows(config), files


@pytest.mark.parametrize("edit, message", [pytest.param(e, m, id=i) for i, e, m in CASES])
def test_hostile_rs_list_is_refused_then_a_clean_sync_converges(tmp_path, emu, clean, edit, message):
    clean_rows, clean_files = clean
    with HostileProxy(emu.url) as proxy:
        config = make_mirror(tmp_path / "m", proxy.url)
        rule = proxy.add(FULL_FETCH, "json", rewrite(edit), times=1)
        result = run(["sync"], config)
        assert rule.fired == 1
        assert result.exit_code == 1, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in result.output, result.output
        assert SERIES in lines[0] and "refused" in lines[0] and "accepted" in lines[0], lines[0]
        assert message in lines[0], lines[0]
        assert table_rows(config) == []  # nothing of the reply stored
        watermark, complete, _ = sync_state(config)
        assert not complete and watermark is not None
        # the rule is spent: the next sync is clean and must fetch every record
        again = run(["sync"], config)
        assert again.exit_code == 0, again.output
        assert table_rows(config) == clean_rows
        summary = update_mirror(config, proxy.url, UpdateOptions(**OPTIONS))
        assert summary.exit_code == 0, summary.render()
        assert mirror_files(config) == clean_files


def test_refused_night_leaves_the_catalog_as_it_was_and_the_next_night_fetches_it(tmp_path):
    """The issue's nightly failure: a bad reply stored, the watermark advanced, the records never fetched."""
    with quick_emulator() as emu, HostileProxy(emu.url) as proxy:
        config = make_mirror(tmp_path / "m", proxy.url, recheck="1h")
        assert run(["sync"], config).exit_code == 0
        before, state = table_rows(config), sync_state(config)
        emu.world.next_night(seconds=3 * 3600)
        proxy.add(FULL_FETCH, "json", rewrite(_trec_not_times), times=1)
        result = run(["sync"], config)
        assert result.exit_code == 1 and "T_REC value 'T0' is not a time" in result.output, result.output
        assert table_rows(config) == before
        assert sync_state(config)[0] == state[0]  # the watermark did not move
        assert run(["sync"], config).exit_code == 0
        fresh = make_mirror(tmp_path / "fresh", emu.url)
        assert run(["sync"], fresh).exit_code == 0
        assert table_rows(config) == table_rows(fresh)


def test_a_definition_changing_a_prime_key_type_is_refused(tmp_path, emu, clean):
    with HostileProxy(emu.url) as proxy:
        config = make_mirror(tmp_path / "m", proxy.url)
        assert run(["sync"], config).exit_code == 0

        def drift(reply):
            next(k for k in reply["keywords"] if k["name"] == "CAMERA")["type"] = "string"

        proxy.add("op=series_struct", "json", rewrite(drift), times=1)
        result = run(["sync", "--full"], config)
        assert result.exit_code == 1, result.output
        assert len(result.output.strip().splitlines()) == 1
        assert "prime key CAMERA of type 'string' where the catalog's column is INTEGER" in result.output
        with Catalog(config.catalog_path, read_only=True) as catalog:
            stored = json.loads(catalog.q("series_def_get", series=SERIES).fetchall()[0][1])
        assert next(k for k in stored["keywords"] if k["name"] == "CAMERA")["type"] == "int"  # not stored
        assert run(["sync", "--full"], config).exit_code == 0
        assert table_rows(config) == clean[0]


def test_a_contradicted_row_is_corrected_by_the_next_sync(tmp_path):
    """A reply that fits but lies (another value, another RECNUM) is stored; the next night's
    re-check window fetches the record again and the MERGE puts JSOC's values back."""
    with quick_emulator() as emu, HostileProxy(emu.url) as proxy:
        config = make_mirror(tmp_path / "m", proxy.url, recheck="1d")

        def lie(reply):
            values(reply, "DATAMEAN")[-1] = "12345.5"
            recnums = values(reply, "*recnum*")
            recnums[-1] = int(recnums[-1]) + 10_000_000

        proxy.add(FULL_FETCH, "json", rewrite(lie), times=1)
        assert run(["sync"], config).exit_code == 0
        with Catalog(config.catalog_path, read_only=True) as catalog:
            assert catalog.execute("SELECT count(*) FROM kw_hmi_m_720s WHERE DATAMEAN = 12345.5").fetchall() == [(1,)]
        emu.world.next_night(seconds=3600)
        assert run(["sync"], config).exit_code == 0
        fresh = make_mirror(tmp_path / "fresh", emu.url)
        assert run(["sync"], fresh).exit_code == 0
        ours = {r[0]: r for r in table_rows(config)}
        theirs = {r[0]: r for r in table_rows(fresh)}
        assert ours.keys() == theirs.keys()
        with Catalog(config.catalog_path, read_only=True) as catalog:
            names = [d[0] for d in catalog.execute("SELECT * EXCLUDE (_synced_at) FROM kw_hmi_m_720s LIMIT 0").description]
        prev = names.index("_prev_recnum")
        differing = {k for k in ours if ours[k][:prev] + ours[k][prev + 1:] != theirs[k][:prev] + theirs[k][prev + 1:]}
        assert differing == set()


# -- the checks one by one, on replies made by hand -------------------------------------------------
def _sdef():
    from jsocmirror.series import SeriesDef

    return SeriesDef.from_struct({
        "primekeys": ["NAME", "T_REC"], "segments": [], "links": [],
        "keywords": [
            {"name": "NAME", "type": "string"},
            {"name": "T_REC", "type": "time", "recscope": "ts_eq", "units": "TAI"},
            {"name": "T_REC_epoch", "type": "time", "recscope": "constant", "defval": "1993.01.01_00:00:00_TAI",
             "units": "TAI"},
            {"name": "T_REC_step", "type": "float", "recscope": "constant", "defval": "720", "units": "secs"},
            {"name": "QUALITY", "type": "int"}, {"name": "X", "type": "float"}, {"name": "T_OBS", "type": "time"},
            {"name": "N", "type": "short"}, {"name": "S", "type": "string"},
        ]}, name="su_test.named")


def _reply(**changes):
    base = {"NAME": ["a", "b"], "T_REC": ["2024.06.30_00:00:00_TAI", "2024.06.30_00:12:00_TAI"],
            "T_REC_epoch": ["1993.01.01_00:00:00_TAI"] * 2, "T_REC_step": ["720"] * 2,
            "QUALITY": ["0x00000000", "0x80000000"], "X": ["1.5", "2"], "T_OBS": ["2024.06.30_00:00:01_TAI"] * 2,
            "N": ["1", "2"], "S": ["x", "y"],
            "*recnum*": ["5", "6"], "*sunum*": ["7", "8"], "*size*": ["10", "20"], "*online*": ["Y", "N"]}
    for name, (i, value) in changes.items():
        base[name.replace("_star_", "*")][i] = value
    return base


def _convert(reply):
    from jsocmirror.catalog import keyword_columns
    from jsocmirror.sync import rows_to_arrow

    sdef = _sdef()
    return rows_to_arrow(reply, keyword_columns(sdef), sdef).to_pydict()


@pytest.mark.parametrize("name", ["a/b", "..", ".", "x\x00", "a\\b", "[x]", "a]b", "tab\there", "\x7f"])
def test_string_prime_keys_that_are_no_safe_path_are_refused(name):
    from jsocmirror.errors import JsocError

    with pytest.raises(JsocError, match="refused JSOC's rs_list reply for su_test.named") as caught:
        _convert(_reply(NAME=(1, name)))
    text = str(caught.value)
    assert "\n" not in text and repr(name) in text and "accepted: text without '/'" in text


@pytest.mark.parametrize("name", ["with space", "caf\u00e9", "", "a.b", "...", "-1"])
def test_string_prime_keys_that_are_safe_are_kept(name):
    assert _convert(_reply(NAME=(1, name)))["_key"][1] == f"[{name}][2024.06.30_00:12:00_TAI]"


@pytest.mark.parametrize("changes, message", [
    ({"T_REC": (1, "MISSING")}, "prime key T_REC value 'MISSING' is not a time"),
    ({"T_REC": (0, "2024.06.30_00:00:00_TAI ; rm -rf")}, "is not a time"),
    ({"T_REC": (1, "2024/06/30_00:12:00_TAI")}, "prime key T_REC value '2024/06/30_00:12:00_TAI' is not a time (accepted: a JSOC time"),
    ({"T_REC": (1, "2024.06.30_00:12:00_TAI\n")}, "prime key T_REC value '2024.06.30_00:12:00_TAI\\n'"),
    ({"QUALITY": (0, "0x100000000")}, "QUALITY value '0x100000000' does not fit its INTEGER"),
    ({"QUALITY": (0, "1.5")}, "QUALITY value '1.5'"),
    ({"N": (0, "32768")}, "N value '32768' does not fit its SMALLINT column (accepted: a whole number from -32768 to 32767"),
    ({"X": (1, "1,5")}, "X value '1,5' does not fit its DOUBLE"),
    ({"T_OBS": (0, "yesterday")}, "T_OBS value 'yesterday' does not fit its TIMESTAMP"),
    ({"_star_recnum_star_": (0, "MISSING")}, "*recnum* value 'MISSING'"),
    ({"_star_sunum_star_": (0, "1e3")}, "*sunum* value '1e3'"),
    ({"NAME": (1, "a"), "T_REC": (1, "2024.06.30_00:00:00_TAI")},
     "prime-key values '[a][2024.06.30_00:00:00_TAI]' occur 2 times (accepted: each record once)"),
])
def test_values_that_do_not_fit_refuse_the_reply(changes, message):
    from jsocmirror.errors import JsocError

    with pytest.raises(JsocError) as caught:
        _convert(_reply(**changes))
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_long_values_are_shown_truncated():
    from jsocmirror.errors import JsocError

    with pytest.raises(JsocError) as caught:
        _convert(_reply(T_OBS=(0, "x" * 10_000)))
    assert len(str(caught.value)) < 400 and "..." in str(caught.value)


def test_missing_values_are_null_not_refused():
    d = _convert(_reply(QUALITY=(0, "MISSING"), X=(0, "MISSING"), T_OBS=(0, "MISSING"), N=(1, "MISSING"), S=(0, "")))
    assert d["QUALITY"] == [None, -2147483648] and d["X"] == [None, 2.0] and d["T_OBS"][0] is None
    assert d["N"] == [1, None] and d["S"] == ["", "y"]
    d = _convert(_reply(T_OBS=(1, "-4712.01.01_11:59:28_TAI"), X=(1, "nan")))
    assert d["T_OBS"][1] is None and d["X"][1] is None


def test_non_canonical_int_prime_keys_are_refused():
    from jsocmirror.catalog import keyword_columns
    from jsocmirror.errors import JsocError
    from jsocmirror.series import SeriesDef
    from jsocmirror.sync import rows_to_arrow

    sdef = SeriesDef.from_struct({"primekeys": ["K"], "segments": [], "links": [],
                                  "keywords": [{"name": "K", "type": "int"}]}, name="su_test.ints")
    for bad in ("03", "+3", " 3", "0x3", "3.0", "MISSING", "2147483648"):
        reply = {"K": ["1", bad], "*recnum*": ["1", "2"], "*sunum*": ["1", "2"], "*size*": ["0", "0"],
                 "*online*": ["Y", "Y"]}
        with pytest.raises(JsocError, match="prime key K value"):
            rows_to_arrow(reply, keyword_columns(sdef), sdef)
    reply = {"K": ["-2147483648", "0"], "*recnum*": ["1", "2"], "*sunum*": ["1", "2"], "*size*": ["0", "0"],
             "*online*": ["Y", "Y"]}
    assert rows_to_arrow(reply, keyword_columns(sdef), sdef).to_pydict()["_key"] == ["[-2147483648]", "[0]"]


def test_a_wrong_recnum_older_than_the_recheck_window_is_corrected_by_full(tmp_path):
    """Outside the re-check window nothing re-fetches a fitting lie, except ``--full``'s RECNUM compare."""
    with quick_emulator() as emu, HostileProxy(emu.url) as proxy:
        config = make_mirror(tmp_path / "m", proxy.url, recheck="1h")

        def lie(reply):
            recnums = values(reply, "*recnum*")
            recnums[0] = int(recnums[0]) + 10_000_000

        proxy.add(FULL_FETCH, "json", rewrite(lie), times=1)
        assert run(["sync"], config).exit_code == 0
        emu.world.next_night(seconds=3 * 3600)
        assert run(["sync"], config).exit_code == 0
        fresh = make_mirror(tmp_path / "fresh", emu.url)
        assert run(["sync"], fresh).exit_code == 0
        with Catalog(config.catalog_path, read_only=True) as catalog:
            names = [d[0] for d in catalog.execute("SELECT * EXCLUDE (_synced_at) FROM kw_hmi_m_720s LIMIT 0").description]
        at = names.index("_recnum")
        ours = {r[0]: r[at] for r in table_rows(config)}
        theirs = {r[0]: r[at] for r in table_rows(fresh)}
        assert len([k for k in ours if ours[k] != theirs[k]]) == 1  # the quick nightly sync cannot see it
        assert run(["sync", "--full"], config).exit_code == 0
        ours = {r[0]: r[at] for r in table_rows(config)}
        assert ours == theirs


def test_a_keyword_retyped_by_the_definition_keeps_its_column_type(tmp_path):
    """JSOC's definition says DATAMEAN is a string now: the column stays DOUBLE, a word is refused,
    numbers still land (the column is never widened to VARCHAR)."""
    with quick_emulator() as emu, HostileProxy(emu.url) as proxy:
        config = make_mirror(tmp_path / "m", proxy.url, recheck="1h")
        assert run(["sync"], config).exit_code == 0

        def retype(reply):
            next(k for k in reply["keywords"] if k["name"] == "DATAMEAN")["type"] = "string"

        proxy.add("op=series_struct", "json", rewrite(retype))  # from now on
        emu.world.next_night(seconds=3600)
        proxy.add(FULL_FETCH, "json", rewrite(set_value("DATAMEAN", 0, "abc")), times=1)
        result = run(["sync"], config)
        assert result.exit_code == 1 and "DATAMEAN value 'abc' does not fit its DOUBLE column" in result.output
        assert run(["sync"], config).exit_code == 0
        with Catalog(config.catalog_path, read_only=True) as catalog:
            assert catalog.table_columns("kw_hmi_m_720s")["DATAMEAN"] == "DOUBLE"
            assert catalog.execute("SELECT count(*), count(DATAMEAN) FROM hmi_m_720s").fetchall()[0][1] > 0
        proxy.clear()
        fresh = make_mirror(tmp_path / "fresh", emu.url)
        assert run(["sync"], fresh).exit_code == 0
        assert table_rows(config) == table_rows(fresh)


def test_records_of_key_values_not_asked_for_are_refused():
    from jsocmirror.catalog import keyword_columns
    from jsocmirror.errors import JsocError
    from jsocmirror.sync import Window, rows_to_arrow

    sdef = _sdef()
    window = Window(None, None, None, key_lists={"NAME": ["a", "b"]})
    assert rows_to_arrow(_reply(), keyword_columns(sdef), sdef, window).num_rows == 2
    with pytest.raises(JsocError, match=r"record '\[c\]\[2024.06.30_00:12:00_TAI\]' lies outside the record set"):
        rows_to_arrow(_reply(NAME=(1, "c")), keyword_columns(sdef), sdef, window)


def test_a_bad_reply_in_the_deep_phase_is_refused_too(tmp_path):
    """The older part of the window is checked with small replies (time key and RECNUM only): a
    slot outside the window there would send the sync fetching records it was never asked for."""
    with quick_emulator() as emu, HostileProxy(emu.url) as proxy:
        config = make_mirror(tmp_path / "m", proxy.url, recheck="1h")
        assert run(["sync"], config).exit_code == 0
        keys = [r[0] for r in table_rows(config)]
        emu.world.next_night(seconds=3 * 3600)
        emu.world.reprocess(SERIES, keys[0])  # deep in the window: found by the RECNUM query
        before = table_rows(config)
        deep = "key=T_REC%2C%2Arecnum%2A"
        rule = proxy.add(deep, "json", rewrite(set_value("T_REC", 0, "1999.01.01_00:00:00_TAI")), times=1)
        result = run(["sync"], config)
        assert rule.fired == 1 and result.exit_code == 1, result.output
        assert "value '1999.01.01_00:00:00_TAI' lies outside the record set asked for" in result.output
        assert len(result.output.strip().splitlines()) == 1
        assert not sync_state(config)[1]  # not complete: the next sync looks again
        assert {r[0] for r in table_rows(config)} >= {r[0] for r in before}
        assert run(["sync"], config).exit_code == 0
        fresh = make_mirror(tmp_path / "fresh", emu.url)
        assert run(["sync"], fresh).exit_code == 0
        with Catalog(config.catalog_path, read_only=True) as catalog:
            names = [d[0] for d in catalog.execute("SELECT * EXCLUDE (_synced_at) FROM kw_hmi_m_720s LIMIT 0").description]
        prev = names.index("_prev_recnum")
        strip = lambda rows: [r[:prev] + r[prev + 1:] for r in rows]  # noqa: E731 (the re-sync keeps the old RECNUM there)
        assert strip(table_rows(config)) == strip(table_rows(fresh))


def test_a_head_dated_centuries_ahead_does_not_move_the_watermark_there(tmp_path):
    """The newest-record lookup ([$]) is believed only up to this machine's clock plus a day."""
    from datetime import datetime, timedelta

    def future(reply: dict) -> None:
        for keyword in reply.get("keywords") or ():
            if keyword["name"] == "T_REC":
                keyword["values"] = ["2990.01.01_00:00:00_TAI"] * len(keyword["values"])

    with quick_emulator() as emu, HostileProxy(emu.url) as proxy:
        config = make_mirror(tmp_path / "m", proxy.url)
        proxy.add("%24%5D", "json", rewrite(future))  # ds=...[$]: the head query only
        summary = update_mirror(config, proxy.url, UpdateOptions(**OPTIONS))
        assert summary.exit_code == 0 and summary.sync["new"] > 0
        with Catalog(config.catalog_path, read_only=True) as catalog:
            (watermark,), = catalog.execute("SELECT watermark_time FROM sync_state").fetchall()
        assert watermark <= datetime.utcnow() + timedelta(days=1, minutes=30), watermark  # a slot (12 min) and TAI past it
        assert any("%24%5D" in r for r in proxy.requests)  # the lie was told
