"""A hostile JSOC: a loopback proxy in front of the emulator that rewrites chosen replies.

The emulator's fault switches model how real JSOC fails; this proxy models a server (or a
network in between) that lies: redirects off its host, trickles bytes, sends names that climb
out of the mirror, announces lengths it never sends, values that are not what the series says.
The mirror talks to ``proxy.url`` as if it were JSOC; every request is forwarded to the
emulator and the first matching rule rewrites its reply::

    with HostileProxy(emu.url) as proxy, Canary() as canary:
        proxy.add("op=rs_list", "redirect", canary.url + "evil", times=1)
        ...  # run the mirror against proxy.url
        assert canary.requests == []

Rules match a substring of the request's ``path?query`` (``"jsoc_info"``, ``"op=exp_status"``,
``"/SUM"``), fire ``times`` times (None: always) and then stand aside, so a test can follow a
hostile night with clean ones. Actions:

``redirect``  answer 302 with ``Location: arg`` (``arg`` may be a callable of the request path)
``status``    answer HTTP ``arg`` with an empty JSON body
``trickle``   the real reply, one byte every ``arg`` seconds
``json``      the real reply decoded, passed through ``arg(reply, path)``, re-encoded
``body``      the real body passed through ``arg(body, path)`` (bytes in, bytes out)
``short``     the real headers, then only ``arg`` bytes of the body, then a clean close
``length``    the real body under ``Content-Length: arg``, then a clean close
``hang``      headers, then nothing for ``arg`` seconds
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import urlsplit

ACTIONS = ("redirect", "status", "trickle", "json", "body", "short", "length", "hang")
_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


@dataclass
class Rule:
    match: str
    action: str
    arg: Any = None
    times: int | None = None
    fired: int = 0

    def wants(self, target: str) -> bool:
        return self.match in target and (self.times is None or self.fired < self.times)


@dataclass
class Upstream:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    announced: int | None = None  # the upstream's Content-Length when it sent less (a fault of its own)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False


class _Background:
    """A ThreadingHTTPServer on a background thread, as a context manager with ``url``."""

    host = "127.0.0.1"

    def __init__(self) -> None:
        self._server: _Server | None = None

    def handler(self):  # pragma: no cover - overridden
        raise NotImplementedError

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/"

    def __enter__(self):
        self._server = _Server((self.host, 0), self.handler())
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()


class HostileProxy(_Background):
    """Forwards to ``upstream`` (the emulator's URL) and applies the first matching rule."""

    def __init__(self, upstream: str) -> None:
        super().__init__()
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port)
        self.rules: list[Rule] = []
        self.requests: list[str] = []
        self._lock = threading.Lock()

    def add(self, match: str, action: str, arg: Any = None, times: int | None = None) -> Rule:
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r} (accepted: {', '.join(ACTIONS)})")
        rule = Rule(match, action, arg, times)
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()

    def _rule_for(self, target: str) -> Rule | None:
        with self._lock:
            self.requests.append(target)
            for rule in self.rules:
                if rule.wants(target):
                    rule.fired += 1
                    return rule
        return None

    def forward(self, method: str, target: str, headers, body: bytes | None) -> Upstream:
        connection = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            sent = {k: v for k, v in headers.items() if k.lower() not in _HOP_HEADERS}
            connection.request(method, target, body=body, headers=sent)
            reply = connection.getresponse()
            announced = None
            try:
                data = reply.read()
            except http.client.IncompleteRead as exc:  # the emulator's truncate_body: passed on as it came
                data, announced = exc.partial, len(exc.partial) + (exc.expected or 0)
            kept = [(k, v) for k, v in reply.getheaders() if k.lower() not in _HOP_HEADERS]
            return Upstream(reply.status, kept, data, announced)
        finally:
            connection.close()

    def handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                self._serve(None)

            def do_HEAD(self) -> None:
                self._serve(None)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self._serve(self.rfile.read(length))

            def _serve(self, body: bytes | None) -> None:
                target = self.path
                if body:
                    target += ("&" if "?" in target else "?") + body.decode("latin-1")
                rule = proxy._rule_for(target)
                try:
                    if rule is not None and rule.action in ("redirect", "status"):
                        return self._refuse(rule, target)
                    upstream = proxy.forward(self.command, self.path, self.headers, body)
                    self._answer(rule, upstream, target)
                except (BrokenPipeError, ConnectionResetError, socket.timeout):
                    pass

            def _refuse(self, rule: Rule, target: str) -> None:
                if rule.action == "redirect":
                    where = rule.arg(target) if callable(rule.arg) else rule.arg
                    self.send_response(302)
                    self.send_header("Location", where)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self._head(int(rule.arg), [("Content-Type", "application/json")], 2)
                self.wfile.write(b"{}")

            def _head(self, status: int, headers, length: int) -> None:
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(length))
                self.send_header("Connection", "close")
                self.end_headers()

            def _answer(self, rule: Rule | None, up: Upstream, target: str) -> None:
                data = up.body
                if rule is not None and rule.action == "json":
                    data = json.dumps(rule.arg(json.loads(data), target)).encode()
                elif rule is not None and rule.action == "body":
                    data = rule.arg(data, target)
                action = rule.action if rule is not None else None
                announced = int(rule.arg) if action == "length" else len(data)
                if action is None and up.announced is not None:
                    announced = up.announced
                self._head(up.status, up.headers, announced)
                if self.command == "HEAD":
                    return
                if action == "trickle":
                    for i in range(len(data)):
                        self.wfile.write(data[i:i + 1])
                        self.wfile.flush()
                        time.sleep(float(rule.arg))
                elif action == "short":
                    self.wfile.write(data[: int(rule.arg)])
                elif action == "hang":
                    self.wfile.flush()
                    time.sleep(float(rule.arg))
                else:
                    self.wfile.write(data)
                self.close_connection = True

        return Handler


class Canary(_Background):
    """A listener on 127.0.0.2 that records every request: nothing should ever reach it."""

    host = "127.0.0.2"

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[str] = []

    def handler(self):
        canary = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                canary.requests.append(self.path)
                body = b"SIMPLE  =                    T" + b" " * 50 + b'{"status":0}'
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET
            do_HEAD = do_GET

        return Handler


def rewrite(fn: Callable[[dict], None]) -> Callable[[dict, str], dict]:
    """A ``json`` action from a function that edits the reply in place."""

    def apply(reply: dict, path: str) -> dict:
        fn(reply)
        return reply

    return apply
