"""The downloader: parallel, resumable, verified, atomic downloads into layout paths.

Each file is fetched into a temporary name in its destination directory
(``.<name>.part-<id>``, the id stable per URL and RECNUM so a later run resumes it with an HTTP
``Range`` request), checked against the length the server announced and, when the FITS file carries
them, its CHECKSUM/DATASUM cards, fsynced, and only then renamed over its layout path. A file
that fails is reported in ``Results.errors`` and never appears under its final name. Transient
failures (HTTP 5xx, resets, truncated bodies, timeouts, corrupt bytes) are retried with bounded
exponential backoff; 4xx answers are not.

Paths come from the caller (the layout), never from the server. Roots that are not local (any
fsspec URL) get the file written whole to a local temporary, verified, then uploaded under a
temporary name and moved into place.

Every GET goes through the network policy (net.py): redirects only within the source's host (a
redirect elsewhere fails that file), and a deadline of ``file_seconds`` plus the file's size at
``file_min_rate``, so a trickling server is cut and retried like any failure.

Threads plus http.client with ~1 MiB reads: PERF_ANCHORS measured that at 500+ MB/s on loopback,
where parfive's 1 KiB chunks cap at ~130 MB/s. Each read lands in one buffer per thread, reused
for every file, and is written and summed from there: no allocation or page faults per file.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import random
import shutil
import tarfile
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable, Mapping

import fsspec

from jsocmirror import net
from jsocmirror.net import DEFAULT_POLICY, NetPolicy
from jsocmirror.fitsheader import BLOCK, FitsSums

log = logging.getLogger("jsocmirror.download")

# Reads of whole 2880-byte FITS blocks (~1 MiB), so the checksums of a full read need no carry-over.
CHUNK = 364 * 2880
PART_MARK = ".part-"


# -- data --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FileTask:
    """One file to fetch: where from (``url``), where to (``dest``, relative to the root)."""

    url: str
    dest: str
    series: str
    record_key: str
    segment: str
    recnum: int | None = None
    size: int | None = None  # expected bytes, when known in advance
    header: Mapping[str, Any] | None = None  # keywords to write into the header (as-is header fill)

    @cached_property  # (a frozen dataclass still has an instance __dict__ for the cache)
    def part_id(self) -> str:
        return hashlib.sha1(f"{self.url}\0{self.recnum}".encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Landed:
    task: FileTask
    path: str  # relative to the root (== task.dest)
    size: int
    checksum: str  # ok | absent


@dataclass(frozen=True)
class FailedFile:
    task: FileTask
    error: str
    attempts: int
    retryable: bool = True


@dataclass
class Results:
    """What a download run did: files landed, and the failures as data (never raised)."""

    landed: list[Landed] = field(default_factory=list)
    errors: list[FailedFile] = field(default_factory=list)
    unstarted: list[FileTask] = field(default_factory=list)  # left when ``stop_at`` passed

    @property
    def bytes(self) -> int:
        return sum(item.size for item in self.landed)

    def __bool__(self) -> bool:
        return not self.errors

    def extend(self, other: Results) -> None:
        self.landed.extend(other.landed)
        self.errors.extend(other.errors)


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    backoff: float = 0.5  # first sleep, doubled each retry
    max_backoff: float = 30.0
    #: Deadlines, redirect rule and Retry-After cap of every GET (net.py; ``[network]``).
    net: NetPolicy = DEFAULT_POLICY

    def sleep_for(self, attempt: int) -> float:
        base = min(self.max_backoff, self.backoff * (2 ** max(0, attempt - 1)))
        return base * (0.5 + random.random() / 2)


class _Retryable(Exception):
    """A failure worth another attempt; ``resume`` says whether the part file can be kept."""

    def __init__(self, message: str, *, resume: bool = True, wait: float | None = None):
        super().__init__(message)
        self.resume = resume
        self.wait = wait  # the server's Retry-After (capped by the network policy), if it sent one


class _Fatal(Exception):
    pass


# -- FITS verification ---------------------------------------------------------------------------
def fits_checksum_state(path: str | os.PathLike) -> str:
    """``ok`` (every CHECKSUM/DATASUM present verifies), ``absent`` (none present), or raises
    ``ValueError`` naming the first problem (truncation, bad checksum, not FITS)."""
    sums = FitsSums()
    buffer = _chunk_buffer()
    with open(path, "rb", buffering=0) as handle:
        while n := handle.readinto(buffer):
            sums.feed(memoryview(buffer)[:n])
    return sums.finish()


_buffers = threading.local()


def _chunk_buffer() -> bytearray:
    """This thread's read buffer, reused for every file (a fresh 1 MiB buffer per file costs page faults)."""
    buffer = getattr(_buffers, "chunk", None)
    if buffer is None:
        buffer = _buffers.chunk = bytearray(CHUNK)
    return buffer


