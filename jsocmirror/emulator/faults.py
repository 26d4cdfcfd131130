"""Faults on demand: switches that make the emulator misbehave the ways real JSOC does.

Every switch is off by default. Set them from Python (``emu.faults.http_503 = 0.2``,
``emu.faults.set("missing_files", "0.1")``, ``emu.faults.update(slow=0.5)``, ``emu.faults.clear()``)
or from the CLI (``jsocmirror emulator serve --fault http_503=0.2 --fault endpoints=jsoc_fetch``).
Decisions are seeded (``seed``, default the world's seed): per-request faults draw from one seeded
random stream; per-file faults (corrupt, missing) hash the file's identity, so the same file is
always the broken one, as a bad file on a real server would be. ``counts`` records how many times
each fault fired. See docs/emulator.md, "Faults", for the table of switches.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from dataclasses import dataclass, field, fields
from typing import Any

#: Switch name -> (type, help). ``endpoints`` scopes http_500/http_503/slow.
SWITCHES: dict[str, tuple[type, str]] = {
    "http_500": (float, "fraction of requests (in scope) answered HTTP 500"),
    "http_503": (float, "fraction of requests (in scope) answered HTTP 503 with Retry-After"),
    "endpoints": (str, "comma list limiting http_500/http_503/slow to these endpoints: jsoc_fetch, "
                       "exp_request, exp_status, jsoc_info, checkAddress.sh, show_series, showextseries, "
                       "files (downloads); empty = every request"),
    "slow": (float, "seconds of delay before answering each request in scope"),
    "reset_mid_body": (float, "fraction of file downloads whose connection is reset (RST) halfway through the body"),
    "truncate_body": (float, "fraction of file downloads that stop halfway (clean close) after a full Content-Length"),
    "wrong_length": (float, "fraction of file downloads announcing a Content-Length shorter than the body"),
    "corrupt_files": (float, "fraction of files (fixed per file) served with flipped bytes, same size"),
    "missing_files": (float, "fraction of files (fixed per file) that answer 404 as if lost from SUMS"),
    "stuck_exports": (float, "fraction of new export requests that stay pending (status 1) forever"),
    "status7": (float, "fraction of exp_request calls answered status 7 (user has pending requests)"),
    "seed": (int, "seed of the fault decisions"),
}


@dataclass
class Faults:
    """The fault switches of one emulator (``emu.faults``). All off by default."""

    seed: int = 0
    http_500: float = 0.0
    http_503: float = 0.0
    endpoints: str = ""
    slow: float = 0.0
    reset_mid_body: float = 0.0
    truncate_body: float = 0.0
    wrong_length: float = 0.0
    corrupt_files: float = 0.0
    missing_files: float = 0.0
    stuck_exports: float = 0.0
    status7: float = 0.0
    #: Explicitly missing files: (series lower-cased, recnum) or (series, recnum, segment) tuples.
    missing: set[tuple] = field(default_factory=set)
    counts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(self.seed)

    # -- switching -----------------------------------------------------------------------------
    def set(self, name: str, value: Any) -> None:
        """Set one switch; strings are parsed (``"0.2"``). Unknown names or bad values raise ValueError."""
        if name not in SWITCHES:
            raise ValueError(f"unknown fault {name!r} (accepted: {', '.join(sorted(SWITCHES))})")
        kind = SWITCHES[name][0]
        try:
            parsed = kind(value)
        except (TypeError, ValueError):
            raise ValueError(f"fault {name}={value!r}: expected a {kind.__name__}") from None
        if kind is float and (parsed < 0 or (name != "slow" and parsed > 1)):
            raise ValueError(f"fault {name}={value!r}: expected a fraction between 0 and 1"
                             if name != "slow" else f"fault slow={value!r}: expected seconds >= 0")
        with self._lock:
            setattr(self, name, parsed)
            if name == "seed":
                self._rng = random.Random(parsed)

    def update(self, **switches: Any) -> None:
        for name, value in switches.items():
            self.set(name, value)

    def parse(self, assignment: str) -> None:
        """Apply one ``NAME=VALUE`` (the CLI's ``--fault``)."""
        name, sep, value = assignment.partition("=")
        if not sep:
            raise ValueError(f"fault {assignment!r}: expected NAME=VALUE (names: {', '.join(sorted(SWITCHES))})")
        self.set(name.strip(), value.strip())

    def clear(self) -> None:
        """Every switch off (the seed and the counts stay)."""
        with self._lock:
            for f in fields(self):
                if f.name in SWITCHES and f.name != "seed":
                    setattr(self, f.name, f.default)
            self.missing.clear()

    def mark_missing(self, series: str, recnum: int, segment: str | None = None) -> None:
        """Make one record's files (or one segment file) answer 404."""
        self.missing.add((series.lower(), int(recnum)) + ((segment,) if segment else ()))

    def active(self) -> dict[str, Any]:
        """The switches that are on."""
        return {name: getattr(self, name) for name in SWITCHES
                if name != "seed" and getattr(self, name) not in (0, 0.0, "")}

    # -- decisions -----------------------------------------------------------------------------
    def _count(self, name: str) -> None:
        with self._lock:
            self.counts[name] = self.counts.get(name, 0) + 1

    def _draw(self, name: str, rate: float) -> bool:
        if rate <= 0:
            return False
        with self._lock:
            hit = self._rng.random() < rate
        if hit:
            self._count(name)
        return hit

    def _fixed(self, name: str, rate: float, key: str) -> bool:
        """A per-file decision that is the same every time for the same file."""
        if rate <= 0:
            return False
        digest = hashlib.sha256(f"{self.seed}:{name}:{key}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < rate

    def in_scope(self, tags: set[str]) -> bool:
        scope = {e.strip() for e in self.endpoints.split(",") if e.strip()}
        return not scope or bool(scope & tags)

    def http_error(self, tags: set[str]) -> int | None:
        """500 or 503 when a request in scope should fail, else None."""
        if not self.in_scope(tags):
            return None
        if self._draw("http_500", self.http_500):
            return 500
        if self._draw("http_503", self.http_503):
            return 503
        return None

    def delay(self, tags: set[str]) -> float:
        if self.slow > 0 and self.in_scope(tags):
            self._count("slow")
            return self.slow
        return 0.0

    def file_missing(self, series: str, recnum: int, segment: str) -> bool:
        key = (series.lower(), int(recnum))
        hit = key in self.missing or key + (segment,) in self.missing or \
            self._fixed("missing_files", self.missing_files, f"{series.lower()}:{recnum}:{segment}")
        if hit:
            self._count("missing_files")
        return hit

    def corrupt(self, key: str, data: bytes) -> bytes:
        """``data`` with a few flipped bytes past the first header block when this file is a corrupt one."""
        if not self._fixed("corrupt_files", self.corrupt_files, key) or len(data) < 16:
            return data
        self._count("corrupt_files")
        rng = random.Random(f"{self.seed}:{key}")
        start = min(2880 * 2, len(data) // 2)
        out = bytearray(data)
        for _ in range(8):
            i = rng.randrange(start, len(out))
            out[i] ^= 0x5A
        return bytes(out)

    def body_fault(self) -> str | None:
        """For one file download: "reset", "truncate", "wrong_length" or None."""
        for name in ("reset_mid_body", "truncate_body", "wrong_length"):
            if self._draw(name, getattr(self, name)):
                return name
        return None

    def export_stuck(self) -> bool:
        return self._draw("stuck_exports", self.stuck_exports)

    def status7_storm(self) -> bool:
        return self._draw("status7", self.status7)


def request_tags(request: Any) -> set[str]:
    """Names a request answers to in ``endpoints``: the CGI name, its ``op``, or ``files``."""
    path = request.path
    if path.startswith("/cgi-bin/"):
        tags = {path.rsplit("/", 1)[-1]}
        op = request.param("op")
        if op:
            tags.add(op)
        return tags
    return {"files"}


def install(emulator: Any) -> None:
    """Give the emulator its switches and the before-hook that applies http errors and delays."""
    from jsocmirror.emulator.server import text_response

    faults = Faults(seed=getattr(emulator.world, "seed", 0) or 0)
    emulator.faults = faults

    def before(request: Any) -> Any:
        tags = request_tags(request)
        pause = faults.delay(tags)
        if pause:
            time.sleep(pause)
        code = faults.http_error(tags)
        if code == 500:
            return text_response("<html><body><h1>Internal Server Error</h1></body></html>\n", status=500)
        if code == 503:
            response = text_response("<html><body><h1>Service Unavailable</h1></body></html>\n", status=503)
            response.headers["Retry-After"] = "1"
            return response
        return None

    emulator.add_before_hook(before)
