"""The mirror's network policy, in one place: every GET to JSOC (or the emulator) goes through here.

A mirror runs unattended against a server it does not control, so each request:

- follows redirects only within the source's own host (an ``http`` to ``https`` upgrade on it
  is allowed), at most ``max_redirects`` hops; anything else is refused with one line naming
  the target (a browser's rule for credentials, applied to everything);
- has a connect timeout, an idle timeout (the longest silence inside a reply) and a total
  deadline, so a server that trickles one byte a second is cut like one that stalls. One
  watchdog thread enforces the deadlines by shutting the socket down, which wakes a read that
  is blocked inside the C buffered reader (a per-``recv`` timeout would restart on every byte);
- checks the body against its ``Content-Length`` (a clean close before the end is a short body)
  and refuses to hold a reply larger than a bound in memory;
- goes through the proxy named by ``HTTP_PROXY``/``HTTPS_PROXY``/``NO_PROXY`` like urllib, and a
  proxy that refuses us is named as the proxy's fault; a garbage proxy value is a config error.

Failures are ``NetError`` subclasses with ``retryable`` set; callers (jsoc.py, download.py)
turn them into their own errors. No I/O happens at import.
"""

from __future__ import annotations

import heapq
import http.client
import itertools
import os
import socket
import ssl
import threading
import time
import urllib.request
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import urljoin, urlsplit

from jsocmirror import __version__
from jsocmirror.errors import ConfigError

USER_AGENT = f"jsocmirror/{__version__} (+https://github.com/jsocmirror/jsocmirror)"
REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class NetPolicy:
    """Timeouts and limits of every request (``[network]`` in jsocmirror.toml)."""

    #: Seconds to open a connection (TCP, and TLS for https).
    connect_timeout: float = 20.0
    #: Longest silence inside a reply before it is cut (seconds).
    idle_timeout: float = 60.0
    #: Whole-reply deadline of a metadata call (series_struct, rs_list, show_series), seconds.
    metadata_seconds: float = 600.0
    #: Whole-reply deadline of an export call (exp_request, exp_status), seconds.
    poll_seconds: float = 120.0
    #: Base deadline of one data file, seconds; ``file_min_rate`` adds time for its size.
    file_seconds: float = 120.0
    #: Slowest transfer accepted (bytes/s): a file of S bytes gets file_seconds + S / file_min_rate.
    file_min_rate: float = 20_000.0
    #: Redirect hops followed (within the source's host only).
    max_redirects: int = 3
    #: Largest JSON reply held in memory (bytes).
    max_json_bytes: int = 2 << 30
    #: Longest wait a server's Retry-After may ask for (seconds).
    max_retry_after: float = 60.0

    def file_deadline(self, size: int | None) -> float:
        return self.file_seconds + max(0, size or 0) / self.file_min_rate


DEFAULT_POLICY = NetPolicy()


class NetError(Exception):
    """A request failed; ``retryable`` says whether trying again may help."""

    retryable = True


class RedirectRefused(NetError):
    retryable = False


class HttpStatus(NetError):
    def __init__(self, message: str, code: int, retry_after: float | None = None):
        super().__init__(message)
        self.code = code
        self.retry_after = retry_after
        self.retryable = code >= 500 or code in (408, 429)


class Unreachable(NetError):
    """No connection (refused, reset, DNS); ``proxy`` is the proxy's URL when one was in between."""

    def __init__(self, message: str, proxy: str | None = None, reason: str = ""):
        super().__init__(message)
        self.proxy = proxy
        self.reason = reason or message


class DeadlineExceeded(NetError):
    pass


class ShortBody(NetError):
    pass


class BodyTooLarge(NetError):
    retryable = False


class ProxyConfigError(ConfigError):
    """``HTTP_PROXY`` (or its kin) holds something that is not a proxy URL."""


# -- the watchdog ---------------------------------------------------------------------------------
class _Watchdog:
    """One daemon thread that shuts down the sockets of requests past their deadline."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Deadline]] = []
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, deadline: _Deadline) -> None:
        with self._cond:
            heapq.heappush(self._heap, (deadline.at, next(self._seq), deadline))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="jsocmirror-net-watchdog", daemon=True)
                self._thread.start()
            elif self._heap[0][2] is deadline:
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                at, _, deadline = self._heap[0]
                wait = at - time.monotonic()
                if wait > 0 and not deadline.done:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
            if not deadline.done:
                deadline.expire()


_WATCHDOG = _Watchdog()
# a forked child has the parent's heap but not its thread: it starts its own
os.register_at_fork(after_in_child=lambda: _WATCHDOG.__init__())


class _Deadline:
    """The deadline of one request: when it passes, the connection's socket is shut down."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        self.done = False
        self.expired = False
        self.sock: socket.socket | None = None
        _WATCHDOG.watch(self)

    def left(self) -> float:
        return self.at - time.monotonic()

    def expire(self) -> None:
        self.expired = True
        sock = self.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def finish(self) -> None:
        self.done = True


