"""The network policy (jsocmirror/net.py) against a lying JSOC: the hostile proxy in front of the
emulator, and a canary on 127.0.0.2 that nothing may ever reach."""

import time

import pytest

from jsocmirror import download as dl
from jsocmirror import net
from jsocmirror.errors import ConfigError, JsocError, SourceUnavailable
from jsocmirror.jsoc import ExportClient, JsocClient
from tests.hostile import Canary, HostileProxy

M45 = "hmi.M_45s[2024.06.30_00:00:00_TAI]"
QUICK = net.NetPolicy(connect_timeout=2, idle_timeout=2, metadata_seconds=2, poll_seconds=2,
                      file_seconds=2, file_min_rate=10**9)


@pytest.fixture
def hostile(emu):
    with HostileProxy(emu.url) as proxy, Canary() as canary:
        yield proxy, canary


def client(proxy, **kw) -> JsocClient:
    return JsocClient(proxy.url, policy=kw.pop("policy", QUICK), retries=kw.pop("retries", 0), **kw)


def sums_url(proxy) -> str:
    reply = ExportClient(client(proxy)).rs_list_paths(M45, keys=["T_REC"], segments=["magnetogram"])
    return proxy.url + reply["segments"][0]["values"][0].lstrip("/")


@pytest.mark.parametrize("where", ["evil-host", "ftp", "https-downgrade-port"])
def test_metadata_redirect_off_the_host_is_refused_naming_the_target(hostile, where):
    proxy, canary = hostile
    target = {"evil-host": canary.url + "cgi-bin/ajax/jsoc_info?evil=1", "ftp": "ftp://127.0.0.1/evil",
              "https-downgrade-port": proxy.url.replace(str(proxy._server.server_address[1]), "1") + "x"}[where]
    proxy.add("series_struct", "redirect", target)
    with pytest.raises(JsocError) as err:
        client(proxy).series_struct("hmi.M_45s")
    message = str(err.value)
    assert "refusing the redirect" in message and target in message and "\n" not in message
    assert canary.requests == []


def test_redirect_within_the_host_is_followed(hostile):
    proxy, canary = hostile
    proxy.add("series_struct", "redirect", lambda path: proxy.url.rstrip("/") + path, times=1)
    assert client(proxy).series_struct("hmi.M_45s")["status"] == 0
    assert len([r for r in proxy.requests if "series_struct" in r]) == 2


def test_a_redirect_loop_stops_after_max_redirects(hostile):
    proxy, _ = hostile
    proxy.add("series_struct", "redirect", lambda path: proxy.url.rstrip("/") + path)
    with pytest.raises(JsocError, match="more than 3 redirects"):
        client(proxy).series_struct("hmi.M_45s")
    assert len(proxy.requests) == 4


def test_a_trickling_reply_is_cut_at_the_metadata_deadline(hostile):
    proxy, _ = hostile
    proxy.add("rs_list", "trickle", 0.05)
    started = time.monotonic()
    with pytest.raises(SourceUnavailable, match="no complete reply within 2 s"):
        client(proxy).rs_list(M45, ["T_REC"])
    assert time.monotonic() - started < 4


def test_a_silent_server_is_cut_at_the_idle_timeout(hostile):
    proxy, _ = hostile
    proxy.add("rs_list", "hang", 30)
    policy = net.NetPolicy(idle_timeout=1, metadata_seconds=20)
    started = time.monotonic()
    with pytest.raises(SourceUnavailable):
        client(proxy, policy=policy).rs_list(M45, ["T_REC"])
    assert time.monotonic() - started < 3


def test_a_short_reply_is_retried_then_reported_in_one_line(hostile):
    proxy, _ = hostile
    proxy.add("rs_list", "short", 10, times=1)
    assert client(proxy, retries=1).rs_list(M45, ["T_REC"])["count"] == 1  # the retry got it whole
    proxy.add("rs_list", "short", 10)
    with pytest.raises(SourceUnavailable) as err:
        client(proxy).rs_list(M45, ["T_REC"])
    assert "ended after 10 of" in str(err.value) and "\n" not in str(err.value)


def test_an_absurd_announced_length_is_refused_without_reading_it(hostile):
    proxy, _ = hostile
    proxy.add("rs_list", "length", 10**13)
    with pytest.raises(JsocError, match="announced 10000000000000 bytes"):
        client(proxy).rs_list(M45, ["T_REC"])


