"""Fault switches of the emulator: each one really happens over real HTTP (jsocmirror.emulator.faults)."""

from __future__ import annotations

import http.client
import io
import json
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings

import pytest
from astropy.io import fits

from jsocmirror.emulator import Emulator
from jsocmirror.emulator.faults import SWITCHES, Faults

from _http import error_code

EMAIL = "faults@example.com"


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    with Emulator(state_dir=tmp_path_factory.mktemp("emu"), seed=0) as emulator:
        emulator.exports.config.set_mode("lenient")
        yield emulator


@pytest.fixture(autouse=True)
def _clean(emu):
    emu.faults.clear()
    emu.faults.counts.clear()
    yield
    emu.faults.clear()


def _get(url: str, headers: dict | None = None, timeout: float = 10):
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=timeout)


def _status_url(emu, requestid="JSOC_20240701_999"):
    return emu.url + f"cgi-bin/ajax/jsoc_fetch?op=exp_status&requestid={requestid}"


def _quick_files(emu, n=3):
    """SUMS paths of a few records, via a url_quick/as-is export."""
    ds = "hmi.M_45s[2024.06.30_00:00:00_TAI/%ds]" % (45 * n)
    url = emu.url + "cgi-bin/ajax/jsoc_fetch?" + urllib.parse.urlencode(
        {"op": "exp_request", "ds": ds, "notify": EMAIL, "method": "url_quick", "protocol": "as-is",
         "format": "json", "process=n": "0"})
    reply = json.loads(_get(url).read())
    assert reply["status"] == 0, reply
    return [d["filename"] for d in reply["data"]]


# -- switching -----------------------------------------------------------------------------------
def test_faults_set_parses_and_rejects_bad_values():
    faults = Faults()
    faults.parse("http_503=0.25")
    faults.set("endpoints", "jsoc_fetch,files")
    assert faults.http_503 == 0.25 and faults.active() == {"http_503": 0.25, "endpoints": "jsoc_fetch,files"}
    with pytest.raises(ValueError, match="unknown fault 'nope'"):
        faults.set("nope", 1)
    with pytest.raises(ValueError, match="between 0 and 1"):
        faults.set("http_500", "1.5")
    with pytest.raises(ValueError, match="expected a float"):
        faults.parse("slow=fast")
    with pytest.raises(ValueError, match="NAME=VALUE"):
        faults.parse("http_500")
    faults.clear()
    assert faults.active() == {}


def test_faults_decisions_are_seeded():
    a, b = Faults(seed=7), Faults(seed=7)
    a.http_500 = b.http_500 = 0.5
    assert [a.http_error({"x"}) for _ in range(50)] == [b.http_error({"x"}) for _ in range(50)]


def test_faults_every_switch_is_documented():
    from pathlib import Path

    doc = Path(__file__).resolve().parents[1] / "docs" / "emulator.md"
    if not doc.exists():
        pytest.skip("docs/emulator.md not written yet")
    text = doc.read_text()
    assert all(f"`{name}`" in text for name in SWITCHES)


# -- HTTP errors and delays ----------------------------------------------------------------------
def test_http_500_fails_every_request_at_rate_one(emu):
    emu.faults.http_500 = 1.0
    assert error_code(_status_url(emu)) == 500
    assert emu.faults.counts["http_500"] == 1


def test_http_503_fails_a_fraction_of_requests(emu):
    emu.faults.update(http_503=0.5, seed=3)
    codes = []
    for _ in range(40):
        try:
            codes.append(_get(_status_url(emu)).status)
        except urllib.error.HTTPError as exc:
            exc.close()
            codes.append(exc.code)
            assert exc.headers["Retry-After"] == "1"
    assert 5 <= codes.count(503) <= 35 and codes.count(200) == 40 - codes.count(503)


def test_http_errors_only_hit_named_endpoints(emu):
    emu.faults.update(http_503=1.0, endpoints="jsoc_info")
    assert json.loads(_get(_status_url(emu)).read())["status"] == 4  # jsoc_fetch untouched
    assert error_code(emu.url + "cgi-bin/ajax/jsoc_info?op=series_struct&ds=hmi.m_45s") == 503
    emu.faults.endpoints = "exp_status"  # an op name scopes to that jsoc_fetch operation
    assert error_code(_status_url(emu)) == 503


def test_slow_delays_answers(emu):
    emu.faults.slow = 0.3
    start = time.perf_counter()
    _get(_status_url(emu)).read()
    assert time.perf_counter() - start >= 0.3


# -- file faults ---------------------------------------------------------------------------------
def test_missing_files_answer_404(emu):
    paths = _quick_files(emu)
    emu.faults.missing_files = 1.0
    for path in paths:
        assert error_code(emu.url + path.lstrip("/")) == 404
    emu.faults.missing_files = 0.0
    assert _get(emu.url + paths[0].lstrip("/")).status == 200


def test_mark_missing_names_one_record(emu):
    paths = _quick_files(emu, 2)
    recnum = int(json.loads(_get(emu.url + "cgi-bin/ajax/jsoc_info?" + urllib.parse.urlencode(
        {"op": "rs_list", "ds": "hmi.M_45s[2024.06.30_00:00:00_TAI]", "key": "*recnum*"})).read())
                 ["keywords"][0]["values"][0])
    emu.faults.mark_missing("hmi.M_45s", recnum)
    assert error_code(emu.url + paths[0].lstrip("/")) == 404
    assert _get(emu.url + paths[1].lstrip("/")).status == 200