def _looks_fits(dest: str) -> bool:
    return dest.lower().endswith((".fits", ".fts", ".fit"))


# -- header fill -----------------------------------------------------------------------------------
def fill_header(path: str | os.PathLike, keywords: Mapping[str, Any], *, sync: bool = True) -> bool:
    """Write catalog keywords into the image header of an as-is file (in place, CHECKSUM redone).

    Only the image HDU's header changes: the bytes before it and its data unit are copied as they
    are, so JSOC's DATASUM card stays (and still verifies) and CHECKSUM is recomputed over the new
    header. The file then differs from JSOC's bytes (see docs/nightly.md). Returns False, leaving
    the file as it was, when there is nothing to write or the file is not a FITS file we can read.
    ``sync=False`` leaves durability to the caller (the downloader's group ``syncfs``).
    """
    from jsocmirror.fitsheader import check_fits

    with open(path, "rb") as handle:
        check = check_fits(handle, max_hdus=16, sums=False)
    if check.problem or not check.hdus:
        log.warning("%s: not filling the header: %s %s", path, check.problem or "no HDU", check.detail)
        return False
    last = check.hdus[-1]
    start = sum(len(h.header_bytes) + -(-h.data_size // BLOCK) * BLOCK for h in check.hdus[:-1])
    header = _filled_header(last.header_bytes, keywords)
    if header is None:
        return False
    if "CHECKSUM" in last.cards:
        header = _with_checksum(header, _data_sum(path, start + len(last.header_bytes), last))
    _rewrite(path, start, len(last.header_bytes), header, sync)
    return True


def _filled_header(raw: bytes, keywords: Mapping[str, Any]) -> bytes | None:
    """The header with the catalog's keywords set, padded to whole blocks (None when none applies).

    Cards are edited as 80-byte images rather than through astropy's Header, which costs ~0.1 ms
    per inserted card; JSOC's own cards keep their bytes and order, new ones go before CHECKSUM.
    """
    cards = [raw[i:i + 80] for i in range(0, len(raw), 80)]
    cards = cards[:next(i for i, card in enumerate(cards) if card[:8] == b"END     ")]
    index: dict[str, int] = {}
    for i, card in enumerate(cards):
        if card[8:10] == b"= ":
            index.setdefault(card[:8].decode("ascii", "replace").rstrip(), i)
    added: list[bytes] = []
    changed = False
    for name, value in keywords.items():
        key, value = _fits_card(str(name), value)
        image = _card_image(key, value) if key is not None else None
        if image is None:
            continue
        if key in index:
            cards[index[key]] = image
        else:
            added.append(image)
        changed = True
    if not changed:
        return None
    at = index.get("CHECKSUM", index.get("DATASUM", len(cards)))
    header = b"".join(cards[:at] + added + cards[at:]) + b"END".ljust(80)
    return header + b" " * (-len(header) % BLOCK)


def _card_image(key: str, value: Any) -> bytes | None:
    """The card(s) astropy would write for ``key = value``; None for a value no card can hold."""
    try:
        return _cached_card_image(key, value)
    except TypeError:  # unhashable (a list): no FITS card holds one either
        return None


@functools.lru_cache(maxsize=16384, typed=True)  # a SHARP record's keywords go into each of its segment files
def _cached_card_image(key: str, value: Any) -> bytes | None:
    from astropy.io import fits

    try:
        return fits.Card(key, value).image.encode("ascii")
    except (ValueError, TypeError, UnicodeEncodeError):
        return None


def _fits_card(name: str, value: Any) -> tuple[str | None, Any]:
    """(FITS keyword, value) for one catalog keyword, or (None, None) when it must not be written.

    MISSING values (NULL, NaN, the MISSING text JSOC prints for a string) stay out, as JSOC's own
    FITS exports leave them undefined. CUNITn is spelled as the FITS standard (and astropy.wcs)
    accepts it: JSOC's SHARP CEA records say ``degree``, FITS says ``deg``.
    """
    key = name.upper().replace("DATE__OBS", "DATE-OBS")
    if len(key) > 8 or key in _STRUCTURAL_KEYS or value is None:
        return None, None
    if isinstance(value, float) and value != value:
        return None, None
    if isinstance(value, str):
        if value.strip() in ("", "MISSING"):
            return None, None
        if key in ("CUNIT1", "CUNIT2", "CUNIT3"):
            value = _FITS_UNITS.get(value.strip().lower(), value.strip())
    return key, value


_FITS_UNITS = {"degree": "deg", "degrees": "deg", "arcsecond": "arcsec", "arcseconds": "arcsec",
               "arcsecs": "arcsec"}


def _data_sum(path: str | os.PathLike, data_start: int, hdu) -> int:
    """The data unit's one's-complement sum: JSOC's DATASUM card (the download verified it), or summed."""
    from jsocmirror.fitsheader import ones_complement_sum, parse_value

    text = parse_value(hdu.cards.get("DATASUM"))
    if text and text.isdigit():
        return int(text)
    total = 0
    with open(path, "rb") as handle:
        handle.seek(data_start)
        left = -(-hdu.data_size // BLOCK) * BLOCK
        while left > 0:
            piece = handle.read(min(CHUNK, left))
            if not piece:
                break
            total = ones_complement_sum(piece, total)
            left -= len(piece)
    return total


def _with_checksum(header: bytes, data_sum: int) -> bytes:
    """The header with its CHECKSUM card set so that header + data sum to -0 (FITS checksum convention)."""
    from jsocmirror.fitsheader import encode_checksum, ones_complement_sum

    at = next(i for i in range(0, len(header), 80) if header[i:i + 8] == b"CHECKSUM")
    value_at = header.index(b"'", at) + 1
    zeroed = header[:value_at] + b"0" * 16 + header[value_at + 16:]
    encoded = encode_checksum(~ones_complement_sum(zeroed, data_sum) & 0xFFFFFFFF)
    return zeroed[:value_at] + encoded.encode("ascii") + zeroed[value_at + 16:]


def _rewrite(path: str | os.PathLike, start: int, old_length: int, header: bytes, sync: bool) -> None:
    """Replace ``old_length`` header bytes at ``start`` by ``header``; the rest is copied as it is."""
    target = f"{path}.fill"
    try:
        with open(path, "rb") as source, open(target, "wb") as out:
            out.write(source.read(start))
            out.write(header)
            out.flush()
            source.seek(start + old_length)
            shutil.copyfileobj(source, out, CHUNK)  # (copy_file_range measured no faster here)
            if sync:
                out.flush()
                os.fsync(out.fileno())
        os.replace(target, path)
    except BaseException:
        _unlink(target)
        raise


def _fill(part: str, task: FileTask, sync: bool = True) -> int | None:
    """Fill a verified part's header; the new size, or None when it stays JSOC's file (a warning says why).

    A fill that fails never costs the file: JSOC's verified bytes are still a good file.
    """
    try:
        if fill_header(part, task.header or {}, sync=sync):
            return os.stat(part).st_size
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        log.warning("%s: header fill failed (%s); keeping the file as JSOC sent it", task.dest, exc)
    return None


_STRUCTURAL_KEYS = frozenset({
    "SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", "XTENSION", "PCOUNT", "GCOUNT", "TFIELDS",
    "BSCALE", "BZERO", "BLANK", "CHECKSUM", "DATASUM", "END", "ZIMAGE", "ZBITPIX", "ZNAXIS", "ZNAXIS1",
    "ZNAXIS2", "ZTILE1", "ZTILE2", "ZCMPTYPE", "ZNAME1", "ZVAL1", "ZNAME2", "ZVAL2", "ZQUANTIZ", "THEAP",
    "TTYPE1", "TFORM1", "ZSIMPLE", "ZTENSION", "ZPCOUNT", "ZGCOUNT", "ZDITHER0", "ZBLANK", "ZSCALE", "ZZERO",
    "EXTNAME", "HISTORY", "COMMENT",
})


# -- one file --------------------------------------------------------------------------------------
def part_name(dest: str, task: FileTask) -> str:
    folder, _, name = dest.rpartition("/")
    part = f".{name}{PART_MARK}{task.part_id}"
    return f"{folder}/{part}" if folder else part


def check_dest(dest: str) -> str:
    """A layout path must be relative and stay under the root (returned normalised: no ``.`` or
    empty components). String operations, not pathlib: this runs once per downloaded file."""
    parts = dest.split("/")
    clean = "/".join(part for part in parts if part not in ("", "."))
    if not clean or dest.startswith("/") or ".." in parts or "\\" in dest or "\0" in dest:
        raise ValueError(f"refusing destination {dest!r}: layout paths are relative and stay under the root")
    return clean


def _fetch_into(task: FileTask, part: str, policy: RetryPolicy, on_bytes: Callable[[int], None] | None,
                sync: bool = True, writeback: bool = False) -> tuple[int, FitsSums | None]:
    """GET ``task.url`` into ``part``, resuming what is there.

    Returns the total size, and the FITS sums of the body when this attempt received all of it
    (None otherwise, or for a file that is not FITS: verification then reads the file back).
    ``sync`` fsyncs the file; ``writeback`` only starts writing it out (a later sync finishes).
    """
    try:
        have = os.stat(part).st_size
    except FileNotFoundError:
        have = 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    seconds = policy.net.file_deadline(task.size)
    try:
        response = net.open_url(task.url, seconds=seconds, policy=policy.net, headers=headers,
                                what=f"GET {task.url}")
    except net.HttpStatus as exc:
        if exc.code == 416 and have:
            _unlink(part)
            raise _Retryable("server refused the resume range; starting over", resume=False) from None
        if exc.retryable:
            raise _Retryable(f"HTTP {exc.code}", wait=exc.retry_after) from None
        raise _Fatal(f"HTTP {exc.code} for {task.url}") from None
    except net.NetError as exc:
        if not exc.retryable:  # a redirect off the source's host: this file fails, nothing fetched
            raise _Fatal(str(exc)) from None
        raise _Retryable(f"connection failed: {exc}") from None
    with response:
        if have and response.status == 206:
            total = _range_total(response.headers.get("Content-Range"), have, response.headers.get("Content-Length"))
            mode = "ab"
        else:
            have = 0
            total = response.length
            mode = "wb"
        if task.size is not None and total is not None and total != task.size:
            raise _Retryable(f"server announced {total} bytes, expected {task.size}", resume=False)
        sums = FitsSums() if mode == "wb" and _looks_fits(task.dest) else None
        view = memoryview(_chunk_buffer())
        written = have
        try:
            with open(part, mode) as out:
                while n := response.readinto(view):  # no bytes object per read
                    piece = view[:n]
                    out.write(piece)
                    if sums is not None:
                        sums.feed(piece)
                    written += n
                    if on_bytes:
                        on_bytes(n)
                out.flush()
                if sync:
                    os.fsync(out.fileno())
                elif writeback:
                    _start_writeback(out.fileno())
        except net.ShortBody:
            raise _Retryable(f"body truncated at {written} bytes") from None
        except net.NetError as exc:
            raise _Retryable(f"cut at {written} bytes: {exc}") from None
        except OSError as exc:
            if exc.errno in (28, 30):  # ENOSPC, EROFS: no retry helps
                raise _Fatal(f"cannot write {part}: {exc}") from None
            raise _Retryable(f"cannot write {part} at {written} bytes: {exc}") from None
    if total is not None and written != total:
        if written > total:
            _unlink(part)
            raise _Retryable(f"got {written} bytes, more than the {total} announced", resume=False)
        raise _Retryable(f"body truncated: {written} of {total} bytes")
    return written, sums


def _range_total(content_range: str | None, have: int, length: str | None) -> int | None:
    if content_range and "/" in content_range:
        tail = content_range.rsplit("/", 1)[1].strip()
        if tail.isdigit():
            return int(tail)
    return have + int(length) if length is not None else None


def _verify(task: FileTask, path: str, sums: FitsSums | None = None) -> str:
    if not _looks_fits(task.dest):
        return "absent"
    try:
        return fits_checksum_state(path) if sums is None else sums.finish()
    except ValueError as exc:
        raise _Retryable(f"verification failed: {exc}", resume=False) from None


class _Target:
    """Where files land: a local directory, or any fsspec filesystem."""

    def __init__(self, root: str | os.PathLike, storage_options: dict | None = None):
        root = str(root)
        remote = "://" in root and not root.startswith("file://")
        self.fs, self.root = fsspec.core.url_to_fs(root, **((storage_options or {}) if remote else {}))
        self.local = "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,))
        self._staging: str | None = None
        self._made: set[str] = set()  # local directories known to exist (saves a mkdir per file)
        if not self.local:
            self._staging = tempfile.mkdtemp(prefix="jsocmirror-dl-")

    def close(self) -> None:
        if self._staging:
            shutil.rmtree(self._staging, ignore_errors=True)

    def local_part(self, dest: str, task: FileTask) -> str:
        """The temporary name to download into (strings, not pathlib: this runs once per file)."""
        if self.local:
            part = os.path.join(self.root, part_name(dest, task))
            folder = os.path.dirname(part)
            if folder not in self._made:
                os.makedirs(folder, exist_ok=True)
                self._made.add(folder)
            return part
        assert self._staging
        return os.path.join(self._staging, f"{task.part_id}.part")

    def final_path(self, dest: str, part: str) -> tuple[str, str]:
        """The layout path of a local part file, and its directory (the part's)."""
        folder = os.path.dirname(part)
        return f"{folder}/{dest.rpartition('/')[2]}", folder

    def commit(self, part: str, dest: str) -> None:
        if self.local:
            final = os.path.join(self.root, dest)
            os.replace(part, final)
            _fsync_dir(os.path.dirname(final))
            return
        remote_final = f"{self.root.rstrip('/')}/{dest}"
        remote_part = f"{self.root.rstrip('/')}/{part_name(dest, FileTask('', dest, '', '', ''))}"
        self.fs.makedirs(str(PurePosixPath(remote_final).parent), exist_ok=True)
        self.fs.put_file(part, remote_part)
        self.fs.mv(remote_part, remote_final)
        _unlink(part)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _fsync_dir(directory: str | os.PathLike) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@dataclass(frozen=True)
class _Verified:
    """A file fetched and verified under its temporary name, waiting for the batch sync + rename.

    The paths and the ``Landed`` record are made by the worker, so the calling thread's commit
    is a rename per file (its Python work competes with the workers for the GIL).
    """

    landed: Landed
    part: str
    final: str
    folder: str


def _download_one(task: FileTask, target: _Target, policy: RetryPolicy,
                  on_bytes: Callable[[int], None] | None, batch_sync: bool = False,
                  writeback: bool = False) -> Landed | FailedFile | _Verified:
    try:
        dest = check_dest(task.dest)
    except ValueError as exc:
        return FailedFile(task, str(exc), 0, retryable=False)
    part = target.local_part(dest, task)
    deferred = batch_sync and target.local
    last = "no attempt made"
    for attempt in range(1, policy.attempts + 1):
        try:
            size, sums = _fetch_into(task, part, policy, on_bytes, sync=not deferred, writeback=deferred and writeback)
            state = _verify(task, part, sums)
            if task.header:
                size = _fill(part, task, sync=not deferred) or size
            if deferred:
                return _Verified(Landed(task, dest, size, state), part, *target.final_path(dest, part))
            target.commit(part, dest)
            return Landed(task, dest, size, state)
        except _Fatal as exc:
            _unlink(part)
            return FailedFile(task, str(exc), attempt, retryable=False)
        except _Retryable as exc:
            last = str(exc)
            if not exc.resume:
                _unlink(part)
            if attempt < policy.attempts:
                pause = max(policy.sleep_for(attempt), exc.wait or 0.0)
                log.info("%s: %s; will retry %d more time(s) in %.1f s", dest, exc, policy.attempts - attempt, pause)
                time.sleep(pause)
        except Exception as exc:  # an unexpected failure must not kill the other downloads
            _unlink(part)
            return FailedFile(task, f"{type(exc).__name__}: {exc}", attempt, retryable=False)
    return FailedFile(task, f"gave up after {policy.attempts} attempts: {last}", policy.attempts)


def _start_writeback(fd: int) -> None:
    """Ask the kernel to start writing a file out now (Linux: fadvise DONTNEED starts writeback
    without waiting), so the group's sync finds little left to flush."""
    advise = getattr(os, "posix_fadvise", None)
    if advise is not None:
        try:
            advise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass


def _sync_filesystem(path: str) -> None:
    """Flush the filesystem holding ``path`` (Linux syncfs; elsewhere a full sync)."""
    syncfs = _syncfs()
    if syncfs is not None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            fd = None
        if fd is not None:
            try:
                if syncfs(fd) == 0:
                    return
            finally:
                os.close(fd)
    os.sync()


@functools.cache
def _syncfs() -> Callable[[int], int] | None:
    """libc's syncfs, looked up once (a ctypes.CDLL per call costs more than the call)."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None


# -- many files ------------------------------------------------------------------------------------
def download_files(tasks: Iterable[FileTask], root: str | os.PathLike, *, connections: int = 1,
                   policy: RetryPolicy | None = None,
                   on_landed: Callable[[Landed], None] | None = None,
                   on_failed: Callable[[FailedFile], None] | None = None,
                   on_bytes: Callable[[int], None] | None = None,
                   durability: str = "batch", storage_options: dict | None = None,
                   stop_at: float | None = None) -> Results:
    """Fetch every task into ``root`` with at most ``connections`` at once.

    ``on_landed``/``on_failed`` run in the calling thread (so they may write to the catalog),
    as each file lands; ``on_bytes`` runs in worker threads (tqdm's update is thread-safe).

    ``durability``: ``"file"`` fsyncs each file before its rename; ``"batch"`` (default) lets
    verified files wait under their temporary names and makes a group durable with one
    ``syncfs`` before renaming them all (an fsync per file costs ~7 ms here, more than the
    transfer of a 1 MB file); either way no file is renamed into place before it is on disk.
    ``"none"`` skips the sync: still verified and renamed atomically, so a killed process never
    leaves a partial file under its final name, but a power loss may (benchmark figures only).
    ``storage_options`` open a root that is not local (fsspec, e.g. ``[storage]`` of the config).
    ``stop_at`` (a ``time.monotonic()`` value, a run's deadline): no file is started after it; the
    files in flight finish and the rest are returned in ``results.unstarted``.
    """
    if connections < 1:
        raise ValueError(f"connections must be at least 1, not {connections}")
    if durability not in ("file", "batch", "none"):
        raise ValueError(f"durability must be 'file', 'batch' or 'none', not {durability!r}")
    policy = policy or RetryPolicy()
    results = Results()
    seen: set[str] = set()
    pending: deque[FileTask] = deque()
    for task in tasks:
        if task.dest in seen:  # two records can never share a layout path; refuse the second
            results.errors.append(FailedFile(task, f"duplicate destination {task.dest!r}", 0, False))
            continue
        seen.add(task.dest)
        pending.append(task)
    target = _Target(root, storage_options)
    committer = _BatchCommitter(target, results, on_landed, sync=durability == "batch")
    finished = _Finished(len(pending), group=committer.size)
    options = (target, policy, on_bytes, durability in ("batch", "none"), durability == "batch")

    def work() -> None:
        # Workers take tasks from a shared deque (popleft is thread-safe) rather than through an
        # executor: a Future per file (a Condition, an RLock, a callback) cost measurable GIL time.
        while True:
            try:
                task = pending.popleft()
            except IndexError:
                return
            try:
                outcome = _download_one(task, *options)
            except BaseException as exc:  # _download_one returns failures as data: a last resort
                outcome = FailedFile(task, f"{type(exc).__name__}: {exc}", 1, retryable=False)
            finished.put(outcome)

    workers = [threading.Thread(target=work, name=f"jsocmirror-dl-{i}") for i in range(min(connections, len(pending)))]
    try:
        for worker in workers:
            worker.start()
        while True:
            ready, all_done = finished.take(timeout=committer.seconds)
            for outcome in ready:
                if isinstance(outcome, FileTask):  # never started: the deadline came first
                    results.unstarted.append(outcome)
                    continue
                _handle(outcome, results, committer, on_landed, on_failed)
            if stop_at is not None and time.monotonic() >= stop_at:
                _drain(pending, finished)
            committer.flush_if_due()
            if all_done:
                break
    except BaseException:
        pending.clear()  # Ctrl-C: finish the files in flight, start no more
        raise
    finally:
        for worker in workers:
            if worker.ident is not None:  # started
                worker.join()
        committer.flush()
        target.close()
    return results


def _drain(pending: deque, finished: _Finished) -> None:
    """Take every task no worker has started, handing each back as unstarted."""
    while True:
        try:
            task = pending.popleft()
        except IndexError:
            return
        finished.put(task)


class _Finished:
    """Outcomes of finished downloads handed to the calling thread in groups.

    Waking the calling thread once per group rather than once per file (as ``as_completed``
    does) leaves the GIL to the workers: measured, the per-file wake-ups and their
    bookkeeping cost a third as much GIL time as the downloads themselves.
    """

    def __init__(self, expected: int, group: int):
        self._cond = threading.Condition()
        self._ready: list = []
        self._pending = expected
        self._group = group

    def put(self, outcome) -> None:
        with self._cond:
            self._ready.append(outcome)
            self._pending -= 1
            if len(self._ready) >= self._group or not self._pending:
                self._cond.notify()

    def take(self, timeout: float) -> tuple[list, bool]:
        """The outcomes so far (waiting up to ``timeout`` for a group), and whether that is all."""
        with self._cond:
            if len(self._ready) < self._group and self._pending:
                self._cond.wait(timeout)
            ready, self._ready = self._ready, []
            return ready, not self._pending


class _BatchCommitter:
    """Renames verified files into place in groups, after one filesystem sync per group."""

    def __init__(self, target: _Target, results: Results, on_landed, size: int = 64, seconds: float = 1.0,
                 sync: bool = True):
        self.target, self.results, self.on_landed, self.sync = target, results, on_landed, sync
        self.size, self.seconds = size, seconds
        self.waiting: list[_Verified] = []
        self.since = time.monotonic()

    def add(self, item: _Verified) -> None:
        if not self.waiting:
            self.since = time.monotonic()
        self.waiting.append(item)
        if len(self.waiting) >= self.size:
            self.flush()

    def flush_if_due(self) -> None:
        if self.waiting and time.monotonic() - self.since >= self.seconds:
            self.flush()

    def flush(self) -> None:
        items, self.waiting = self.waiting, []
        if not items:
            return
        if self.sync:
            _sync_filesystem(self.target.root)
        dirs = set()
        landed = []
        for item in items:
            try:
                os.replace(item.part, item.final)
            except OSError as exc:
                _unlink(item.part)
                self.results.errors.append(FailedFile(item.landed.task, f"cannot rename into place: {exc}", 1, False))
                continue
            dirs.add(item.folder)
            landed.append(item.landed)
        for directory in dirs if self.sync else ():
            _fsync_dir(directory)
        for item in landed:
            self.results.landed.append(item)
            if self.on_landed:
                self.on_landed(item)


def _handle(outcome, results: Results, committer: _BatchCommitter | None, on_landed, on_failed) -> None:
    """Record one outcome: verified files go to the committer, landed ones and failures to ``results``."""
    if isinstance(outcome, _Verified):
        committer.add(outcome)
    elif isinstance(outcome, Landed):
        results.landed.append(outcome)
        if on_landed:
            on_landed(outcome)
    else:
        results.errors.append(outcome)
        log.warning("%s %s: %s", outcome.task.series + outcome.task.record_key, outcome.task.segment, outcome.error)
        if on_failed:
            on_failed(outcome)


# -- url-tar ---------------------------------------------------------------------------------------
def extract_tar(tar_path: str | os.PathLike, members: Mapping[str, FileTask], root: str | os.PathLike,
                *, on_landed: Callable[[Landed], None] | None = None,
                storage_options: dict | None = None) -> Results:
    """Extract the regular-file members named in ``members`` (tar member name -> task) into the layout.

    The layout decides every path: a member is only ever written to its task's ``dest``. Members
    that are links, devices, absolute, contain ``..``, or are not expected are skipped (and logged).
    """
    results = Results()
    target = _Target(root, storage_options)
    found: set[str] = set()  # dests landed or failed (each in ``results``)
    try:
        with tarfile.open(tar_path, "r:*") as archive:
            for info in archive:
                name = info.name
                clean = PurePosixPath(name)
                if not info.isreg() or clean.is_absolute() or ".." in clean.parts or "\\" in name:
                    log.warning("tar %s: skipping unsafe member %r", tar_path, name)
                    continue
                task = members.get(name) or members.get(clean.name)
                if task is None or task.dest in found:
                    continue
                if task.size is not None and info.size != task.size:
                    outcome = FailedFile(task, f"tar member {name!r} holds {info.size} bytes, "
                                               f"the export listed {task.size}", 1)
                else:
                    outcome = _extract_member(archive, info, task, target)
                found.add(task.dest)  # after the extraction: a member cut short is reported below
                _handle(outcome, results, None, on_landed, None)
    except (tarfile.TarError, OSError, EOFError) as exc:
        for task in members.values():
            if task.dest not in found:
                results.errors.append(FailedFile(task, f"tar archive unreadable: {exc}", 1))
                found.add(task.dest)
    finally:
        target.close()
    for task in members.values():
        if task.dest not in found:
            results.errors.append(FailedFile(task, "missing from the tar archive", 1))
    return results


def _extract_member(archive: tarfile.TarFile, info: tarfile.TarInfo, task: FileTask,
                    target: _Target) -> Landed | FailedFile:
    try:
        dest = check_dest(task.dest)
    except ValueError as exc:
        return FailedFile(task, str(exc), 0, retryable=False)
    part = target.local_part(dest, task)
    try:
        source = archive.extractfile(info)
        if source is None:
            return FailedFile(task, "tar member has no data", 1)
        with source, open(part, "wb") as out:
            shutil.copyfileobj(source, out, CHUNK)
            out.flush()
            os.fsync(out.fileno())
        state = _verify(task, part)
        if task.header:
            _fill(part, task)
        size = os.stat(part).st_size
        target.commit(part, dest)
        return Landed(task, dest, size, state)
    except _Retryable as exc:
        _unlink(part)
        return FailedFile(task, str(exc), 1)
    except (tarfile.TarError, EOFError) as exc:  # the archive ends inside this member
        _unlink(part)
        return FailedFile(task, f"tar member cut short: {exc}", 1)
    except OSError as exc:
        _unlink(part)
        return FailedFile(task, f"cannot write: {exc}", 1)


def sweep_parts(root: str | os.PathLike, keep: Iterable[str] = ()) -> int:
    """Remove leftover ``.*.part-*`` files under a local root (except the parts in ``keep``)."""
    fs, base = fsspec.core.url_to_fs(str(root))
    if "file" not in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)):
        return 0
    keep_set = {str(Path(base) / k) for k in keep}
    removed = 0
    for dirpath, _dirs, files in os.walk(base):
        for name in files:
            if name.startswith(".") and PART_MARK in name:
                full = os.path.join(dirpath, name)
                if full not in keep_set:
                    try:
                        os.unlink(full)
                        removed += 1
                    except OSError:
                        pass
    return removed
