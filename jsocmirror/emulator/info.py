"""Metadata endpoints: jsoc_info (series_struct, rs_list, rs_summary), show_series,
showextseries and checkAddress.sh, answering as JSOC does (PROTOCOL.md section 2).

Every reply is HTTP 200 application/json; errors travel inside the JSON. Field order and
value types follow the real CGI programs (jsoc_info.c, show_series.c, showextseries.py,
checkAddress.py): rs_list keyword values are strings except ``*recnum*``/``*sunum*`` (numbers,
as jsoc_info.c writes them); an empty result has no lists; unknown keywords, segments and
links give ``Invalid KeyLink``, ``InvalidSegName`` and ``Invalid_Link`` per record.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any, Iterator
from urllib.parse import unquote_plus

import orjson

from jsocmirror.emulator.query import QueryError, Selection, select
from jsocmirror.emulator.server import Request, Response, iter_chunks, json_response

CGI = "/cgi-bin/ajax/"
EAGER_CELLS = 2_000_000  # rs_list replies up to this many values are built whole before sending
log = logging.getLogger("jsocmirror.emulator.info")
_EMAIL_RE = re.compile(r"\s*[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,6}")


def install(emulator: Any) -> None:
    emulator.route(CGI + "jsoc_info", jsoc_info)
    emulator.route(CGI + "show_series", show_series)
    emulator.route(CGI + "showextseries", showextseries)
    emulator.route(CGI + "checkAddress.sh", check_address)
    emulator.route(CGI + "checkAddress", check_address)


def _runtime(start: float) -> float:
    return round(time.perf_counter() - start, 3)


def _unknown_series(emulator: Any) -> Response:
    if emulator.config.public_wrapper:
        return json_response({"status": 4, "error": "Invalid series name."})
    return json_response({"status": 1, "error": "series not found"})


def _series_name(ds: str) -> str:
    name = ds.strip()
    for ch in "[{":
        if ch in name:
            name = name[:name.index(ch)]
    return name.strip()


def jsoc_info(request: Request) -> Response:
    op = request.param("op") or ""
    if op == "series_struct":
        return series_struct(request)
    if op == "rs_list":
        return rs_list(request)
    if op == "rs_summary":
        return rs_summary(request)
    return json_response({"status": 1, "error": f"jsoc_info: unknown op {op!r} (series_struct, rs_list or rs_summary)"})


def series_struct(request: Request) -> Response:
    start = time.perf_counter()
    emulator = request.emulator
    world = emulator.world
    world.refresh()
    sdef = world.series(_series_name(request.param("ds") or ""))
    if sdef is None:
        return _unknown_series(emulator)
    out = sdef.to_struct()
    out["Interval"] = interval(world, sdef, emulator.config.max_records)
    out["runtime"] = _runtime(start)
    out["status"] = 0
    return json_response(out)


def interval(world, sdef, cap: int) -> dict[str, Any]:
    first = select(world, f"{sdef.name}[^]", n=1, cap=cap)
    if len(first) == 0:
        return {"FirstRecord": "NA", "FirstRecnum": "NA", "LastRecord": "NA", "LastRecnum": "NA", "MaxRecnum": 0}
    last = select(world, f"{sdef.name}[$]", n=-1, cap=cap)
    return {"FirstRecord": first.record_names()[0], "FirstRecnum": int(first.recnums[0]),
            "LastRecord": last.record_names()[-1], "LastRecnum": int(last.recnums[-1]),
            "MaxRecnum": world.max_recnum(sdef)}


def _split_list(text: str | None) -> list[str] | None:
    """A key/seg/link list as jsoc_info reads it: None when absent, [] after **NONE**."""
    if text is None:
        return None
    out = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        if item == "**NONE**":
            return []
        out.append(item)
    return out


def _limit(request: Request) -> int | Response:
    text = request.param("n")
    if text is None or text.strip() == "":
        return 0
    try:
        return int(float(text))
    except (ValueError, OverflowError):
        return json_response({"status": 1, "error": f"jsoc_info: n={text!r} is not an integer record limit"})


def rs_summary(request: Request) -> Response:
    start = time.perf_counter()
    emulator = request.emulator
    ds = request.param("ds") or ""
    if emulator.world.series(_series_name(ds)) is None:
        return _unknown_series(emulator)
    n = _limit(request)
    if isinstance(n, Response):
        return n
    try:
        sel = select(emulator.world, ds, n=n, cap=max(emulator.config.max_records, 10_000_000))
    except QueryError as exc:
        return json_response({"status": exc.status, "error": exc.message})
    return json_response({"count": len(sel), "runtime": _runtime(start), "status": 0})


def rs_list(request: Request) -> Response:
    start = time.perf_counter()
    emulator = request.emulator
    world = emulator.world
    ds = request.param("ds") or ""
    sdef = world.series(_series_name(ds))
    if sdef is None:
        return _unknown_series(emulator)
    n = _limit(request)
    if isinstance(n, Response):
        return n
    try:
        sel = select(world, ds, n=n, cap=emulator.config.max_records)
    except QueryError as exc:
        return json_response({"status": exc.status, "error": exc.message})
    if len(sel) == 0:
        return json_response({"count": 0, "runtime": _runtime(start), "status": 0})
    keys = _expand(_split_list(request.param("key")), [k.name for k in sdef.visible_keywords])
    segs = _expand(_split_list(request.param("seg")), [s.name for s in sdef.segments])
    links = _expand(_split_list(request.param("link")), [lk.name for lk in sdef.links])
    want_recinfo = (request.param("R") or "0").strip() not in ("", "0")
    chunks = _rs_list_chunks(sel, keys, segs, links, want_recinfo, start)
    if len(sel) * (len(keys) + len(segs) + len(links) + 1) <= EAGER_CELLS:
        # small enough to build whole: a failure still becomes a JSON error, never a torn reply
        try:
            return Response(body=b"".join(chunks))
        except Exception as exc:  # pragma: no cover - a generator bug, reported like JSOC would
            log.exception("rs_list %s failed", ds)
            return json_response({"status": 1, "error": f"jsoc_info: cannot list {ds!r}: {exc}"})
    return Response(body=iter_chunks(chunks))  # big: streamed column by column, memory ~ one column


def _expand(items: list[str] | None, every: list[str]) -> list[str]:
    if items is None:
        return []
    out = []
    for item in items:
        out.extend(every if item == "**ALL**" else [item])
    return out


def _rs_list_chunks(sel: Selection, keys, segs, links, want_recinfo: bool, start: float) -> Iterator[bytes]:
    sdef = sel.sdef
    yield b"{"
    seg_paths: list[list[str]] = []
    for name in segs:
        seg = sdef.segment(name)
        seg_paths.append(sel.segment_paths(name) if seg is not None else ["InvalidSegName"] * len(sel))
    if want_recinfo:
        names = sel.record_names()
        if seg_paths:
            online = [1 if p.startswith("/SUM") else 0 for p in seg_paths[-1]]
        else:
            online = [0] * len(sel)
        yield b'"recinfo":' + orjson.dumps([{"name": nm, "online": on} for nm, on in zip(names, online)]) + b","
    yield b'"keywords":['
    for i, name in enumerate(keys):
        col = sel.column(name, cache=False)  # memory stays near one column
        yield (b"," if i else b"") + b'{"name":' + orjson.dumps(name) + b',"values":' + col.json_array() + b"}"
    yield b'],"segments":['
    for i, (name, paths) in enumerate(zip(segs, seg_paths)):
        yield (b"," if i else b"") + orjson.dumps(_segment_object(sel, name, paths))
    yield b'],"links":['
    for i, name in enumerate(links):
        yield (b"," if i else b"") + orjson.dumps({"name": name, "values": _link_values(sel, name)})
    yield b'],"count":' + str(len(sel)).encode() + b',"runtime":' + str(_runtime(start)).encode() + b',"status":0}\n'


def _segment_object(sel: Selection, name: str, paths: list[str]) -> dict[str, Any]:
    sdef = sel.sdef
    seg = sdef.segment(name)
    n = len(sel)
    if seg is None:
        return {"name": name, "values": paths, "dims": ["NA"] * n, "cparms": [], "bzeros": [], "bscales": []}
    target_def, target_seg = sdef, seg
    if seg.is_link:
        lk = sdef.link(seg.link_name or "")
        tdef = sel.world.series(lk.target) if lk else None
        if tdef is not None:
            tseg = tdef.segment(seg.name) or next(
                (s for s in tdef.segments if s.name.lower().startswith(seg.name.lower())), None)
            if tseg is not None:
                target_def, target_seg = tdef, tseg
    dims = target_seg.dims or ""
    if "VAR" in dims:
        dims = str((target_def.emulator or {}).get("dims", dims.replace("VAR", "512")))
    index = [s.name for s in target_def.segments].index(target_seg.name)
    cparms_kw = target_def.keyword(f"cparms_sg{index:03d}")
    cparms = [cparms_kw.defval] * n if cparms_kw is not None and cparms_kw.defval else []
    bzero_kw = sdef.keyword(f"{name}_bzero")
    bscale_kw = sdef.keyword(f"{name}_bscale")
    return {"name": name, "values": paths, "dims": [dims] * n, "cparms": cparms,
            "bzeros": [bzero_kw.defval] * n if bzero_kw is not None else [],
            "bscales": [bscale_kw.defval] * n if bscale_kw is not None else []}


def _link_values(sel: Selection, name: str) -> list[str]:
    lk = sel.sdef.link(name)
    if lk is None:
        return ["Invalid_Link"] * len(sel)
    target = sel.link_target(lk.name)
    if target is None:
        return ["Invalid_Link"] * len(sel)
    if lk.kind.upper() == "DYNAMIC":
        return target.record_names()
    return [f"{target.sdef.name}[:#{r}]" for r in target.recnums.tolist()]


# ------------------------------------------------------------------------------------------------
# series lists
# ------------------------------------------------------------------------------------------------
def _filter_regex(text: str | None):
    if text is None or text == "":
        return None
    try:
        return re.compile(text, re.IGNORECASE)
    except re.error as exc:
        raise ValueError(f"bad filter regular expression {text!r}: {exc}") from None


def show_series(request: Request) -> Response:
    registry = request.emulator.registry
    try:
        rx = _filter_regex(request.param("filter"))
    except ValueError as exc:
        return json_response({"status": 1, "error": str(exc)})
    names = []
    for sdef in registry:
        if rx is None or rx.search(sdef.name):
            names.append({"name": sdef.name, "primekeys": ", ".join(sdef.primekeys), "note": sdef.note})
    return json_response({"status": 0, "names": names, "n": len(names)})


def showextseries(request: Request) -> Response:
    registry = request.emulator.registry
    try:
        rx = _filter_regex(request.param("filter"))
    except ValueError as exc:
        return json_response({"errMsg": str(exc), "seriesList": []})
    info = (request.param("info") or "").strip().lower() not in ("", "0", "false", "n", "no")
    chosen = [s for s in registry if rx is None or rx.search(s.name)]
    if info:
        return json_response({"errMsg": "", "seriesList": [{s.name: {"description": s.note}} for s in chosen]})
    return json_response({"errMsg": "", "seriesList": [s.name for s in chosen]})


# ------------------------------------------------------------------------------------------------
# checkAddress.sh
# ------------------------------------------------------------------------------------------------
MSG_REGISTERED = "Email address is valid and registered."
MSG_PENDING = "Email-address registration is pending. Please wait and try again later."
MSG_UNREGISTERED = "Email address has been neither validated nor registered."
MSG_MISSING = "Missing required argument 'address'."
MSG_INVALID = "Not a valid email address."
MSG_STARTED = ("Email address is not registered. Starting registration process. You will receive an email "
               "address from user jsoc. Please reply to this email message without modifying the subject. "
               "The body will be ignored.")


def address_status(config: Any, address: str) -> tuple[int, str]:
    """(status, msg) for an address already decoded: 2 registered, 3 pending, 4 unknown, -2 bad."""
    address = address.strip()
    if not address:
        return -2, MSG_MISSING
    if _EMAIL_RE.match(address) is None or address.count("@") != 1:
        return -2, MSG_INVALID
    lower = address.lower()
    local = lower.split("@")[0]
    if "+pending" in local or lower in {a.lower() for a in config.pending}:
        return 3, MSG_PENDING
    if config.registered is not None:
        ok = lower in {a.lower() for a in config.registered}
    else:
        ok = not lower.rstrip(".").endswith(".invalid")
    return (2, MSG_REGISTERED) if ok else (4, MSG_UNREGISTERED)


def check_address(request: Request) -> Response:
    raw = request.param("address")
    # drms double-encodes (quote_plus, then urlencode): undo the second layer here
    address = unquote_plus(raw) if raw is not None else ""
    status, msg = address_status(request.emulator.config, address)
    if status == 4 and (request.param("checkonly") or "0").strip() in ("", "0"):
        # without checkonly JSOC starts a registration (and mails the user)
        status, msg = 1, MSG_STARTED
    return json_response({"msg": msg, "status": status})
