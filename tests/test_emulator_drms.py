"""The unmodified drms client against the emulator, and the emulator's replies against real
JSOC recordings (../shared/fixtures/protocol): same field names, order and value types."""

from __future__ import annotations

import csv
import json
import urllib.request
from urllib.parse import parse_qsl, urlsplit

import drms
import pytest

from tests.conftest import make_drms_client


@pytest.fixture(scope="module")
def client(shared_emulator):
    return make_drms_client(shared_emulator)


def test_series_lists_emulated_series_with_regex(client):
    assert client.series(r"hmi\.m_") == ["hmi.M_45s", "hmi.M_720s"]
    assert "aia.lev1_euv_12s" in client.series()
    full = client.series("SHARP", full=True)  # case-insensitive like JSOC's ERE filter
    assert list(full.columns) == ["name", "note"]
    assert sorted(full.name) == ["hmi.sharp_720s", "hmi.sharp_cea_720s"]


def test_pkeys_keys_info_match_definitions(client):
    assert client.pkeys("hmi.M_45s") == ["T_REC", "CAMERA"]
    assert client.pkeys("hmi.sharp_cea_720s") == ["HARPNUM", "T_REC"]
    keys = client.keys("aia.lev1_euv_12s")
    assert keys[:3] == ["T_REC", "T_OBS", "WAVELNTH"] and "QUALITY" in keys
    info = client.info("HMI.M_45S")  # series names are case-insensitive
    assert info.keywords.loc["T_REC"].type == "time"
    assert list(info.segments.index) == ["magnetogram"]
    assert list(client.info("aia.lev1_euv_12s").links.index) == ["lev1"]


def test_check_email_registered_unregistered_pending_malformed(client):
    assert client.check_email("someone@example.org") is True
    assert client.check_email("someone@lab.invalid") is False
    assert client.check_email("someone+pending@example.org") is False
    assert client.check_email("not-an-address") is False


def test_client_constructor_rejects_unregistered_email(shared_emulator):
    with pytest.raises(ValueError, match="invalid or not registered"):
        make_drms_client(shared_emulator, email="nobody@lab.invalid")


@pytest.mark.parametrize(("ds", "expected"), [
    ("hmi.M_45s[2013.07.03_08:42_TAI/3m]", 4),
    ("hmi.M_45s[2013.07.03_08:42_TAI/4m]", 5),
    ("hmi.M_720s[2013.07.03_08:42_TAI/40m]", 3),
    ("hmi.M_45s[2014.01.01_00:00:35_TAI-2014.01.01_01:00:35_TAI]", 81),
    ("hmi.M_45s[2012.01.01_00:00:34_TAI-2012.01.01_00:02:04_TAI@90.0s]", 2),
    ("aia.lev1_euv_12s[2014.01.01_00:00:35_TAI-2014.01.01_00:02:35_TAI][304]", 11),
    ("aia.lev1_euv_12s[2010.07.30_13:30:34_TAI-2010.07.30_14:00:34_TAI][193]", 151),
])
def test_query_counts_match_known_answers(client, ds, expected):
    assert len(client.query(ds, key="T_REC")) == expected


def test_query_times_match_data_model_vectors(client):
    t = client.query("hmi.M_720s[2013.07.03_08:42_TAI/40m]", key="T_REC").T_REC.tolist()
    assert t == ["2013.07.03_08:48:00_TAI", "2013.07.03_09:00:00_TAI", "2013.07.03_09:12:00_TAI"]
    t = client.query("hmi.M_45s[2016.04.01_TAI/1d@6h]", key="T_REC").T_REC.tolist()
    assert [x[11:13] for x in t] == ["00", "06", "12", "18"]
    t = client.query("hmi.M_45s[2014.01.01_00:00:35_TAI-2014.01.01_01:00:35_TAI]", key="T_REC").T_REC
    assert (t.iloc[0], t.iloc[-1]) == ("2014.01.01_00:00:45_TAI", "2014.01.01_01:00:45_TAI")
    aia = client.query("aia.lev1_euv_12s[2014.01.01_00:00:35_TAI-2014.01.01_00:02:35_TAI][304]", key="T_REC").T_REC
    assert (aia.iloc[0], aia.iloc[-1]) == ("2014-01-01T00:00:01Z", "2014-01-01T00:02:01Z")


