"""The emulator's HTTP server: a threaded loopback server with a routing table.

Everything the emulator answers goes through one routing table. A *handler* is a callable

    handler(request: Request) -> Response

registered under an exact path (``emu.route("/cgi-bin/ajax/jsoc_info", handler)``) or under a
path prefix (``emu.route_prefix("/SUM", handler)``; the longest matching prefix wins). Handlers
never raise for bad input: they answer what JSOC answers (HTTP 200 with the error inside the
JSON). An exception that escapes a handler is logged and answered like JSOC's own crash page
would be for the CGI (HTTP 200, ``{"status":1,"error":...}``) for ``/cgi-bin/`` paths, or a plain
500 elsewhere, so a bug never hangs a client.

Hooks (for fault injection):

* ``emu.add_before_hook(hook)``: ``hook(request) -> Response | None``; a Response short-circuits
  routing (a 503, a delay then the normal answer, ``Response(abort=True)`` to drop the connection).
* ``emu.add_after_hook(hook)``: ``hook(request, response) -> Response``; may rewrite the answer
  (truncate the body, change Content-Length, ...).

Requests in absolute form (``GET http://jsoc.stanford.edu/cgi-bin/ajax/jsoc_info?...``, what a
client sends through ``HTTP_PROXY``) are routed on their path, so the emulator works as a proxy
for the real host name. HTTP/1.0 replies (one request per connection) avoid the Nagle/delayed-ACK
stall of http.server's keep-alive mode.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
import traceback
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import parse_qsl, urlsplit

import orjson

log = logging.getLogger("jsocmirror.emulator.server")


@dataclass
class Request:
    """One HTTP request, decoded once for every handler."""

    method: str
    path: str  # URL path only, percent-decoding left to the handler (JSOC paths never need it)
    query: str  # raw query string (checkAddress.sh needs the double-encoded form)
    params: dict[str, str]  # form-decoded query; a repeated name keeps its last value, like DRMS
    headers: Any  # email.message.Message-like, case-insensitive .get()
    client: tuple[str, int]
    emulator: Any = None  # the Emulator serving this request (world, config, faults)

    def param(self, name: str, default: str | None = None) -> str | None:
        return self.params.get(name, default)


@dataclass
class Response:
    """What a handler answers. ``body`` is bytes or an iterable of byte chunks (streamed)."""

    body: bytes | Iterable[bytes] = b""
    status: int = 200
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    length: int | None = None  # Content-Length for a streamed body (bytes bodies set it themselves)
    abort: bool = False  # drop the connection without answering (fault injection)
    cut_after: int | None = None  # stop the body after this many bytes, then close (fault injection)
    reset: bool = False  # with cut_after: reset the connection (RST) instead of closing it cleanly

    @property
    def is_streamed(self) -> bool:
        return not isinstance(self.body, (bytes, bytearray, memoryview))


Handler = Callable[[Request], Response]
BeforeHook = Callable[[Request], "Response | None"]
AfterHook = Callable[[Request, Response], Response]


def json_response(obj: Any) -> Response:
    """HTTP 200 application/json, the way every JSOC CGI answers (errors included)."""
    return Response(body=orjson.dumps(obj) + b"\n")


def text_response(text: str, status: int = 200, content_type: str = "text/html; charset=utf-8") -> Response:
    return Response(body=text.encode("utf-8"), status=status, content_type=content_type)


class Router:
    """Exact routes plus prefix routes; the longest prefix wins."""

    def __init__(self) -> None:
        self.exact: dict[str, Handler] = {}
        self.prefixes: dict[str, Handler] = {}
        self.before_hooks: list[BeforeHook] = []
        self.after_hooks: list[AfterHook] = []

    def route(self, path: str, handler: Handler) -> None:
        self.exact[path] = handler

    def route_prefix(self, prefix: str, handler: Handler) -> None:
        self.prefixes[prefix] = handler

    def resolve(self, path: str) -> Handler | None:
        handler = self.exact.get(path)
        if handler is not None:
            return handler
        best = None
        for prefix in self.prefixes:
            if path.startswith(prefix) and (best is None or len(prefix) > len(best)):
                best = prefix
        return self.prefixes[best] if best is not None else None

    def dispatch(self, request: Request) -> Response:
        for hook in self.before_hooks:
            early = hook(request)
            if early is not None:
                return early
        handler = self.resolve(request.path)
        if handler is None:
            response = not_found(request)
        else:
            try:
                response = handler(request)
            except Exception as exc:  # a bug must not hang or crash the client: answer like JSOC
                log.error("emulator handler for %s failed:\n%s", request.path, traceback.format_exc())
                if request.path.startswith("/cgi-bin/"):
                    response = json_response({"status": 1, "error": f"internal emulator error: {exc}"})
                else:
                    response = text_response("Internal Server Error\n", status=500, content_type="text/plain")
        for hook in self.after_hooks:
            response = hook(request, response)
        return response


def not_found(request: Request) -> Response:
    body = (
        "<!DOCTYPE HTML PUBLIC \"-//IETF//DTD HTML 2.0//EN\">\n<html><head>\n<title>404 Not Found</title>\n"
        f"</head><body>\n<h1>Not Found</h1>\n<p>The requested URL {request.path} was not found on this server.</p>\n"
        "</body></html>\n"
    )
    return text_response(body, status=404, content_type="text/html; charset=iso-8859-1")


def root_page(request: Request) -> Response:
    return text_response(
        "<html><head><title>JSOC emulator</title></head><body><h1>JSOC emulator (jsocmirror)</h1>"
        "<p>CGI endpoints under /cgi-bin/ajax/: jsoc_info, show_series, showextseries, checkAddress.sh"
        "</p></body></html>\n"
    )


def _parse_params(query: str) -> dict[str, str]:
    # latin-1 like drms; a malformed escape stays as typed instead of failing the request
    return dict(parse_qsl(query, keep_blank_values=True, encoding="latin-1", errors="replace"))


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    server_version = "Apache/2.2.3 (CentOS)"
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        try:  # small replies must not wait for delayed ACKs
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the library never prints
        log.debug("%s - %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("latin-1") if length else ""
        self._serve(head=False, form=body)

    def _serve(self, head: bool, form: str = "") -> None:
        parts = urlsplit(self.path)  # absolute-form (proxy) and origin-form alike
        query = parts.query if not form else (parts.query + "&" + form if parts.query else form)
        emulator = self.server.emulator  # type: ignore[attr-defined]
        request = Request(
            method=self.command, path=parts.path or "/", query=query, params=_parse_params(query),
            headers=self.headers, client=self.client_address, emulator=emulator,
        )
        response = emulator.router.dispatch(request)
        if response.abort:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self._write(response, head)

    def _write(self, response: Response, head: bool) -> None:
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            if not response.is_streamed:
                self.send_header("Content-Length", str(len(response.body)))  # type: ignore[arg-type]
            elif response.length is not None:
                self.send_header("Content-Length", str(response.length))
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.send_header("Connection", "close")
            self.end_headers()
            if head:
                _close_iter(response.body)
                return
            if response.cut_after is not None and not response.is_streamed:
                self._write_cut(response)
            elif response.is_streamed:
                for chunk in response.body:  # type: ignore[union-attr]
                    if chunk:
                        self.wfile.write(chunk)
            else:
                self.wfile.write(response.body)  # type: ignore[arg-type]
        except (BrokenPipeError, ConnectionResetError):
            log.debug("client went away during %s", self.path)
            _close_iter(response.body)


    def _write_cut(self, response: Response) -> None:
        """Fault injection (exports/faults): part of the body, then a clean close or a reset."""
        self.wfile.write(bytes(response.body[: response.cut_after]))  # type: ignore[index]
        self.close_connection = True
        if response.reset:  # SO_LINGER 0 makes close() send RST instead of FIN
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        else:
            self.connection.shutdown(socket.SHUT_RDWR)


def _close_iter(body: Any) -> None:
    close = getattr(body, "close", None)
    if callable(close) and not isinstance(body, (bytes, bytearray)):
        close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], emulator: Any):
        self.emulator = emulator
        super().__init__(address, _RequestHandler)


class HttpServer:
    """Runs ``_Server`` on a background thread; ``url`` is known once started."""

    def __init__(self, emulator: Any, host: str = "127.0.0.1", port: int = 0):
        self._emulator = emulator
        self._address = (host, port)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the emulator is not running (use it as a context manager or call start())")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/"

    def start(self) -> None:
        if self._server is not None:
            return
        self._server = _Server(self._address, self._emulator)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="jsoc-emulator", daemon=True)
        self._thread.start()

    def serve_forever(self) -> None:
        """Run in the calling thread (the CLI's ``serve``) until interrupted."""
        if self._server is None:
            self._server = _Server(self._address, self._emulator)
        self._server.serve_forever(poll_interval=0.2)

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None


def iter_chunks(parts: Iterable[bytes], size: int = 1 << 20) -> Iterator[bytes]:
    """Coalesce many small byte strings into ~``size`` chunks for efficient socket writes."""
    buf: list[bytes] = []
    total = 0
    for part in parts:
        buf.append(part)
        total += len(part)
        if total >= size:
            yield b"".join(buf)
            buf, total = [], 0
    if buf:
        yield b"".join(buf)


# -- the Emulator object ------------------------------------------------------------------------

#: Optional modules that plug into the server. Each defines ``install(emulator) -> None`` and
#: registers its routes/hooks there (exports: jsoc_fetch; files: /SUM... and export dirs;
#: faults: sets ``emulator.faults`` and adds hooks). A module not written yet is skipped.
PLUGIN_MODULES = ("jsocmirror.emulator.info", "jsocmirror.emulator.exports", "jsocmirror.emulator.files",
                  "jsocmirror.emulator.faults")

#: The default cap on records one rs_list/export may touch (JSOC refuses absurd requests too).
DEFAULT_MAX_RECORDS = 3_000_000


@dataclass
class EmulatorConfig:
    """Behaviour switches that are not part of the world (the world is what records exist)."""

    #: checkAddress.sh: None = every well-formed address is registered except domains ending
    #: in ``.invalid``; otherwise exactly these addresses (case-insensitive) are registered.
    registered: set[str] | None = None
    #: checkAddress.sh: addresses answered as pending (status 3), besides any whose local part
    #: contains ``+pending``.
    pending: set[str] = field(default_factory=set)
    #: rs_list/rs_summary/exports refuse record sets larger than this ("too many records").
    max_records: int = DEFAULT_MAX_RECORDS
    #: True: unknown series answer like the public wrapper (status 4 "Invalid series name.");
    #: False: like bare jsoc_info (status 1 "series not found").
    public_wrapper: bool = True


class Emulator:
    """A JSOC emulator: an HTTP server on loopback over a deterministic, changing world.

    ``with Emulator(state_dir=tmp / "emu", seed=0) as emu: emu.url`` gives
    ``http://127.0.0.1:PORT/``; the CGI base is ``emu.url + "cgi-bin/ajax/"``. ``state_dir=None``
    keeps the world's mutations in memory; with a directory they persist (JSON) and every process
    using the same directory sees the same world.
    """

    def __init__(self, state_dir: Any = None, seed: int = 0, *, host: str = "127.0.0.1", port: int = 0,
                 series_dirs: Iterable[Any] = (), registry: Any = None, config: EmulatorConfig | None = None,
                 now: float | None = None):
        import importlib

        from jsocmirror.emulator.world import World
        from jsocmirror.series import SeriesRegistry

        if registry is None:
            registry = SeriesRegistry.from_dirs(*series_dirs)
        self.registry = registry
        self.config = config or EmulatorConfig()
        self.world = World(registry, state_dir=state_dir, seed=seed, now=now)
        self.state_dir = self.world.state_dir
        self.router = Router()
        self.faults: Any = None  # set by jsocmirror.emulator.faults.install when present
        self._http = HttpServer(self, host, port)
        self.route("/", root_page)
        for name in PLUGIN_MODULES:
            try:
                module = importlib.import_module(name)
            except ModuleNotFoundError as exc:
                if exc.name != name:
                    raise
                continue
            module.install(self)

    # -- routing (what plugins call) ---------------------------------------------------------
    def route(self, path: str, handler: Handler) -> None:
        """Serve ``path`` (exact, e.g. ``/cgi-bin/ajax/jsoc_fetch``) with ``handler(request)``."""
        self.router.route(path, handler)

    def route_prefix(self, prefix: str, handler: Handler) -> None:
        """Serve every path starting with ``prefix`` (e.g. ``/SUM``); the longest prefix wins."""
        self.router.route_prefix(prefix, handler)

    def add_before_hook(self, hook: BeforeHook) -> None:
        self.router.before_hooks.append(hook)

    def add_after_hook(self, hook: AfterHook) -> None:
        self.router.after_hooks.append(hook)

    # -- lifecycle -----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return self._http.url

    @property
    def cgi_url(self) -> str:
        return self.url + "cgi-bin/ajax/"

    def start(self) -> Emulator:
        self._http.start()
        log.info("JSOC emulator listening on %s", self.url)
        return self

    def stop(self) -> None:
        self._http.stop()

    def serve_forever(self) -> None:
        self._http.serve_forever()

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def drms_config(self) -> dict[str, str]:
        """Keyword arguments for ``drms.ServerConfig`` pointing at this emulator."""
        return dict(name="EMU", cgi_baseurl=self.cgi_url, cgi_show_series="show_series",
                    cgi_jsoc_info="jsoc_info", cgi_jsoc_fetch="jsoc_fetch", cgi_check_address="checkAddress.sh",
                    cgi_show_series_wrapper="showextseries", show_series_wrapper_dbhost="hmidb2",
                    http_download_baseurl=self.url)
