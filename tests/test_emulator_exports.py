"""jsoc_fetch exports and downloads of the emulator, driven by the unmodified drms client over HTTP."""

from __future__ import annotations

import asyncio
import http.client
import io
import json
import re
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from pathlib import Path

import drms
import pytest
from astropy.io import fits

from jsocmirror.emulator import Emulator

from _http import error_code

EMAIL = "exports@example.com"
PROTOCOL_FIXTURES = Path(__file__).resolve().parents[1] / ".." / "shared" / "fixtures" / "protocol"
HMI_DS = "hmi.M_45s[2024.06.30_00:00:00_TAI/3m]"  # 4 records
ID_RE = re.compile(r"^JSOC_\d{8}_\d{3,}$")


def _client(emu, email=EMAIL) -> drms.Client:
    return drms.Client(drms.ServerConfig(**emu.drms_config()), email=email)


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    with Emulator(state_dir=tmp_path_factory.mktemp("emu"), seed=0) as emulator:
        emulator.exports.config.set_mode("lenient")  # most tests submit freely; strict mode has its own test
        yield emulator


@pytest.fixture(scope="module")
def client(emu):
    return _client(emu)


def _fetch(emu, **params) -> dict:
    params.setdefault("op", "exp_request")
    params.setdefault("format", "json")
    url = emu.cgi_url + "jsoc_fetch?" + urllib.parse.urlencode(params)
    return json.loads(urllib.request.urlopen(url, timeout=10).read())


def _request(emu, ds=HMI_DS, method="url", protocol="fits", notify=EMAIL, **extra) -> dict:
    return _fetch(emu, ds=ds, method=method, protocol=protocol, notify=notify, requester="exports",
                  **{"process=n": "0"}, **extra)


