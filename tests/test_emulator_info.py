"""The emulator's metadata endpoints over real HTTP: jsoc_info, show_series, showextseries,
checkAddress.sh, proxying, and JSOC's quirks and error texts."""

from __future__ import annotations

import http.client
import json
import urllib.parse
import urllib.request
from urllib.parse import quote_plus, urlencode

import pytest

from jsocmirror.emulator import Emulator, EmulatorConfig


def get(emu, endpoint: str, raw_query: str | None = None, **params) -> dict:
    query = raw_query if raw_query is not None else urlencode(params)
    with urllib.request.urlopen(f"{emu.url}cgi-bin/ajax/{endpoint}?{query}", timeout=30) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/json"
        return json.loads(resp.read())


def raw_request(emu, target: str) -> tuple[int, bytes]:
    host, port = emu.url.split("//")[1].rstrip("/").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", target)
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, body


def test_root_answers_200_and_unknown_paths_404(shared_emulator):
    assert raw_request(shared_emulator, "/")[0] == 200
    assert raw_request(shared_emulator, "/nothing/here")[0] == 404


def test_absolute_form_request_routes_on_path(shared_emulator):
    status, body = raw_request(
        shared_emulator, "http://jsoc.stanford.edu/cgi-bin/ajax/jsoc_info?op=series_struct&ds=hmi.M_720s")
    assert status == 200
    assert json.loads(body)["primekeys"] == ["T_REC", "CAMERA"]


def test_series_struct_fields_and_interval(shared_emulator):
    d = get(shared_emulator, "jsoc_info", op="series_struct", ds="hmi.m_45s")
    assert list(d)[-3:] == ["Interval", "runtime", "status"] and d["status"] == 0
    iv = d["Interval"]
    assert iv["FirstRecord"] == "hmi.M_45s[2010.05.01_00:00:00_TAI][2]"
    assert iv["LastRecord"] == "hmi.M_45s[2024.07.01_00:00:00_TAI][2]"  # the world clock
    assert isinstance(iv["FirstRecnum"], int) and iv["FirstRecnum"] < iv["LastRecnum"] <= iv["MaxRecnum"]
    assert d["primekeysinfo"] == [{"name": "T_REC", "slotted": 1, "step": "45.0"}, {"name": "CAMERA", "slotted": 0}]


def test_unknown_series_public_wrapper_and_bare_jsoc_info(shared_emulator, tmp_path):
    assert get(shared_emulator, "jsoc_info", op="series_struct", ds="hmi.nope") == \
        {"status": 4, "error": "Invalid series name."}
    assert get(shared_emulator, "jsoc_info", op="rs_list", ds="nope.x[]", key="T_REC")["status"] == 4
    with Emulator(config=EmulatorConfig(public_wrapper=False)) as bare:
        assert get(bare, "jsoc_info", op="series_struct", ds="hmi.nope") == {"status": 1, "error": "series not found"}


def test_rs_list_empty_result_has_no_lists(shared_emulator):
    d = get(shared_emulator, "jsoc_info", op="rs_list", ds="hmi.M_45s[2030.01.01_TAI]", key="T_REC", seg="magnetogram")
    assert list(d) == ["count", "runtime", "status"] and d["count"] == 0 and d["status"] == 0


def test_rs_list_segment_filter_in_ds_without_seg_gives_empty_segments(shared_emulator):
    d = get(shared_emulator, "jsoc_info", op="rs_list", ds="hmi.sharp_cea_720s[3604]{Bp,magnetogram}", n="5",
            key="T_REC,HARPNUM")
    assert d["segments"] == [] and d["links"] == [] and d["count"] == 5


