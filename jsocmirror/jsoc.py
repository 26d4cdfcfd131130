"""The only module that talks to JSOC (or the emulator): series info, record lists, email checks.

Every call is a GET through the network policy (net.py: redirects within the host only,
deadlines, checked lengths) and is decoded with ``orjson``: ``drms.Client.query`` builds a
pandas frame per call, which is the slow path the sync benchmark compares against. The export
calls send the parameters drms sends. Every JSOC reply with ``status != 0`` becomes a
``JsocError`` with JSOC's own message.

A server is named by its base URL ending in ``/`` (architecture.md): CGI programs live under
``<url>cgi-bin/ajax/`` and downloads under ``<url>``.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Iterable
from urllib.parse import quote_plus, urlencode

import numpy as np
import orjson

from jsocmirror import net
from jsocmirror.errors import EXIT_USAGE, ConfigError, JsocError, SourceUnavailable

log = logging.getLogger("jsocmirror.jsoc")

REAL_JSOC_URL = "http://jsoc.stanford.edu/"

#: Specials that rs_list accepts in ``key=`` (the record's bookkeeping, not keywords).
RECORD_SPECIALS = ("*recnum*", "*sunum*", "*size*", "*online*")


class SeriesNotFound(JsocError):
    """JSOC does not know the series (``Invalid series name`` / ``series not found``)."""

    exit_code = EXIT_USAGE


class JsocClient:
    """A connection to one JSOC server. Counts its requests (``requests``) for run summaries.

    ``url`` is the server's base URL (``http://jsoc.stanford.edu/`` or an emulator's URL).
    Transient network failures are retried ``retries`` times with backoff; JSOC errors are not.
    """

    def __init__(self, url: str, *, email: str | None = None, policy: net.NetPolicy | None = None,
                 retries: int = 2):
        self.url = url if url.endswith("/") else url + "/"
        self.cgi = self.url + "cgi-bin/ajax/"
        self.email = email
        self.policy = policy or net.DEFAULT_POLICY
        self.retries = retries
        self.requests = 0
        self.bytes_received = 0

    def __repr__(self) -> str:
        return f"JsocClient({self.url!r})"

    # -- plumbing ---------------------------------------------------------------------------
    def get_bytes(self, program: str, params: dict[str, Any], *, poll: bool = False,
                  retries: int | None = None) -> bytes:
        """GET ``<cgi><program>?<params>`` and return the body (retrying transient failures).

        The request runs under the network policy (net.py): redirects only within this host, a
        deadline (``poll``: an export call's, else a metadata call's), the body checked against
        its announced length. Every failure becomes one line naming this server.
        """
        url = self.cgi + program + "?" + urlencode(params)
        seconds = self.policy.poll_seconds if poll else self.policy.metadata_seconds
        retries = self.retries if retries is None else retries
        delay = 1.0
        for attempt in range(retries + 1):
            self.requests += 1
            try:
                body = net.get_body(url, seconds=seconds, policy=self.policy, what=f"{program} at {self.url}")
                self.bytes_received += len(body)
                return body
            except net.HttpStatus as exc:
                if not exc.retryable:
                    raise JsocError(f"JSOC at {self.url} answered HTTP {exc.code} to {program}") from None
                if attempt == retries:
                    raise SourceUnavailable(f"JSOC at {self.url} answered HTTP {exc.code} to {program} "
                                            f"{retries + 1} times; try again later") from None
                wait = max(delay, exc.retry_after or 0.0)
            except net.Unreachable as exc:
                if attempt == retries:
                    message = str(exc) if exc.proxy else f"cannot reach JSOC at {self.url}: {exc.reason}"
                    raise SourceUnavailable(message) from None
                wait = delay
            except (net.DeadlineExceeded, net.ShortBody) as exc:
                if attempt == retries:
                    raise SourceUnavailable(f"{exc} ({retries + 1} tries)") from None
                wait = delay
            except net.NetError as exc:  # refused redirects, oversized replies: asking again cannot help
                raise JsocError(str(exc)) from None
            log.info("retrying %s in %.0f s (%d more tries)", program, wait, retries - attempt)
            time.sleep(wait)
            delay *= 4
        raise AssertionError("unreachable")  # pragma: no cover

    def get_json(self, program: str, params: dict[str, Any], **how) -> dict[str, Any]:
        body = self.get_bytes(program, params, **how)
        return decode(body, program)

    # -- metadata ---------------------------------------------------------------------------
    def series_struct(self, series: str) -> dict[str, Any]:
        """``jsoc_info?op=series_struct``: keywords, segments, links, prime keys and Interval."""
        reply = self.get_json("jsoc_info", {"op": "series_struct", "ds": series})
        status = reply.get("status")
        if status != 0:
            error = reply.get("error") or "unknown error"
            if status in (1, 4) and ("series" in error.lower()):
                raise SeriesNotFound(f"JSOC has no series {series!r} ({error})")
            raise JsocError(f"series_struct {series}: {error} [status={status}]")
        return reply

    def rs_list_bytes(self, ds: str, keys: Iterable[str], *, n: int | None = None) -> bytes:
        """The raw ``rs_list`` reply for a record set (decode with ``decode_rs_list``)."""
        params: dict[str, Any] = {"op": "rs_list", "ds": ds, "key": ",".join(keys)}
        if n is not None:
            params["n"] = str(int(n))
        return self.get_bytes("jsoc_info", params)

    def rs_list(self, ds: str, keys: Iterable[str], *, n: int | None = None) -> dict[str, Any]:
        return decode_rs_list(self.rs_list_bytes(ds, keys, n=n), ds)

    def rs_count(self, ds: str) -> int:
        """How many records a record set has (``jsoc_info?op=rs_summary``: a count, no rows)."""
        reply = self.get_json("jsoc_info", {"op": "rs_summary", "ds": ds})
        if reply.get("status") != 0 or not isinstance(reply.get("count"), (int, str)):
            raise JsocError(f"rs_summary {ds}: {reply.get('error') or 'no count'} [status={reply.get('status')}]")
        return int(reply["count"])

    def series_names(self, regex: str | None = None) -> list[str]:
        """Names of the series the server has (optionally filtered by a POSIX regex)."""
        params = {"dbhost": "hmidb2"}
        if regex:
            params["filter"] = regex
        try:
            reply = self.get_json("showextseries", params)
            names = reply.get("seriesList")
            if isinstance(names, list):
                return [n if isinstance(n, str) else next(iter(n)) for n in names]
        except JsocError:
            pass
        reply = self.get_json("show_series", {"filter": regex} if regex else {})
        return [item["name"] for item in reply.get("names", [])]

    def check_email(self, email: str) -> bool:
        """True if JSOC knows the address as registered (checkAddress status 2)."""
        # JSOC's checkAddress expects the address quoted twice (as drms sends it).
        reply = self.get_json("checkAddress.sh", {"address": quote_plus(email), "checkonly": "1"})
        try:
            return int(reply.get("status")) == 2
        except (TypeError, ValueError):
            return False

    def require_registered(self, email: str | None) -> None:
        """ConfigError unless ``email`` is registered with this server."""
        if not email:
            raise ConfigError("no email configured; set one with 'jsocmirror init --email' (JSOC needs it for exports)")
        if not self.check_email(email):
            raise ConfigError(
                f"email {email!r} is not registered with JSOC at {self.url}; "
                "register it at http://jsoc.stanford.edu/ajax/register_email.html"
            )


def decode(body: bytes, what: str) -> dict[str, Any]:
    try:
        reply = orjson.loads(body)
    except orjson.JSONDecodeError:
        try:  # JSOC replies are latin-1 at times (drms decodes them so)
            reply = orjson.loads(body.decode("latin-1"))
        except orjson.JSONDecodeError:
            snippet = body[:80].decode("latin-1", "replace").replace("\n", " ")
            raise JsocError(f"JSOC sent something that is not JSON to {what}: {snippet!r}") from None
    if not isinstance(reply, dict):
        raise JsocError(f"JSOC sent an unexpected reply to {what}")
    return reply


def decode_rs_list(body: bytes, ds: str) -> dict[str, Any]:
    """Decode an rs_list reply; a reply with ``status != 0`` is a JsocError with JSOC's message."""
    reply = decode(body, "rs_list")
    status = reply.get("status")
    if status != 0:
        raise JsocError(f"rs_list {ds}: {reply.get('error') or 'query failed'} [status={status}]")
    return reply