def _wait_done(emu, requestid: str, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        reply = _fetch(emu, op="exp_status", requestid=requestid)
        if reply["status"] not in (1, 6) or time.monotonic() > deadline:
            return reply
        time.sleep(0.02)


def _open_verified(path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # astropy reports checksum mismatches as warnings
        hdul = fits.open(path, checksum=True)
        hdul[1].data  # decompress: the DATASUM check runs on the data
    return hdul


def _raw_get(emu, raw_path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    host, port = urllib.parse.urlsplit(emu.url).netloc.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.putrequest("GET", raw_path, skip_accept_encoding=True)
    for name, value in (headers or {}).items():
        conn.putheader(name, value)
    conn.endheaders()
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, dict(response.headers), body


# -- drms end to end -----------------------------------------------------------------------------
def test_export_url_quick_as_is_answers_at_once_with_sums_paths(emu, client, tmp_path):
    request = client.export(HMI_DS, method="url_quick", protocol="as-is")
    assert request.status == 0 and request.id is None
    assert request.has_succeeded()
    assert all(re.match(r"^http://127\.0\.0\.1:\d+/SUM\d+/D\d+/S\d{5}/magnetogram\.fits$", u) for u in request.urls.url)
    downloaded = request.download(tmp_path)
    assert len(downloaded) == 4 and downloaded.download.notna().all()
    for path in downloaded.download:
        with _open_verified(path) as hdul:
            assert hdul[1].data.shape == (64, 64)
            assert "RECNUM" not in hdul[1].header  # as-is: the bare SUMS file


def test_export_url_fits_wait_download_headers(emu, client, tmp_path):
    request = client.export(HMI_DS, method="url", protocol="fits")
    assert request.status == 2 and ID_RE.match(request.id)
    assert request.wait(sleep=0.05, timeout=20)
    assert request.has_succeeded()
    assert list(request.data.filename)[0] == "hmi.m_45s.20240630_000000_TAI.2.magnetogram.fits"  # as recorded
    recnums = client.query(HMI_DS, key="T_REC,*recnum*")
    downloaded = request.download(tmp_path)
    assert len(downloaded) == 4
    for path, (_, row) in zip(sorted(downloaded.download), recnums.sort_values("T_REC").iterrows()):
        with _open_verified(path) as hdul:
            hdr = hdul[1].header
            assert hdr["T_REC"] == row["T_REC"].replace("_TAI", ".000_TAI")
            assert hdr["CAMERA"] == 2
            assert hdr["RECNUM"] == int(row["*recnum*"])
            assert hdr["DRMS_ID"] == f"hmi.M_45s:{hdr['RECNUM']}:magnetogram"
            assert hdr["PRIMARYK"] == "T_REC, CAMERA"


def test_export_url_tar_is_a_real_tar_of_the_files(emu, client, tmp_path):
    request = client.export("hmi.M_45s[2024.06.30_01:00:00_TAI/2m]", method="url-tar", protocol="fits")
    assert request.wait(sleep=0.05, timeout=20)
    assert request.tarfile.endswith(f"/{request.id}.tar")
    assert len(request.urls) == 1
    downloaded = request.download(tmp_path)
    with tarfile.open(downloaded.download[0]) as tar:
        names = tar.getnames()
        assert sorted(names) == sorted(list(request.data.filename) + ["index.json"])
        member = tar.extractfile(request.data.filename[0]).read()
    with _open_verified(io.BytesIO(member)) as hdul:
        assert hdul[1].header["RECNUM"] > 0


def test_export_from_id_survives_an_emulator_restart(tmp_path):
    state = tmp_path / "emu"
    with Emulator(state_dir=state, seed=0) as first:
        request = _client(first).export(HMI_DS, method="url", protocol="fits")
        requestid = request.id
    assert (state / "exports.json").exists()
    with Emulator(state_dir=state, seed=0) as second:  # a new process on the same state dir
        again = _client(second).export_from_id(requestid)
        assert again.wait(sleep=0.05, timeout=20)
        assert len(again.urls) == 4
        downloaded = again.download(tmp_path)
        assert downloaded.download.notna().all()
        new = _request(second, ds="hmi.M_45s[2024.06.30_02:00:00_TAI]")
        assert new["requestid"] != requestid  # ids keep counting after the restart


def test_export_aia_link_segments_use_the_target_time_and_file(emu, client):
    request = client.export("aia.lev1_euv_12s[2024.06.30_00:00:00_TAI/36s][171]{image}", method="url",
                            protocol="fits")
    assert request.wait(sleep=0.05, timeout=20)
    name = request.data.filename[0]
    assert re.fullmatch(r"aia\.lev1_euv_12s\.\d{4}-\d\d-\d\dT\d{6}Z\.171\.image_lev1\.fits", name)
    assert request.data.record[0].startswith("aia.lev1_euv_12s[2024-06-")


# -- reply shapes against the recordings ----------------------------------------------------------
def _recorded(pattern: str) -> dict:
    paths = sorted(PROTOCOL_FIXTURES.glob(pattern))
    if not paths:
        pytest.skip("protocol fixtures absent")
    return json.loads(paths[0].read_text())


def _shape(obj):
    if isinstance(obj, dict):
        return {k: _shape(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_shape(obj[0])] if obj else []
    return type(obj).__name__


def test_exp_request_replies_have_the_recorded_fields_and_types(emu):
    queued = _recorded("sunpyvcr2020__jsoc_fetch__exp_request__url_fits__status2__hmi*01_01_10*.json")
    assert _shape(_request(emu, ds="hmi.M_45s[2024.06.30_03:00:00_TAI]")) == _shape(queued)
    quick = _recorded("sunpyvcr2020__jsoc_fetch__exp_request__url_quick_as-is__status0__*.json")
    ours = _request(emu, ds="hmi.M_45s[2024.06.30_03:00:00_TAI]", method="url_quick", protocol="as-is")
    assert _shape(ours) == _shape(quick)
    assert list(ours) == list(quick)  # same key order too
    assert re.fullmatch(r"hmi\.M_45s\[2024\.06\.30_03:00:00_TAI\]\[2\]\{magnetogram\}", ours["data"][0]["record"])


def test_exp_status_index_has_the_recorded_fields_all_strings(emu):
    recorded = _recorded("sunpyvcr2020__jsoc_fetch__exp_status__JSOC_20200410_003__status0.json")
    reply = _wait_done(emu, _request(emu, ds="hmi.M_45s[2024.06.30_04:00:00_TAI]")["requestid"])
    assert _shape(reply) == _shape(recorded)
    assert list(reply) == list(recorded)
    assert re.fullmatch(r"\d{4}\.\d\d\.\d\d_\d\d:\d\d:\d\d_UT", reply["exptime"])
    assert re.fullmatch(r"/SUM\d+/D\d+/S00000", reply["dir"])


# -- the state machine -----------------------------------------------------------------------------
def test_exp_status_pending_then_done(emu):
    emu.exports.config.timing.base = 0.5
    try:
        reply = _request(emu, ds="hmi.M_45s[2024.06.30_05:00:00_TAI]")
        pending = _fetch(emu, op="exp_status", requestid=reply["requestid"])
        assert pending["status"] == 1 and pending["wait"] >= 1 and pending["rcount"] == 1 and pending["size"] >= 1
        assert _wait_done(emu, reply["requestid"])["status"] == "0"
    finally:
        emu.exports.config.timing.base = 0.05


def test_exp_request_same_request_within_a_day_returns_the_same_id(emu):
    first = _request(emu, ds="hmi.M_45s[2024.06.30_06:00:00_TAI]")
    second = _request(emu, ds="hmi.M_45s[2024.06.30_06:00:00_TAI]")
    assert first["status"] == second["status"] == 2 and first["requestid"] == second["requestid"]
    other = _request(emu, ds="hmi.M_45s[2024.06.30_06:00:00_TAI]", protocol="as-is")
    assert other["requestid"] != first["requestid"]


def test_exp_request_strict_mode_allows_one_pending_export_per_email(emu):
    emu.exports.config.set_mode("strict")
    emu.exports.config.timing.base = 2.0
    try:
        first = _request(emu, ds="hmi.M_45s[2024.06.30_07:00:00_TAI]", notify="strict@example.com")
        busy = _request(emu, ds="hmi.M_45s[2024.06.30_07:01:00_TAI]", notify="strict@example.com")
        assert first["status"] == 2 and busy["status"] == 7
        assert "strict@example.com" in busy["error"] and first["requestid"] in busy["error"]
        assert _request(emu, ds="hmi.M_45s[2024.06.30_07:01:00_TAI]", notify="other@example.com")["status"] == 2
        emu.exports.config.set_mode("lenient")
        assert _request(emu, ds="hmi.M_45s[2024.06.30_07:02:00_TAI]", notify="strict@example.com")["status"] == 2
    finally:
        emu.exports.config.set_mode("lenient")
        emu.exports.config.timing.base = 0.05


def test_exp_request_too_large_is_status_3_void(emu):
    emu.exports.config.max_request_mb = 30
    try:
        reply = _request(emu)
    finally:
        emu.exports.config.max_request_mb = 100_000
    assert reply["status"] == 3 and reply["requestid"] == "VOID"
    assert reply["error"] == "Request exceeds max byte limit of 30MB"


def test_exp_request_unregistered_email_is_status_4(emu):
    reply = _request(emu, notify="nobody@example.invalid")
    assert reply == {"status": 4, "error": "Cannot process your request. email address has been neither "
                                           "validated nor registered"}


def test_exp_request_empty_record_set_is_status_4(emu):
    reply = _request(emu, ds="hmi.M_45s[2031.01.01_00:00:00_TAI]")  # after the emulator's now
    assert reply["status"] == 4 and reply["error"] == "There are no files in this RecordSet"


def test_exp_request_drops_no_image_records_unless_quality_is_named(emu):
    day = "hmi.M_45s[2024.06.20_00:00:00_TAI/6h]"
    url = emu.cgi_url + "jsoc_info?" + urllib.parse.urlencode({"op": "rs_list", "ds": day, "key": "T_REC,QUALITY"})
    columns = {k["name"]: k["values"] for k in json.loads(urllib.request.urlopen(url).read())["keywords"]}
    no_image = [t for t, q in zip(columns["T_REC"], columns["QUALITY"]) if int(q, 0) & 0x80000000]
    if not no_image:
        pytest.skip("no no-image record in this window")
    plain = _request(emu, ds=day, method="url_quick", protocol="as-is")
    assert plain["rcount"] == len(columns["T_REC"]) - len(no_image)
    assert not any(t in d["record"] for d in plain["data"] for t in no_image)
    named = _request(emu, ds=day[:-1] + "][? QUALITY < 0 ?]", method="url_quick", protocol="as-is")
    assert named["rcount"] == len(no_image)


def test_exp_request_process_n_limits_records(emu):
    reply = _fetch(emu, ds=HMI_DS, method="url_quick", protocol="as-is", notify=EMAIL, **{"process=n": "2"})
    assert reply["status"] == 0 and reply["rcount"] == 2


def test_exp_request_offline_records_are_queued_and_delayed(emu):
    # records older than a few months are partly on tape in the emulator's world
    reply = _request(emu, ds="hmi.M_45s[2014.06.01_00:00:00_TAI/1h]", method="url_quick", protocol="as-is")
    assert reply["status"] == 2 and reply["method"] == "url_quick"
    stored = emu.exports.store.get(reply["requestid"])
    assert stored.offline
    timing = emu.exports.config.timing
    assert stored.ready_wall - stored.created_wall >= timing.base + timing.offline - 1e-6
    done = _wait_done(emu, reply["requestid"])
    assert done["status"] == "0" and done["dir"] == "" and done["data"][0]["filename"].startswith("/SUM")


def test_exp_request_processing_time_grows_with_size(emu):
    small = emu.exports.store.get(_request(emu, ds="hmi.M_45s[2024.06.30_08:00:00_TAI]")["requestid"])
    big = emu.exports.store.get(_request(emu, ds="hmi.M_45s[2024.06.29_08:00:00_TAI/2h]")["requestid"])
    assert big.size_mb > small.size_mb
    assert big.ready_wall - big.created_wall > small.ready_wall - small.created_wall


def test_exp_status_bad_id_is_status_4(emu):
    assert _fetch(emu, op="exp_status", requestid="JSOC_20240630_999") == \
        {"status": 4, "error": "Bad RequestID 'JSOC_20240630_999' provided."}
    assert _fetch(emu, op="exp_status", requestid="../../etc")["status"] == 4


def test_exp_status_too_soon_is_status_6_and_drms_retries(emu, client):
    emu.exports.config.timing.visibility_delay = 0.3
    try:
        reply = _request(emu, ds="hmi.M_45s[2024.06.30_09:00:00_TAI]")
        assert _fetch(emu, op="exp_status", requestid=reply["requestid"])["status"] == 6
        assert client.export_from_id(reply["requestid"]).wait(sleep=0.1, timeout=20)
    finally:
        emu.exports.config.timing.visibility_delay = 0.0


def test_exp_status_expires_after_seven_days(tmp_path):
    with Emulator(state_dir=None, seed=0) as emu:
        reply = _request(emu, ds="hmi.M_45s[2024.06.30_10:00:00_TAI]")
        done = _wait_done(emu, reply["requestid"])
        url = emu.url + done["dir"].lstrip("/") + "/" + done["data"][0]["filename"]
        assert urllib.request.urlopen(url).status == 200
        emu.world.advance(7 * 86400 + 60)
        expired = _fetch(emu, op="exp_status", requestid=reply["requestid"])
        assert expired["status"] == 5 and "7 day" in expired["error"]
        assert error_code(url) == 404


def test_exp_request_slow_speed_reports_a_longer_wait(emu):
    emu.exports.config.set_speed("slow")
    try:
        reply = _request(emu, ds="hmi.M_45s[2024.06.30_11:00:00_TAI]")
        status = _fetch(emu, op="exp_status", requestid=reply["requestid"])
    finally:
        emu.exports.config.set_speed("quick")
    assert status["status"] in (1, 6)
    stored = emu.exports.store.get(reply["requestid"])
    assert stored.ready_wall - stored.created_wall >= 20


# -- bad input ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("params, fragment", [
    ({"method": "ftp"}, "Invalid method 'ftp'"),
    ({"protocol": "jpg,CT=grey.sao,scaling=MINMAX,size=1"}, "Protocol 'jpg"),
    ({"protocol": "tiff"}, "Protocol 'tiff'"),
    ({"filenamefmt": "{seriesname.{segment}"}, "malformed filenamefmt"),
    ({"filenamefmt": "{NOPE}.{segment}"}, "'NOPE' is not a keyword"),
    ({"filenamefmt": "../{segment}"}, "malformed filenamefmt"),
    ({"process=n": "0|im_patch,x=1"}, "Processing (im_patch,x=1) is not supported"),
    ({"process=n": "many"}, "n must be an integer"),
    ({"ds": "hmi.nosuch[2024.01.01]"}, ""),
    ({"ds": ""}, "no record set"),
])
def test_exp_request_bad_input_is_a_json_error(emu, params, fragment):
    base = {"ds": HMI_DS, "method": "url", "protocol": "fits", "notify": EMAIL, "process=n": "0"}
    reply = _fetch(emu, **{**base, **params})
    assert reply["status"] == 4 and fragment in reply["error"]


def test_jsoc_fetch_unknown_op_is_a_json_error(emu):
    assert _fetch(emu, op="exp_nothing")["status"] == 4


@pytest.mark.parametrize("raw", [
    "/SUM1/../../etc/passwd",
    "/SUM1/D1/S00000/..%2f..%2f..%2fetc%2fpasswd",
    "/SUM1/%2e%2e/%2e%2e/etc/passwd",
    "/SUM%2e%2e/etc/passwd",
    "/SUM1/D1/S00000/%2Fetc%2Fpasswd",
    "/SUM1/D1/S00000/..\\..\\etc\\passwd",
    "/SUM1/D1/S00000//etc/passwd",
    "//etc/passwd",
    "/etc/passwd",
    "/SUM1/D1/S00000/exports.json",
    "/exports.json",
    "/world.json",
    "http://jsoc.stanford.edu/SUM1/../../etc/passwd",
])
def test_download_path_traversal_is_404(emu, raw):
    status, _, body = _raw_get(emu, raw)
    assert status == 404
    assert b"root:" not in body and b"requests" not in body


def test_download_state_dir_is_never_served(emu):
    state = Path(emu.state_dir)
    for name in ("exports.json", "world.json"):
        status, _, _ = _raw_get(emu, urllib.parse.quote(str(state / name)))
        assert status == 404


# -- HTTP details of downloads -------------------------------------------------------------------------
def _a_file(emu) -> str:
    reply = _request(emu, ds="hmi.M_45s[2024.06.30_12:00:00_TAI]", method="url_quick", protocol="as-is")
    return reply["data"][0]["filename"]


def test_download_range_answers_206_with_content_range(emu):
    path = _a_file(emu)
    status, headers, full = _raw_get(emu, path)
    assert status == 200 and int(headers["Content-Length"]) == len(full) and headers["Accept-Ranges"] == "bytes"
    status, headers, part = _raw_get(emu, path, {"Range": "bytes=100-199"})
    assert status == 206 and part == full[100:200]
    assert headers["Content-Range"] == f"bytes 100-199/{len(full)}" and headers["Content-Length"] == "100"
    status, headers, tail = _raw_get(emu, path, {"Range": "bytes=2880-"})
    assert status == 206 and tail == full[2880:]
    status, _, last = _raw_get(emu, path, {"Range": "bytes=-50"})
    assert status == 206 and last == full[-50:]
    status, headers, _ = _raw_get(emu, path, {"Range": f"bytes={len(full)}-"})
    assert status == 416 and headers["Content-Range"] == f"bytes */{len(full)}"
    for ignored in ("bytes=0-1,5-9", "lines=1-2", "bytes=x-y"):  # may be ignored: the whole file
        status, _, body = _raw_get(emu, path, {"Range": ignored})
        assert status == 200 and body == full


def test_download_head_gives_length_without_body(emu):
    path = _a_file(emu)
    full = urllib.request.urlopen(emu.url + path.lstrip("/")).read()
    response = urllib.request.urlopen(urllib.request.Request(emu.url + path.lstrip("/"), method="HEAD"))
    assert int(response.headers["Content-Length"]) == len(full) and response.read() == b""


def test_download_bytes_are_stable_and_change_when_reprocessed(emu):
    ds = "hmi.M_45s[2024.06.30_13:00:00_TAI]"
    path = _request(emu, ds=ds, method="url_quick", protocol="as-is")["data"][0]["filename"]
    first = urllib.request.urlopen(emu.url + path.lstrip("/")).read()
    emu.exports.cache.clear()
    assert urllib.request.urlopen(emu.url + path.lstrip("/")).read() == first
    emu.world.reprocess("hmi.M_45s", "[2024.06.30_13:00:00_TAI][2]")
    new_path = _request(emu, ds=ds, method="url_quick", protocol="as-is")["data"][0]["filename"]
    assert new_path != path
    assert urllib.request.urlopen(emu.url + new_path.lstrip("/")).read() != first
    assert urllib.request.urlopen(emu.url + path.lstrip("/")).read() == first  # the old version stays stored


def test_export_url_quick_link_segments_point_where_rs_list_does(emu):
    ds = "aia.lev1_euv_12s[2024.06.30_00:00:00_TAI/24s][171]"
    reply = _request(emu, ds=ds, method="url_quick", protocol="as-is")
    url = emu.cgi_url + "jsoc_info?" + urllib.parse.urlencode({"op": "rs_list", "ds": ds, "key": "T_REC",
                                                               "seg": "image,spikes"})
    listed = json.loads(urllib.request.urlopen(url).read())["segments"]
    assert reply["status"] == 0 and reply["count"] == 4
    assert [d["filename"] for d in reply["data"]] == [p for pair in zip(*(s["values"] for s in listed)) for p in pair]
    assert reply["data"][0]["filename"].endswith("/image_lev1.fits")
    for row in reply["data"]:
        assert urllib.request.urlopen(emu.url + row["filename"].lstrip("/")).status == 200


def test_export_url_as_is_serves_files_keywords_and_index(emu):
    done = _wait_done(emu, _request(emu, ds="hmi.M_45s[2024.06.30_15:00:00_TAI/90s]", protocol="as-is")["requestid"])
    base = emu.url + done["dir"].lstrip("/") + "/"
    assert done["keywords"] == f"{done['dir']}/{done['requestid']}.keywords.txt"
    keywords = urllib.request.urlopen(emu.url + done["keywords"].lstrip("/")).read().decode()
    assert "T_REC=2024.06.30_15:00:00_TAI" in keywords and "CAMERA=2" in keywords
    assert json.loads(urllib.request.urlopen(base + "index.json").read())["requestid"] == done["requestid"]
    data = urllib.request.urlopen(base + done["data"][0]["filename"]).read()
    with fits.open(io.BytesIO(data), disable_image_compression=True) as raw:
        assert "RECNUM" not in raw[1].header and raw[1].verify_datasum() == 1


def test_export_ids_are_unique_across_processes_sharing_a_state_dir(tmp_path):
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from jsocmirror.emulator import Emulator\n"
        "emu = Emulator(state_dir=sys.argv[1])\n"
        "emu.exports.config.set_mode('lenient')\n"
        "ids = [emu.exports.exp_request({'ds': f'hmi.M_45s[2024.06.30_{h:02d}:{sys.argv[2]}:00_TAI]', 'method': 'url',\n"
        "       'protocol': 'fits', 'notify': 'p@example.com'})['requestid'] for h in range(8)]\n"
        "print(' '.join(ids))\n")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path), f"{m:02d}"], stdout=subprocess.PIPE,
                              text=True) for m in (10, 20)]
    ids = [i for p in procs for i in p.communicate(timeout=60)[0].split()]
    assert len(ids) == 16 and len(set(ids)) == 16
    with Emulator(state_dir=tmp_path) as emu:
        assert {r.requestid for r in emu.exports.store.all()} == set(ids)