def test_rs_list_values_are_strings_recnum_sunum_numbers(shared_emulator):
    d = get(shared_emulator, "jsoc_info", op="rs_list", ds="hmi.M_45s[2024.06.01_TAI/3m]",
            key="T_REC,QUALITY,DATAMEAN,CAR_ROT,*recnum*,*sunum*,*online*,*size*", seg="magnetogram", R="1")
    assert list(d) == ["recinfo", "keywords", "segments", "links", "count", "runtime", "status"]
    cols = {k["name"]: k["values"] for k in d["keywords"]}
    for name in ("T_REC", "QUALITY", "DATAMEAN", "CAR_ROT", "*online*", "*size*"):
        assert all(isinstance(v, str) for v in cols[name]), name
    assert all(isinstance(v, int) for v in cols["*recnum*"] + cols["*sunum*"])
    assert all(q.startswith("0x") and len(q) == 10 for q in cols["QUALITY"])
    assert cols["*online*"] == ["Y"] * 4  # recent data is on disk
    seg = d["segments"][0]
    assert list(seg) == ["name", "values", "dims", "cparms", "bzeros", "bscales"]
    assert seg["dims"] == ["4096x4096"] * 4 and seg["bscales"] == ["0.1"] * 4
    for rec, path, sunum in zip(d["recinfo"], seg["values"], cols["*sunum*"]):
        assert path == f"/SUM{sunum % 100 + 1}/D{sunum}/S{int(path.split('/S')[-1][:5]):05d}/magnetogram.fits"
        assert rec["online"] == 1 and rec["name"].startswith("hmi.M_45s[2024.06.01_00:0")


_WINDOWS = {
    "hmi.M_45s": "[2024.06.30_12:00_TAI/5m]", "hmi.M_720s": "[2024.06.30_12:00_TAI/1h]",
    "hmi.sharp_720s": "[][2024.06.30_12:00_TAI/1h]", "hmi.sharp_cea_720s": "[][2024.06.30_12:00_TAI/1h]",
    "aia.lev1": "[2024.06.30_12:00_TAI/30s]", "aia.lev1_euv_12s": "[2024.06.30_12:00_TAI/1m]",
    "aia.lev1_uv_24s": "[2024.06.30_12:00_TAI/2m]",
}


@pytest.mark.parametrize("series", sorted(_WINDOWS))
def test_rs_list_every_value_parses_as_its_keyword_type(shared_emulator, series):
    """What drms and the catalog rely on: int keywords print as ints (decimal or 0x hex),
    floats as floats, times as times of the keyword's zone; a missing value prints as
    JSOC prints it, ``MISSING`` (drms turns that into NaN)."""
    from jsocmirror import drmstime
    from jsocmirror.series import builtin_series

    sdef = builtin_series().get(series)
    d = get(shared_emulator, "jsoc_info", op="rs_list", ds=series + _WINDOWS[series], key="**ALL**")
    assert int(d["count"]) > 0
    for column in d["keywords"]:
        kw = sdef.keyword(column["name"])
        for value in column["values"]:
            if value == "MISSING":
                continue
            if kw.is_int:
                int(value, 0)
            elif kw.is_float:
                float(value)
            elif kw.is_time:
                drmstime.parse_time(value)


def test_rs_list_specials_all_none_and_n(shared_emulator):
    d = get(shared_emulator, "jsoc_info", op="rs_list", ds="hmi.M_720s[2014.01.01_TAI/1d]", key="**ALL**",
            seg="**ALL**", n="-2")
    sdef = shared_emulator.registry.get("hmi.M_720s")
    assert [k["name"] for k in d["keywords"]] == [k.name for k in sdef.visible_keywords]
    assert "T_REC_index" not in [k["name"] for k in d["keywords"]]
    assert [s["name"] for s in d["segments"]] == ["magnetogram"] and d["count"] == 2
    d = get(shared_emulator, "jsoc_info", op="rs_list", ds="hmi.M_720s[2014.01.01_TAI/1d]", key="**NONE**", n="3")
    assert d["keywords"] == [] and d["count"] == 3


def test_rs_list_where_filter_rejects_sql_beyond_comparisons(shared_emulator):
    ok = get(shared_emulator, "jsoc_info", op="rs_list", key="T_REC,QUALITY",
             ds="hmi.M_45s[2014.01.01_TAI/1d][? QUALITY = '0' AND T_REC > $(2014.01.01_12:00_TAI) ?]")
    assert ok["status"] == 0 and 900 < ok["count"] < 960
    for bad in ("[? QUALITY=0; DROP TABLE hmi.M_45s ?]", "[? QUALITY IN (SELECT 1) ?]", "[? NOSUCH = 1 ?]"):
        d = get(shared_emulator, "jsoc_info", op="rs_list", ds="hmi.M_45s[2014.01.01_TAI/1h]" + bad, key="T_REC")
        assert d["status"] == 1 and d["error"] and "keywords" not in d, bad