def rs_list_columns(reply: dict[str, Any]) -> dict[str, list[str]]:
    """``{keyword name: [values]}`` of an rs_list reply (empty when no record matched)."""
    return {item["name"]: item["values"] for item in reply.get("keywords") or ()}


# -- columnar decoding of rs_list replies (the sync hot path) ------------------------------------
_NAME_OPEN = b'{"name":"'
_VALUES_OPEN = b'"values":['


def rs_list_arrays(body: bytes, ds: str):
    """``({keyword: Arrow string array}, count)`` of an rs_list reply, without Python objects.

    JSOC sends one JSON object whose ``keywords`` list holds ``{"name":…,"values":[…]}`` per
    keyword. A values list without backslash escapes is ``"v1","v2",...``, so numpy can cut it
    into Arrow's string buffers directly (``_values_array``): ~3x faster than ``orjson`` +
    ``pa.array``, and it never holds millions of ``str`` objects. Numbers (JSOC sends ``*recnum*``/``*sunum*`` unquoted) come back as strings too.
    Anything unexpected (escapes, other spacing, invalid UTF-8) falls back to ``orjson`` for
    that keyword or for the whole reply. Errors (``status != 0``) raise JsocError.
    """
    import pyarrow as pa

    start = body.find(b'"keywords":[')
    if start < 0:  # no rows (or another spelling): the general path, which also raises on errors
        return _arrays_via_orjson(body, ds)
    # The keys after "keywords" are near the end; quotes inside values are escaped, so these
    # spellings only occur as keys and searching from the end finds them at once.
    ends = [p for p in (body.rfind(k, start) for k in (b'"segments":', b'"links":', b'"count":')) if p > 0]
    if not ends:
        return _arrays_via_orjson(body, ds)
    end = min(ends)
    tail = decode(b"{" + body[end:], "rs_list")
    if tail.get("status") != 0:
        raise JsocError(f"rs_list {ds}: {tail.get('error') or 'query failed'} [status={tail.get('status')}]")
    count = tail.get("count")
    segments: list[tuple[str, int, int]] = []  # keyword, start and end of its values in body
    pos = _find_name_open(body, start, end)
    while pos >= 0:
        nxt = _find_name_open(body, pos + 1, end)
        seg_end = nxt if nxt > 0 else end
        quote = body.find(b'"', pos + len(_NAME_OPEN), seg_end)
        vals = body.find(_VALUES_OPEN, quote, seg_end)
        close = body.rfind(b"]}", vals, seg_end)
        if quote < 0 or vals < 0 or close < 0:
            return _arrays_via_orjson(body, ds)
        segments.append((body[pos + len(_NAME_OPEN):quote].decode("latin-1"), vals + len(_VALUES_OPEN), close))
        pos = nxt
    if count is None or not segments:
        return _arrays_via_orjson(body, ds)
    count = int(count)
    out = _split_columns(body, segments, count, ascii_only=body.isascii())
    for name, a, b in segments:
        if name in out:
            continue
        try:
            values = orjson.loads(b"[" + body[a:b] + b"]")
        except orjson.JSONDecodeError:
            return _arrays_via_orjson(body, ds)
        out[name] = pa.array([None if v is None else str(v) for v in values], type=pa.string())
    if any(len(a) != count for a in out.values()):
        return _arrays_via_orjson(body, ds)
    return {name: out[name] for name, _, _ in segments}, count