def test_exp_request_accepts_requestor_and_requester_and_reqid(emu):
    old = _fetch(emu, ds="hmi.M_45s[2024.06.30_16:00:00_TAI]", method="url", protocol="fits", notify=EMAIL,
                 requestor="oldclient")  # drms 0.5/0.6 spelling, no process=n
    new = _fetch(emu, ds="hmi.M_45s[2024.06.30_16:01:30_TAI]", method="url", protocol="fits", notify=EMAIL,
                 requester="newclient", **{"process=n": "0"})
    assert emu.exports.store.get(old["requestid"]).requester == "oldclient"
    assert emu.exports.store.get(new["requestid"]).requester == "newclient"
    assert _wait_done(emu, old["requestid"])["status"] == "0"
    assert _fetch(emu, op="exp_status", reqid=new["requestid"])["requestid"] == new["requestid"]


def test_download_with_parfive_split_ranges(emu, tmp_path):
    """parfive (what sunpy downloads with) probes, then fetches files in Range splits."""
    parfive = pytest.importorskip("parfive")
    reply = _request(emu, ds="hmi.M_45s[2024.06.30_17:00:00_TAI/90s]", method="url_quick", protocol="as-is")
    urls = [emu.url + d["filename"].lstrip("/") for d in reply["data"]]
    ranges: list[str] = []

    def spy(request, response):
        if request.path.startswith("/SUM") and request.headers.get("Range"):
            ranges.append(request.headers["Range"])
        return response

    emu.add_after_hook(spy)
    try:
        downloader = parfive.Downloader(max_conn=2, max_splits=3, progress=False)
        for i, url in enumerate(urls):
            downloader.enqueue_file(url, path=tmp_path, filename=f"f{i}.fits")
        results = asyncio.run(downloader.run_download())  # a loop that is closed afterwards
    finally:
        emu.router.after_hooks.remove(spy)
    assert not results.errors and len(results) == len(urls)
    assert len(ranges) >= 2 * len(urls)  # really fetched in split ranges
    for i, url in enumerate(urls):
        assert (tmp_path / f"f{i}.fits").read_bytes() == urllib.request.urlopen(url).read()
