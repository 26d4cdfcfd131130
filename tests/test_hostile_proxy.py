"""The hostile proxy itself does what the reliability tests rely on (tests/hostile.py)."""

import json
import time
import urllib.request
import http.client

from tests.hostile import Canary, HostileProxy, rewrite


def _get(url: str, timeout: float = 10):
    with urllib.request.urlopen(url, timeout=timeout) as reply:
        return reply.status, reply.read()


def test_forwards_untouched_when_no_rule_matches(emu):
    info = "cgi-bin/ajax/jsoc_info?op=series_struct&ds=hmi.M_45s"
    with HostileProxy(emu.url) as proxy:
        through, direct = json.loads(_get(proxy.url + info)[1]), json.loads(_get(emu.url + info)[1])
        through.pop("runtime"), direct.pop("runtime")  # JSOC's own timing of the request
        assert through == direct
        assert proxy.requests == ["/" + info]


def test_rules_fire_their_times_then_stand_aside(emu):
    info = "cgi-bin/ajax/jsoc_info?op=series_struct&ds=hmi.M_45s"
    with HostileProxy(emu.url) as proxy:
        proxy.add("series_struct", "json", rewrite(lambda r: r.update(status=99)), times=1)
        assert json.loads(_get(proxy.url + info)[1])["status"] == 99
        assert json.loads(_get(proxy.url + info)[1])["status"] == 0


def test_redirect_reaches_the_canary_when_followed(emu):
    with HostileProxy(emu.url) as proxy, Canary() as canary:
        proxy.add("evil", "redirect", canary.url + "caught")
        assert _get(proxy.url + "evil")[0] == 200  # urllib's default follows it off the host
        assert canary.requests == ["/caught"]


def test_short_and_length_lie_about_the_body(emu):
    info = "/cgi-bin/ajax/jsoc_info?op=series_struct&ds=hmi.M_45s"
    with HostileProxy(emu.url) as proxy:
        proxy.add("series_struct", "short", 10, times=1)
        proxy.add("series_struct", "length", 10**13, times=1)
        for _ in range(2):
            host, port = proxy.url[7:-1].split(":")
            conn = http.client.HTTPConnection(host, int(port), timeout=10)
            conn.request("GET", info)
            reply = conn.getresponse()
            announced, got = int(reply.getheader("Content-Length")), 0
            while chunk := reply.read(1 << 16):  # read() would allocate the announced 10 TB
                got += len(chunk)
            # read(amt) does not raise IncompleteRead at a clean close: a client must count
            assert 0 < got < announced
            conn.close()


def test_trickle_sends_one_byte_at_a_time(emu):
    with HostileProxy(emu.url) as proxy:
        proxy.add("checkAddress", "trickle", 0.05)
        started = time.monotonic()
        # each byte arrives well within the socket timeout: only a total deadline stops a trickle
        status, body = _get(proxy.url + "cgi-bin/ajax/checkAddress.sh?address=x&checkonly=1", timeout=0.5)
        assert status == 200 and json.loads(body)["status"] is not None
        assert time.monotonic() - started >= 0.05 * (len(body) - 1)
