"""Real JSOC replies (recorded in 2020, ../shared/fixtures/protocol) through the mirror's own parsers.

A loopback server replays each recorded body for its recorded request, as JSOC sent it (chunked,
``Connection: close``, no Content-Length), and the tests assert what the mirror makes of it: the
definition from series_struct, typed rows from rs_list, checked export answers and the file tasks
they become. Skipped where the fixtures are absent.
"""

from __future__ import annotations

import csv
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import pytest

from jsocmirror.catalog import Catalog
from jsocmirror.jsoc import ExportClient, JsocClient, rs_list_arrays
from jsocmirror.series import builtin_series
from jsocmirror.stage import Governor, StageResult, check_export_reply
from jsocmirror.sync import check_reply_shape, struct_definition


def _identity(program: str, params: dict) -> tuple:
    """What makes a recorded request the same request: program, op, and its ds or request id."""
    ds = params.get("ds") or params.get("requestid") or params.get("address") or ""
    return program, params.get("op", ""), params.get("method", ""), ds.lower()


class Replay:
    """A loopback server answering each recorded request with its recorded body."""

    def __init__(self, folder):
        self.bodies: dict[tuple, bytes] = {}
        self.files: dict[str, tuple[str, dict]] = {}  # fixture file -> (program, params) as recorded
        with open(folder / "sunpyvcr2020_interactions.tsv", newline="") as index:
            for row in csv.DictReader(index, delimiter="\t"):
                uri = urlsplit(row["request_uri"])
                program = uri.path.rsplit("/", 1)[-1]
                params = dict(parse_qsl(uri.query))
                self.files[row["file"]] = (program, params)
                self.bodies.setdefault(_identity(program, params), (folder / row["file"]).read_bytes())
        replay = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                uri = urlsplit(self.path)
                body = replay.bodies.get(_identity(uri.path.rsplit("/", 1)[-1], dict(parse_qsl(uri.query))))
                if body is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)  # as JSOC's Apache sent them: chunked, then close
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.send_header("Connection", "close")
                self.end_headers()
                for i in range(0, len(body), 4096):
                    part = body[i:i + 4096]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                self.wfile.write(b"0\r\n\r\n")
                self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def recorded(self, kind: str) -> list[tuple[str, str, dict]]:
        """(file, program, params) of the recordings whose file name holds ``kind``."""
        return [(f, *self.files[f]) for f in sorted(self.files) if kind in f]


@pytest.fixture(scope="module")
def replay(request):
    from conftest import SHARED_FIXTURES

    folder = SHARED_FIXTURES / "protocol"
    if not (folder / "sunpyvcr2020_interactions.tsv").is_file():
        pytest.skip(f"recorded JSOC replies not found at {folder}")
    server = Replay(folder)
    yield server
    server.server.shutdown()
    server.server.server_close()


def client(replay) -> JsocClient:
    return JsocClient(replay.url)


def test_every_recorded_series_struct_becomes_its_series_definition(replay):
    shipped = builtin_series()
    recordings = replay.recorded("series_struct")
    assert len(recordings) == 5
    for name, program, params in recordings:
        struct = client(replay).series_struct(params["ds"])
        sdef, _, digest = struct_definition(struct, params["ds"])
        assert sdef.primekeys and all(sdef.keyword(k) is not None for k in sdef.primekeys), name
        ours = shipped.get(params["ds"])
        if ours is not None:  # what the mirror ships agrees with what JSOC said
            assert [k.lower() for k in sdef.primekeys] == [k.lower() for k in ours.primekeys], name
            assert [s.name for s in sdef.segments] == [s.name for s in ours.segments], name
        assert len(digest) == 16


def test_every_recorded_rs_list_passes_the_shape_checks_and_its_times_parse(replay):
    recordings = replay.recorded("rs_list")
    assert len(recordings) == 7
    for name, program, params in recordings:
        body = client(replay).get_bytes(program, params)
        columns, count = rs_list_arrays(body, params["ds"])
        check_reply_shape(params["ds"].split("[")[0], columns, count, body)  # raises if it would refuse
        assert all(len(values) == count for values in columns.values()), name
        times = columns.get("T_REC")
        if times is not None:
            assert all(str(t).endswith(("_TAI", "Z")) for t in times.to_pylist()), name


def test_a_recorded_key_all_reply_lists_every_keyword_the_shipped_definition_has(replay):
    """The shipped aia.lev1_euv_12s definition's keywords are JSOC's own **ALL** list."""
    (name, program, params), = replay.recorded("keyALL")
    sdef = builtin_series().get("aia.lev1_euv_12s")
    body = client(replay).get_bytes(program, params)
    columns, count = rs_list_arrays(body, params["ds"])
    assert count > 0 and columns["WAVELNTH"].to_pylist()[0] == "304"
    assert {kw.name for kw in sdef.visible_keywords} <= set(columns)


def test_the_recorded_url_quick_answer_becomes_one_sums_download(replay, tmp_path):
    (name, program, params), = replay.recorded("url_quick_as-is__status0")
    api = ExportClient(client(replay))
    reply = api.exp_request(params["ds"], method="url_quick", protocol="as-is", email="x@example.org",
                            filenamefmt=None)
    sdef = builtin_series().get("hmi.M_45s")
    assert check_export_reply(reply, sdef) is None
    batch = _batch(tmp_path, api, reply, "hmi.M_45s", {"[2012.01.01_01:01:30_TAI][2]": ["magnetogram"]})
    assert [(t.record_key, t.segment, t.url) for t in batch.tasks] == [
        ("[2012.01.01_01:01:30_TAI][2]", "magnetogram", replay.url + "SUM41/D280342572/S00010/magnetogram.fits")]


@pytest.mark.parametrize("requestid, series, files", [
    ("JSOC_20200410_003", "hmi.M_45s", 1),
    ("JSOC_20200410_166", "aia.lev1_euv_12s", 302),
    ("JSOC_20200410_212", "aia.lev1_euv_12s", 302),
])
def test_each_recorded_finished_export_becomes_a_task_per_file(replay, tmp_path, requestid, series, files):
    api = ExportClient(client(replay))
    reply = api.exp_status(requestid)
    sdef = builtin_series().get(series)
    assert int(reply["status"]) == 0 and check_export_reply(reply, sdef) is None
    wanted: dict[str, list[str]] = {}
    for item in reply["data"]:
        key = item["record"][item["record"].index("["):]
        wanted[key] = [s.name for s in sdef.segments]
    batch = _batch(tmp_path, api, reply, series, wanted)
    assert len(batch.tasks) == files == len(reply["data"])
    folder = reply["dir"].strip("/")
    assert {t.url for t in batch.tasks} == {f"{replay.url}{folder}/{i['filename']}" for i in reply["data"]}
    assert {(t.record_key, t.segment) for t in batch.tasks} == {(k, s) for k, segs in wanted.items() for s in segs}


def _batch(tmp_path, api, reply, series, wanted: dict[str, list[str]]):
    with Catalog(tmp_path / "c.duckdb") as catalog:
        governor = Governor(catalog, api, builtin_series(), lambda d, key, seg: f"{d.name}/{key}/{seg}.fits",
                            email="x@example.org")
        row = {"id": 1, "series": series, "requestid": reply.get("requestid") or ""}
        items = {(series, key, seg) for key, segs in wanted.items() for seg in segs}
        return governor._batch(row, json.loads(json.dumps(reply)), items, StageResult())