# -- proxies --------------------------------------------------------------------------------------
_PROXY_VARIABLES = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY",
                    "no_proxy", "NO_PROXY")
_proxies_seen: dict[tuple, dict[str, str]] = {}


def proxy_for(url: str) -> str | None:
    """The proxy URL a request to ``url`` goes through (urllib's environment rules), or None."""
    parts = urlsplit(url)
    # urllib's getproxies() walks the whole environment (~70 us); the variables it reads are few
    key = tuple(os.environ.get(name) for name in _PROXY_VARIABLES)
    proxies = _proxies_seen.get(key)
    if proxies is None:
        proxies = _proxies_seen[key] = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme)
    if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return _check_proxy(proxy, parts.scheme)


def _check_proxy(proxy: str, scheme: str) -> str:
    candidate = proxy if "://" in proxy else "http://" + proxy
    try:
        parts = urlsplit(candidate)
        port = parts.port
    except ValueError:
        port, parts = -1, None
    if parts is None or port == -1 or parts.scheme not in ("http", "https") or not parts.hostname \
            or any(c.isspace() for c in proxy):
        raise ProxyConfigError(f"{scheme}_proxy={proxy!r} in the environment is not a proxy URL "
                               "(accepted: http://host:port, or unset it)")
    return candidate


# -- requests -------------------------------------------------------------------------------------
class Reply:
    """An open reply: ``status``, ``headers``, ``url`` (after redirects), ``length`` (announced
    Content-Length or None); read it with ``readinto``/``read_all``, then ``close``."""

    def __init__(self, response: http.client.HTTPResponse, conn: http.client.HTTPConnection,
                 url: str, deadline: _Deadline, what: str):
        self._response = response
        self._conn = conn
        self._deadline = deadline
        self.url = url
        self.what = what
        self.status = response.status
        self.headers = response.headers
        length = response.headers.get("Content-Length")
        self.length = int(length) if length is not None and length.strip().isdigit() else None
        self.received = 0

    def __enter__(self) -> Reply:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._deadline.finish()
        self._conn.close()

    def readinto(self, view: memoryview) -> int:
        """Like ``HTTPResponse.readinto``; raises DeadlineExceeded, ShortBody or Unreachable."""
        try:
            n = self._response.readinto(view)
        except http.client.IncompleteRead:
            n = 0
        except (OSError, http.client.HTTPException) as exc:
            self._raise_cut(exc)
        if self._deadline.expired:
            self._raise_cut(None)
        self.received += n
        if n == 0 and self.length is not None and self.received < self.length:
            raise ShortBody(f"{self.what}: the reply ended after {self.received} of the "
                            f"{self.length} bytes announced")
        return n

    def read_all(self, limit: int) -> bytes:
        """The whole body (at most ``limit`` bytes, else BodyTooLarge)."""
        if self.length is not None:
            if self.length > limit:
                raise BodyTooLarge(f"{self.what}: the server announced {self.length} bytes, more than the "
                                   f"{limit} accepted")
            try:  # one read of the announced length: a single allocation
                body = self._response.read()
            except http.client.IncompleteRead as exc:
                self.received = len(exc.partial)
                if self._deadline.expired:
                    self._raise_cut(None)
                raise ShortBody(f"{self.what}: the reply ended after {self.received} of the "
                                f"{self.length} bytes announced") from None
            except (OSError, http.client.HTTPException) as exc:
                self._raise_cut(exc)
            self.received = len(body)
            if self._deadline.expired:
                self._raise_cut(None)
            return body
        chunks = []
        view = memoryview(bytearray(1 << 16))
        while n := self.readinto(view):
            chunks.append(bytes(view[:n]))
            if self.received > limit:
                raise BodyTooLarge(f"{self.what}: the reply exceeds the {limit} bytes accepted")
        return b"".join(chunks)

    def _raise_cut(self, exc: BaseException | None):
        if self._deadline.expired:
            raise DeadlineExceeded(f"{self.what}: no complete reply within {self._deadline.seconds:.0f} s "
                                   f"({self.received} bytes received)") from None
        if isinstance(exc, (TimeoutError, socket.timeout)):
            raise DeadlineExceeded(f"{self.what}: the server went silent after {self.received} bytes") from None
        raise Unreachable(f"{self.what}: connection lost after {self.received} bytes: {exc}") from None