def test_query_key_seg_rec_index_n(client):
    keys, segs = client.query("hmi.M_45s[2014.01.01_TAI/1h]", key="T_REC,CAMERA,*recnum*",
                              seg="magnetogram", rec_index=True, n=-3)
    assert len(keys) == 3
    assert list(keys.index) == [f"hmi.M_45s[{t}][2]" for t in keys.T_REC]
    assert keys.T_REC.iloc[-1] == "2014.01.01_00:59:15_TAI"
    assert list(keys.CAMERA) == [2, 2, 2]  # converted by drms from the strings JSOC sends
    assert keys["*recnum*"].is_monotonic_increasing
    for path in segs.magnetogram:
        assert path == "NoDataDirectory" or (path.startswith("/SUM") and path.endswith("/magnetogram.fits"))
    first = client.query("hmi.M_45s[2014.01.01_TAI/1h]", key="T_REC", n=2).T_REC.tolist()
    assert first == ["2014.01.01_00:00:00_TAI", "2014.01.01_00:00:45_TAI"]


def test_query_link_and_link_segment_resolve_through_lev1(client):
    keys, segs, links = client.query("aia.lev1_euv_12s[2014.01.01_00:00:35_TAI/1m][171]",
                                     key="T_REC,FSN", seg="image", link="lev1")
    assert len(links) == 5
    for fsn, link in zip(keys.FSN, links.lev1):
        assert link.startswith("aia.lev1[2014-01-01T00:0") and link.endswith(f"][{fsn}]")
    assert all(p == "NoDataDirectory" or p.endswith("/image_lev1.fits") for p in segs.image)


def test_query_unknown_names_give_jsoc_placeholders(client):
    keys, segs, links = client.query("hmi.M_720s[2013.07.03_08:42_TAI/40m]", key="foo", link="bar", seg="baz")
    assert len(keys) == 3 and (keys.foo == "Invalid KeyLink").all()
    assert (segs.baz == "InvalidSegName").all()
    assert (links.bar == "Invalid_Link").all()


def test_query_errors_raise_drms_query_error(client):
    with pytest.raises(drms.DrmsQueryError, match=r"Invalid series name\. \[status=4\]"):
        client.query("hmi.nosuch_series[]", key="T_REC")
    with pytest.raises(drms.DrmsQueryError, match=r"bad time 'yesterday'.*\[status=1\]"):
        client.query("hmi.M_45s[yesterday]", key="T_REC")
    with pytest.raises(drms.DrmsQueryError, match="Too many records"):
        client.query("aia.lev1_euv_12s", key="T_REC")


def test_query_where_filter_and_empty_result(client):
    res = client.query("hmi.M_45s[2014.01.01_TAI/1d][? QUALITY < 0 ?]", key="T_REC,QUALITY", skip_conversion="QUALITY")
    assert 0 < len(res) < 40
    assert all(q.startswith("0x8") for q in res.QUALITY)
    empty = client.query("hmi.M_45s[2030.01.01_TAI/1h]", key="T_REC")
    assert len(empty) == 0