def _find_name_open(body: bytes, lo: int, hi: int) -> int:
    """Position of the next ``{"name":"`` in ``body[lo:hi]``, or -1.

    A search for the single byte ``{`` runs at memchr speed, while the 9-byte pattern (ending
    in a quote, the commonest byte of a reply) crawled; a ``{`` inside a value is skipped.
    """
    pos = body.find(b"{", lo, hi)
    while pos >= 0 and not body.startswith(_NAME_OPEN, pos):
        pos = body.find(b"{", pos + 1, hi)
    return pos


_NUMBER_CHARS = b"0123456789+-.eE,"


def _values_array(body: bytes, a: int, b: int, count: int, ascii_only: bool = False):
    """One rs_list values list (``body[a:b]``, between ``[`` and ``]``) as an Arrow string array.

    Without backslash escapes no value contains a quote, so a quoted list is exactly
    ``"v1","v2",...``: numpy finds the quotes (their gaps are the offsets) and deleting every
    ``","`` leaves the string data; Arrow takes both buffers as they are. Unquoted lists (JSOC
    sends ``*recnum*``/``*sunum*`` as JSON numbers) split on commas. ``ascii_only`` (the whole
    reply is ASCII) makes the UTF-8 check needless. Returns None when the bytes do not have
    exactly that shape (the caller then uses orjson).
    """
    import pyarrow as pa

    if count == 0:
        return pa.array([], type=pa.string()) if not body[a:b].strip() else None
    if b <= a or body.find(b"\\", a, b) >= 0:
        return None
    raw = np.frombuffer(body, dtype=np.uint8, count=b - a, offset=a)
    if raw[0] == 34:  # '"'
        quotes = np.flatnonzero(raw == 34)
        if len(quotes) != 2 * count or quotes[-1] != len(raw) - 1:
            return None
        starts, ends = quotes[0::2] + 1, quotes[1::2]
        # between two values there must be exactly '","' (so it occurs nowhere else)
        if count > 1 and not (np.array_equal(starts[1:], ends[:-1] + 3) and np.all(raw[ends[:-1] + 1] == 44)):
            return None
        widths = ends - starts
        width = int(widths[0])
        if np.all(widths == width):  # one width (times, flags, most numbers): a strided copy, 10x faster
            data = np.ndarray((count,), f"S{width}", body, a + 1, (width + 3,)).tobytes() if width else b""
        else:
            data = body[a + 1:b - 1].replace(b'","', b"")
    else:
        text = body[a:b]
        if text.translate(None, _NUMBER_CHARS):  # some byte that is not part of a number list
            return None
        commas = np.flatnonzero(raw == 44)
        if len(commas) != count - 1:
            return None
        starts = np.concatenate(([0], commas + 1))
        ends = np.concatenate((commas, [len(raw)]))
        data = text.replace(b",", b"")
    offsets = np.zeros(count + 1, dtype=np.int64)
    np.cumsum(ends - starts, out=offsets[1:])
    if offsets[-1] != len(data) or offsets[-1] >= 2**31:
        return None
    array = pa.StringArray.from_buffers(count, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data))
    try:
        array.validate(full=not ascii_only)  # offsets, and UTF-8 unless the reply is ASCII
    except pa.ArrowInvalid:
        return None
    return array