def open_url(url: str, *, seconds: float, policy: NetPolicy = DEFAULT_POLICY,
             headers: dict[str, str] | None = None, what: str | None = None) -> Reply:
    """GET ``url`` under the policy; the reply's status is 2xx (other statuses raise HttpStatus)."""
    what = what or _short(url)
    deadline = _Deadline(seconds)
    origin = urlsplit(url)
    current = url
    try:
        for hop in range(policy.max_redirects + 1):
            response, conn = _get_once(current, headers or {}, deadline, policy, what)
            code = response.status
            if code in REDIRECT_CODES:
                location = response.headers.get("Location") or ""
                conn.close()
                target = urljoin(current, location.strip())
                refusal = _redirect_refusal(origin, target)
                if refusal:
                    raise RedirectRefused(f"{what}: refusing the redirect to {target!r} ({refusal})")
                if hop == policy.max_redirects:
                    raise RedirectRefused(f"{what}: more than {policy.max_redirects} redirects "
                                          f"(last to {target!r})")
                current = target
                continue
            if 200 <= code < 300:
                return Reply(response, conn, current, deadline, what)
            conn.close()
            raise HttpStatus(f"{what}: HTTP {code} {response.reason}".rstrip(), code,
                             _retry_after(response.headers.get("Retry-After"), policy))
    except BaseException:
        deadline.finish()
        raise
    raise AssertionError("unreachable")  # pragma: no cover


def get_body(url: str, *, seconds: float, policy: NetPolicy = DEFAULT_POLICY, what: str | None = None,
             limit: int | None = None) -> bytes:
    """The whole body of a GET (a JSON reply): deadline, redirect policy and size bound applied."""
    with open_url(url, seconds=seconds, policy=policy, what=what) as reply:
        return reply.read_all(policy.max_json_bytes if limit is None else limit)


def _get_once(url: str, headers: dict[str, str], deadline: _Deadline, policy: NetPolicy, what: str):
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise RedirectRefused(f"{what}: refusing {url!r} (only http and https URLs are fetched)")
    proxy = proxy_for(url)
    timeout = min(policy.connect_timeout, max(deadline.left(), 0.001))
    try:
        port = parts.port or DEFAULT_PORTS[parts.scheme]
    except ValueError:
        raise RedirectRefused(f"{what}: refusing {url!r} (bad port)") from None
    conn = _connection(parts.scheme, parts.hostname, port, proxy, timeout)
    target = url if proxy and parts.scheme == "http" else (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        conn.connect()
        conn.sock.settimeout(min(policy.idle_timeout, max(deadline.left(), 0.001)))
        deadline.sock = conn.sock
        if deadline.expired:
            raise TimeoutError("deadline")
        conn.putrequest("GET", target, skip_accept_encoding=True)
        conn.putheader("User-Agent", USER_AGENT)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
    except (OSError, http.client.HTTPException, ssl.SSLError) as exc:
        conn.close()
        if deadline.expired or isinstance(exc, (TimeoutError, socket.timeout)):
            raise DeadlineExceeded(f"{what}: no reply within {min(deadline.seconds, policy.idle_timeout):.0f} s") from None
        if proxy:
            raise Unreachable(f"the proxy {proxy} (from the environment) failed for {what}: {_reason(exc)}",
                              proxy=proxy) from None
        raise Unreachable(f"cannot reach {parts.scheme}://{parts.netloc}/ for {what}: {_reason(exc)}",
                          reason=_reason(exc)) from None
    if proxy and response.status == 407:
        conn.close()
        raise Unreachable(f"the proxy {proxy} (from the environment) refused {what}: HTTP 407 "
                          "(proxy authentication required)", proxy=proxy)
    return response, conn


def _connection(scheme: str, host: str, port: int, proxy: str | None, timeout: float):
    if proxy:
        pparts = urlsplit(proxy)
        pport = pparts.port or DEFAULT_PORTS[pparts.scheme]
        if scheme == "https":  # a CONNECT tunnel through the proxy, TLS end to end
            conn = http.client.HTTPSConnection(pparts.hostname, pport, timeout=timeout)
            conn.set_tunnel(host, port)
            return conn
        return http.client.HTTPConnection(pparts.hostname, pport, timeout=timeout)
    if scheme == "https":
        return http.client.HTTPSConnection(host, port, timeout=timeout)
    return http.client.HTTPConnection(host, port, timeout=timeout)


def _redirect_refusal(origin, target: str) -> str | None:
    """Why a redirect to ``target`` is refused (None: it is followed)."""
    try:
        parts = urlsplit(target)
        port = parts.port or DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return "not a URL"
    if parts.scheme not in DEFAULT_PORTS:
        return f"scheme {parts.scheme or 'none'!r}: only http and https on the source's own host"
    if (parts.hostname or "").lower() != (origin.hostname or "").lower():
        return f"another host than the source's {origin.hostname}"
    origin_port = origin.port or DEFAULT_PORTS.get(origin.scheme)
    if parts.scheme == origin.scheme:
        return None if port == origin_port else f"another port than the source's {origin_port}"
    if origin.scheme == "http" and parts.scheme == "https":
        return None
    return "a downgrade from https to http"


def _retry_after(value: str | None, policy: NetPolicy) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), policy.max_retry_after)


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0] if text else type(exc).__name__


def _short(url: str) -> str:
    parts = urlsplit(url)
    return f"GET {parts.path.rsplit('/', 1)[-1] or parts.path or '/'}"