def test_rs_list_too_many_records_is_an_error_not_oom(shared_emulator):
    d = get(shared_emulator, "jsoc_info", op="rs_list", ds="aia.lev1[]", key="T_REC")
    assert d["status"] == 1 and d["error"].startswith("Too many records")
    # but n= works on an absurd set, like JSOC's LIMIT
    d = get(shared_emulator, "jsoc_info", op="rs_list", ds="aia.lev1[]", key="T_REC,FSN", n="-1")
    assert d["count"] == 1


@pytest.mark.parametrize("query", [
    "op=rs_list&ds=hmi.M_45s[2014.01.01_TAI/1h&key=T_REC",
    "op=rs_list&ds=hmi.M_45s[2014.13.45_TAI]&key=T_REC",
    "op=rs_list&ds=&key=T_REC",
    "op=rs_list&ds=hmi.M_45s[2014.01.01_TAI]&n=many&key=T_REC",
    "op=whatever",
    "op=rs_list&ds=hmi.M_45s[%ZZ]",
])
def test_bad_input_gets_json_error_with_http_200(shared_emulator, query):
    d = get(shared_emulator, "jsoc_info", raw_query=query)
    assert d["status"] != 0 and isinstance(d["error"], str) and d["error"]


def test_rs_summary_counts(shared_emulator):
    d = get(shared_emulator, "jsoc_info", op="rs_summary", ds="aia.lev1_euv_12s[2014.01.01_TAI/1h]")
    assert d == {"count": 300 * 7, "runtime": d["runtime"], "status": 0}


def test_show_series_filter_is_case_insensitive_ere(shared_emulator):
    d = get(shared_emulator, "show_series", filter="^AIA\\.lev1_(euv|uv)")
    assert d["status"] == 0 and d["n"] == 2
    assert [x["name"] for x in d["names"]] == ["aia.lev1_euv_12s", "aia.lev1_uv_24s"]
    assert d["names"][0]["primekeys"] == "T_REC, WAVELNTH"
    assert get(shared_emulator, "show_series", filter="(")["status"] == 1


def test_showextseries_names_and_info(shared_emulator):
    d = get(shared_emulator, "showextseries", dbhost="hmidb2", filter="sharp")
    assert d == {"errMsg": "", "seriesList": ["hmi.sharp_720s", "hmi.sharp_cea_720s"]}
    d = get(shared_emulator, "showextseries", dbhost="hmidb2", filter="M_45", info="1")
    assert list(d["seriesList"][0]) == ["hmi.M_45s"] and "description" in d["seriesList"][0]["hmi.M_45s"]


@pytest.mark.parametrize(("address", "status"), [
    ("user@example.org", 2), ("user@lab.invalid", 4), ("user+pending@example.org", 3), ("not-an-address", -2), ("", -2),
])
def test_check_address_statuses_double_encoded(shared_emulator, address, status):
    d = get(shared_emulator, "checkAddress.sh", raw_query=urlencode({"address": quote_plus(address), "checkonly": 1}))
    assert d["status"] == status and list(d) == ["msg", "status"]


def test_check_address_configurable_registered_set():
    config = EmulatorConfig(registered={"Alice@Example.org"}, pending={"bob@example.org"})
    with Emulator(config=config) as emu:
        def status(addr):
            return get(emu, "checkAddress.sh", raw_query=urlencode({"address": quote_plus(addr), "checkonly": 1}))
        assert status("alice@example.org")["status"] == 2
        assert status("bob@example.org")["status"] == 3
        assert status("carol@example.org") == {"msg": "Email address has been neither validated nor registered.",
                                                "status": 4}


def test_check_address_missing_argument_text(shared_emulator):
    assert get(shared_emulator, "checkAddress.sh", checkonly="1") == \
        {"msg": "Missing required argument 'address'.", "status": -2}