def _split_columns(body: bytes, segments: list[tuple[str, int, int]], count: int,
                   ascii_only: bool = False) -> dict[str, Any]:
    """Every values list of a reply that has the simple shape, as Arrow string arrays."""
    out = {}
    for name, a, b in segments:
        array = _values_array(body, a, b, count, ascii_only)
        if array is not None:
            out[name] = array
    return out


def _arrays_via_orjson(body: bytes, ds: str):
    import pyarrow as pa

    reply = decode_rs_list(body, ds)
    out = {}
    for item in reply.get("keywords") or ():
        values = item["values"]
        try:
            out[item["name"]] = pa.array(values, type=pa.string())
        except (pa.ArrowTypeError, pa.ArrowInvalid):
            out[item["name"]] = pa.array([None if v is None else str(v) for v in values], type=pa.string())
    return out, int(reply.get("count") or 0)


# ============================================================================================
# Exports and file listings (stage.py's ExportAPI). Section owned by the stage/download work.
# ============================================================================================
class ExportClient:
    """JSOC export calls for the export governor, over one ``JsocClient``.

    ``exp_request``/``exp_status``/``export_from_id`` are the ``jsoc_fetch`` GETs drms sends
    (same parameters), made here so that they run under the network policy like every other
    call; ``rs_list_paths`` is the no-export route: ``rs_list`` with ``seg=`` returns SUMS paths
    that download straight from ``<url>SUM...``. Every call returns JSOC's reply as a dict (its
    ``status`` left for the governor to interpret); network and HTTP failures become ``JsocError``.
    """

    METHODS = ("url_quick", "url", "url-tar")
    PROTOCOLS = ("as-is", "fits")

    def __init__(self, client: JsocClient):
        self.client = client
        self.base_url = client.url
        self.calls = 0

    def _fetch(self, params: dict[str, Any], *, retries: int | None = None) -> dict[str, Any]:
        self.calls += 1
        return self.client.get_json("jsoc_fetch", params, poll=True, retries=retries)

    def exp_request(self, ds: str, *, method: str, protocol: str, email: str,
                    filenamefmt: str | None) -> dict[str, Any]:
        """``jsoc_fetch op=exp_request``: the raw reply (status 0 quick, 2 queued, 3/4/7 refused).

        Never retried: a request whose reply was lost may exist at JSOC, and a second one would
        trip the one-pending-export-per-email rule.
        """
        method, protocol = method.lower(), protocol.lower()
        if method not in self.METHODS or protocol not in self.PROTOCOLS:
            raise JsocError(f"export method {method!r} / protocol {protocol!r} not supported "
                            f"(accepted: {', '.join(self.METHODS)} / {', '.join(self.PROTOCOLS)})")
        if method == "url_quick" and protocol != "as-is":
            method = "url"  # as drms does: url_quick only serves files as they are stored
        params = {"op": "exp_request", "format": "json", "ds": ds, "notify": email, "method": method,
                  "protocol": protocol}
        if filenamefmt is not None:
            params["filenamefmt"] = filenamefmt
        params["process=n"] = "0"
        params["requester"] = email.split("@")[0]
        return self._fetch(params, retries=0)

    def exp_status(self, requestid: str) -> dict[str, Any]:
        """``jsoc_fetch op=exp_status``: the raw reply (1 pending, 0 with the index, 3-6 failures)."""
        return self._fetch({"op": "exp_status", "requestid": requestid})

    def export_from_id(self, requestid: str) -> dict[str, Any]:
        """Resume a request a previous run submitted: its status reply (what drms's
        ``export_from_id`` asks)."""
        return self.exp_status(requestid)

    def rs_list_paths(self, ds: str, *, keys: Iterable[str], segments: Iterable[str]) -> dict[str, Any]:
        """``rs_list`` with ``seg=``: prime keys, ``*recnum*``/``*online*`` and each segment's SUMS path."""
        params = {"op": "rs_list", "ds": ds, "key": ",".join(keys), "seg": ",".join(segments)}
        return decode_rs_list(self.client.get_bytes("jsoc_info", params), ds)