def test_corrupt_files_keep_size_and_fail_checksum(emu):
    path = _quick_files(emu, 1)[0]
    good = _get(emu.url + path.lstrip("/")).read()
    emu.faults.corrupt_files = 1.0
    bad = _get(emu.url + path.lstrip("/")).read()
    assert len(bad) == len(good) and bad != good
    assert _get(emu.url + path.lstrip("/")).read() == bad  # the same file stays corrupt the same way
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with fits.open(io.BytesIO(bad), checksum=True) as hdul:
            hdul[1].data
    assert any("verification failed" in str(w.message) for w in caught)


def test_reset_mid_body_resets_the_connection(emu):
    path = _quick_files(emu, 1)[0]
    emu.faults.reset_mid_body = 1.0
    with pytest.raises((ConnectionResetError, http.client.IncompleteRead)):
        _get(emu.url + path.lstrip("/")).read()
    assert emu.faults.counts["reset_mid_body"] == 1


def test_truncate_body_stops_short_of_content_length(emu):
    path = _quick_files(emu, 1)[0]
    emu.faults.truncate_body = 1.0
    with pytest.raises(http.client.IncompleteRead) as err:
        _get(emu.url + path.lstrip("/")).read()
    assert len(err.value.partial) > 0 and err.value.expected > 0


def test_wrong_length_announces_fewer_bytes_than_the_file(emu):
    path = _quick_files(emu, 1)[0]
    full = _get(emu.url + path.lstrip("/")).read()
    emu.faults.wrong_length = 1.0
    response = _get(emu.url + path.lstrip("/"))
    body = response.read()
    assert int(response.headers["Content-Length"]) == len(body) < len(full)  # a silent short file


def test_head_requests_are_not_broken_by_body_faults(emu):
    path = _quick_files(emu, 1)[0]
    emu.faults.reset_mid_body = 1.0
    response = urllib.request.urlopen(urllib.request.Request(emu.url + path.lstrip("/"), method="HEAD"))
    assert int(response.headers["Content-Length"]) > 2880


# -- export faults -------------------------------------------------------------------------------
def _exp_request(emu, ds, method="url", protocol="fits", notify=EMAIL):
    url = emu.url + "cgi-bin/ajax/jsoc_fetch?" + urllib.parse.urlencode(
        {"op": "exp_request", "ds": ds, "notify": notify, "method": method, "protocol": protocol,
         "format": "json", "process=n": "0", "requester": "faults"})
    return json.loads(_get(url).read())


def test_status7_storm_refuses_exports(emu):
    emu.faults.status7 = 1.0
    reply = _exp_request(emu, "hmi.M_45s[2024.06.29_00:00:00_TAI]")
    assert reply["status"] == 7 and EMAIL in reply["error"]


def test_stuck_export_never_finishes(emu):
    emu.faults.stuck_exports = 1.0
    reply = _exp_request(emu, "hmi.M_45s[2024.06.29_00:01:30_TAI]")
    assert reply["status"] == 2
    time.sleep(emu.exports.config.timing.base + 0.3)
    status = json.loads(_get(_status_url(emu, reply["requestid"])).read())
    assert status["status"] == 1 and status["requestid"] == reply["requestid"]


def test_cli_serve_fault_option_turns_a_switch_on():
    import subprocess
    import sys

    args = [sys.executable, "-m", "jsocmirror", "emulator", "serve", "--fault", "http_503=1",
            "--fault", "endpoints=exp_status", "--mode", "lenient"]
    with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as proc:
        try:
            url = proc.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:")
            assert error_code(url + "cgi-bin/ajax/jsoc_fetch?op=exp_status&requestid=JSOC_20240701_001") == 503
            assert _get(url + "cgi-bin/ajax/jsoc_info?op=series_struct&ds=hmi.m_45s").status == 200
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def test_cli_serve_rejects_an_unknown_fault():
    from click.testing import CliRunner

    from jsocmirror.cli import cli

    result = CliRunner().invoke(cli, ["emulator", "serve", "--fault", "nope=1"])
    assert result.exit_code == 2 and "unknown fault 'nope'" in result.output


def test_cli_serve_cache_mb_sizes_the_file_cache_and_rejects_a_negative_size():
    from click.testing import CliRunner

    from jsocmirror.cli import cli
    from jsocmirror.cli.emulator import _configure_exports
    from jsocmirror.emulator import Emulator

    emu = Emulator(seed=0)  # not started: only its configuration is used
    _configure_exports(emu, "strict", "quick", None, (), cache_mb=1024)
    assert emu.exports.cache.max_bytes == emu.exports.config.cache_bytes == 1024 << 20
    result = CliRunner().invoke(cli, ["emulator", "serve", "--cache-mb", "-1"])
    assert result.exit_code == 2 and "--cache-mb" in result.output and "-1" in result.output


def test_body_faults_hit_url_tar_downloads_too(emu):
    reply = _exp_request(emu, "hmi.M_45s[2024.06.29_02:00:00_TAI/90s]", method="url-tar")
    deadline = time.monotonic() + 10
    while True:
        status = json.loads(_get(_status_url(emu, reply["requestid"])).read())
        if status["status"] != 1 or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    url = emu.url + status["tarfile"].lstrip("/")
    whole = _get(url).read()
    emu.faults.truncate_body = 1.0
    with pytest.raises(http.client.IncompleteRead) as err:
        _get(url).read()
    assert len(err.value.partial) < len(whole)