# ------------------------------------------------------------------------------------------------
# replies versus the real recordings
# ------------------------------------------------------------------------------------------------
def _recordings(fixtures_dir):
    proto = fixtures_dir / "protocol"
    with open(proto / "sunpyvcr2020_interactions.tsv", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    return proto, rows


def _shape(value):
    """Field names, order and value types of a JSON value (list items summarised by their first)."""
    if isinstance(value, dict):
        return [(k, _shape(v)) for k, v in value.items()]
    if isinstance(value, list):
        return ["list", _shape(value[0])] if value else ["list"]
    return type(value).__name__


def _replay(emu, uri: str) -> dict:
    parts = urlsplit(uri)
    # through the proxy path: the absolute-form request the real host would get
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": emu.url}))
    with opener.open(uri, timeout=30) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("application/json")
        assert parts.netloc == "jsoc.stanford.edu"
        return json.loads(resp.read())


def test_replies_match_recorded_rs_list_field_shapes(shared_emulator, fixtures_dir):
    proto, rows = _recordings(fixtures_dir)
    checked = 0
    for row in rows:
        if "rs_list" not in row["file"]:
            continue
        recorded = json.loads((proto / row["file"]).read_text())
        uri = row["request_uri"]
        ours = _replay(shared_emulator, uri)
        assert list(ours) == list(recorded), row["file"]
        names = [k["name"] for k in ours["keywords"]]
        if "%2A%2AALL%2A%2A" in uri or "**ALL**" in uri:
            # **ALL** lists the definition's visible keywords in series order (ours has fewer than JSOC)
            series = dict(parse_qsl(urlsplit(uri).query))["ds"].split("[")[0]
            assert names == [k.name for k in shared_emulator.registry.get(series).visible_keywords]
        else:
            assert names == [k["name"] for k in recorded["keywords"]], row["file"]
        theirs = {k["name"]: _shape(k) for k in recorded["keywords"]}
        common = [k for k in ours["keywords"] if k["name"] in theirs]
        assert len(common) >= 5
        for k in common:
            assert _shape(k) == theirs[k["name"]], (row["file"], k["name"])
        assert _shape(ours.get("recinfo")) == _shape(recorded.get("recinfo"))
        assert ours["segments"] == recorded["segments"] == []
        assert type(ours["count"]) is type(recorded["count"]) and type(ours["status"]) is int
        checked += 1
    assert checked == 7


def test_replies_match_recorded_series_struct_and_check_address(shared_emulator, fixtures_dir):
    proto, rows = _recordings(fixtures_dir)
    checked = 0
    for row in rows:
        uri = row["request_uri"]
        recorded = json.loads((proto / row["file"]).read_text())
        if "series_struct" in row["file"]:
            series = dict(parse_qsl(urlsplit(uri).query))["ds"]
            if shared_emulator.registry.get(series) is None:
                continue  # hmi.v_45s is not emulated
            ours = _replay(shared_emulator, uri)
            assert list(ours) == list(recorded), row["file"]
            assert _shape(ours["Interval"]) == _shape(recorded["Interval"])
            assert _shape(ours["primekeysinfo"]) == _shape(recorded["primekeysinfo"])
            assert ours["primekeys"] == recorded["primekeys"]
            for mine, theirs in zip(ours["keywords"], recorded["keywords"]):
                assert set(mine) - {"linkinfo"} == set(theirs) - {"linkinfo"}
            assert _shape(ours["segments"][:1]) == _shape(recorded["segments"][:1])
            checked += 1
        elif "checkAddress" in row["file"]:
            ours = _replay(shared_emulator, uri)
            assert ours == recorded  # same fields, order and texts
            checked += 1
    assert checked == 6


def test_sunpy_jsoc_search_through_http_proxy(shared_emulator, monkeypatch):
    """sunpy's JSOCClient knows only jsoc.stanford.edu; HTTP_PROXY sends it to the emulator."""
    pytest.importorskip("sunpy.net", reason="sunpy[net] not installed")
    import astropy.units as u
    from sunpy.net import attrs as a
    from sunpy.net import jsoc

    proxy = shared_emulator.url.rstrip("/")
    for name in ("HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    # urllib caches its opener (and the proxies it read) at the first urlopen: make it read them again
    monkeypatch.setattr(urllib.request, "_opener", None)
    client = jsoc.JSOCClient()
    res = client.search(a.Time("2014-01-01T00:00:00", "2014-01-01T00:05:00"), a.jsoc.Series("hmi.M_45s"))
    assert len(res) == 7 and res["T_REC"][0] == "2014.01.01_00:00:45_TAI"
    assert set(res["INSTRUME"]) == {"HMI_FRONT2"}
    res = client.search(a.Time("2014-01-01T00:00:00", "2014-01-01T00:01:00"), a.jsoc.Series("aia.lev1_euv_12s"),
                        a.Wavelength(171 * u.AA))
    assert len(res) == 6 and all(t.endswith("Z") for t in res["T_REC"])


def test_drms_sees_the_next_night(emulator, drms_client):
    before = drms_client.query("hmi.M_720s[2024.06.01_TAI-2024.07.01_TAI]", key="T_REC,*recnum*")
    report = emulator.world.next_night()["hmi.M_720s"]
    after = drms_client.query("hmi.M_720s[2024.06.01_TAI-2024.07.02_TAI]", key="T_REC,*recnum*")
    assert len(after) == len(before) + 120 - len(report["deleted"])
    old = dict(zip(before.T_REC, before["*recnum*"]))
    new = dict(zip(after.T_REC, after["*recnum*"]))
    for key in report["reprocessed"]:
        t_rec = key[1:].split("]")[0]
        if t_rec in old:
            assert new[t_rec] > max(old.values())
    for key in report["deleted"]:
        assert key[1:].split("]")[0] not in new
    versions = drms_client.query(f"hmi.M_720s{report['reprocessed'][0]}[! QUALITY >= -2147483648 !]", key="*recnum*")
    assert len(versions) == 2