def test_rs_list_old_records_partly_offline(shared_emulator):
    d = get(shared_emulator, "jsoc_info", op="rs_list", ds="hmi.M_720s[2011.01.01_TAI/30d]", key="*online*",
            seg="magnetogram", R="1")
    online = d["keywords"][0]["values"]
    assert 0.1 < online.count("N") / len(online) < 0.9
    for flag, path, rec in zip(online, d["segments"][0]["values"], d["recinfo"]):
        assert (flag == "Y") == path.startswith("/SUM") == (rec["online"] == 1)
        if flag == "N":
            assert path == "NoDataDirectory"


def test_check_address_without_checkonly_starts_registration(shared_emulator):
    d = get(shared_emulator, "checkAddress.sh", raw_query=urlencode({"address": quote_plus("new@lab.invalid")}))
    assert d["status"] == 1 and d["msg"].startswith("Email address is not registered. Starting registration")


def test_where_filter_on_constant_numeric_keyword(shared_emulator):
    ds = "hmi.M_45s[2014.01.01_TAI/3m][? WAVELNTH > 6000 ?]"
    assert get(shared_emulator, "jsoc_info", op="rs_list", ds=ds, key="T_REC")["count"] == 4
    ds = "hmi.M_45s[2014.01.01_TAI/3m][? WAVELNTH < 6000 ?]"
    assert get(shared_emulator, "jsoc_info", op="rs_list", ds=ds, key="T_REC")["count"] == 0


def test_cli_serve_prints_url_answers_and_stops_on_sigterm(tmp_path):
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "jsocmirror", "-q", "emulator", "serve", "--port", "0",
                             "--state-dir", str(tmp_path / "emu"), "--registered", "me@example.org"],
                            stdout=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/")
        with urllib.request.urlopen(url + "cgi-bin/ajax/show_series?filter=M_720", timeout=10) as resp:
            assert json.loads(resp.read())["names"][0]["name"] == "hmi.M_720s"
        for address, status in (("me@example.org", 2), ("you@example.org", 4)):
            query = urlencode({"address": quote_plus(address), "checkonly": 1})
            with urllib.request.urlopen(f"{url}cgi-bin/ajax/checkAddress.sh?{query}", timeout=10) as resp:
                assert json.loads(resp.read())["status"] == status
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert (tmp_path / "emu" / "world.json").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_concurrent_requests_get_consistent_answers(shared_emulator):
    from concurrent.futures import ThreadPoolExecutor

    def fetch(i):
        return get(shared_emulator, "jsoc_info", op="rs_list", ds=f"hmi.M_45s[2014.01.0{1 + i % 3}_TAI/1h]",
                   key="T_REC,*recnum*,QUALITY")

    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(fetch, range(24)))
    for i, reply in enumerate(replies):
        assert reply["count"] == 80 and reply == replies[i % 3] | {"runtime": reply["runtime"]}


def test_random_record_sets_never_crash_the_server(shared_emulator):
    import random

    rng = random.Random(2)
    pieces = ["hmi.M_45s", "aia.lev1_euv_12s", "hmi.sharp_720s", "[", "]", "{", "}", "[?", "?]", "[!", "!]",
              "2014.01.01_TAI", "/1h", "@12m", "-", ",", "#", ":#", "$", "^", "QUALITY", "=", "'0'", " AND ",
              "(", ")", "T_REC", "magnetogram", "3604", "171", "1e9", "%", "\\", ";", "x"]
    for _ in range(80):
        ds = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 10)))
        params = {"op": rng.choice(["rs_list", "rs_summary", "series_struct"]), "ds": ds,
                  "key": rng.choice(["T_REC", "**ALL**", "x,*recnum*"]), "seg": rng.choice(["", "**ALL**"]),
                  "n": rng.choice(["", "5", "-3", "1e400", "x"]), "R": rng.choice(["", "1"])}
        d = get(shared_emulator, "jsoc_info", **params)  # asserts HTTP 200 + JSON
        assert isinstance(d["status"], int), ds
        assert not str(d.get("error", "")).startswith("internal emulator error"), (ds, d)