def test_export_calls_refuse_redirects_too(hostile):
    proxy, canary = hostile
    proxy.add("op=exp_request", "redirect", canary.url + "evil-exp")
    proxy.add("op=exp_status", "redirect", canary.url + "evil-status")
    exports = ExportClient(client(proxy))
    with pytest.raises(JsocError, match="refusing the redirect"):
        exports.exp_request(M45, method="url", protocol="fits", email="x@example.com", filenamefmt=None)
    with pytest.raises(JsocError, match="refusing the redirect"):
        exports.exp_status("JSOC_20240701_000")
    assert canary.requests == []
    assert sum("exp_request" in r for r in proxy.requests) == 1  # never retried: it may exist at JSOC


def test_export_calls_send_what_drms_sends(hostile):
    proxy, _ = hostile
    reply = ExportClient(client(proxy)).exp_request(M45, method="url_quick", protocol="fits",
                                                    email="x@example.com", filenamefmt=None)
    assert reply["status"] in (0, 1, 2)
    sent = [r for r in proxy.requests if "exp_request" in r][0]
    for part in ("method=url&", "protocol=fits", "notify=x%40example.com", "process%3Dn=0", "requester=x",
                 "format=json"):
        assert part in sent


def _task(url: str) -> dl.FileTask:
    return dl.FileTask(url=url, dest="hmi.M_45s/x.fits", series="hmi.M_45s", record_key="k", segment="magnetogram")


def test_a_data_file_redirected_off_the_host_fails_without_fetching(hostile, tmp_path):
    proxy, canary = hostile
    url = sums_url(proxy)
    proxy.add("/SUM", "redirect", canary.url + "evil.fits")
    policy = dl.RetryPolicy(attempts=3, backoff=0.01, net=QUICK)
    results = dl.download_files([_task(url)], tmp_path, policy=policy)
    assert not results.landed and len(results.errors) == 1
    assert "refusing the redirect" in results.errors[0].error and canary.requests == []
    assert results.errors[0].attempts == 1  # not retried: asking again cannot help
    assert list(tmp_path.rglob("*.fits")) == []


def test_a_trickling_data_file_is_cut_and_retried(hostile, tmp_path):
    proxy, _ = hostile
    url = sums_url(proxy)
    proxy.add("/SUM", "trickle", 0.01, times=1)
    policy = dl.RetryPolicy(attempts=2, backoff=0.01, net=net.NetPolicy(file_seconds=1, file_min_rate=10**9))
    started = time.monotonic()
    results = dl.download_files([_task(url)], tmp_path, policy=policy)
    assert [item.path for item in results.landed] == ["hmi.M_45s/x.fits"], results.errors
    assert time.monotonic() - started < 5
    whole = (tmp_path / "hmi.M_45s/x.fits").read_bytes()
    assert len(whole) % 2880 == 0 and whole.startswith(b"SIMPLE")


def test_a_data_file_deadline_grows_with_its_size():
    policy = net.NetPolicy(file_seconds=10, file_min_rate=1000)
    assert policy.file_deadline(None) == 10 and policy.file_deadline(5000) == 15


def test_garbage_proxy_variable_is_a_config_error(hostile, monkeypatch):
    proxy, _ = hostile
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.setenv("http_proxy", "http://bad host:::")
    with pytest.raises(ConfigError) as err:
        client(proxy).series_struct("hmi.M_45s")
    assert "http_proxy='http://bad host:::'" in str(err.value) and err.value.exit_code == 2


def test_a_refusing_proxy_is_named_as_the_proxys_fault(hostile, monkeypatch):
    proxy, _ = hostile
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # discard port: nothing listens
    with pytest.raises(SourceUnavailable) as err:
        client(proxy).series_struct("hmi.M_45s")
    assert "the proxy http://127.0.0.1:9 (from the environment) failed" in str(err.value)


@pytest.mark.parametrize("value, seconds", [("5", 5.0), ("100000", 60.0), ("-3", 0.0), ("soon", None),
                                            ("nan", None), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)])
def test_retry_after_is_capped(value, seconds):
    assert net._retry_after(value, net.DEFAULT_POLICY) == seconds


def test_the_user_agent_names_the_version_and_the_url_pyproject_names():
    import tomllib
    from pathlib import Path

    import jsocmirror
    from jsocmirror.net import USER_AGENT

    project = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())["project"]
    assert USER_AGENT == f"jsocmirror/{jsocmirror.__version__} (+{project['urls']['Homepage']})"
