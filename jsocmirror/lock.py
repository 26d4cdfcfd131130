"""One run at a time per mirror: an advisory lock on a file in the mirror directory.

``with mirror_lock(mirror_dir, "sync"):`` takes an exclusive ``flock`` on
``<mirror_dir>/.jsocmirror.lock``; a second process gets a one-line ``LockedError`` naming the
command and pid that hold it (``wait`` seconds polls for it first). The kernel drops the lock when
its holder exits, however it dies (Ctrl-C, SIGKILL, power loss), so a stale lock never blocks the
next run and the file is never deleted (deleting a lock file races with a process opening it).

Where the kernel cannot know the holder died (a lock on NFS left by a host that rebooted, or a
descriptor inherited by a stray child), the record in the file decides: a holder whose pid is
gone on this host, or whose host has booted since, is dead, and its lock file is replaced by a
new one (rename, then the inode is checked after locking, so two runs never both win).

The lock is re-entrant within a process: ``update`` can hold it and call ``sync``, which takes
it again without blocking itself.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from jsocmirror.errors import JsocMirrorError, LockedError

log = logging.getLogger("jsocmirror.lock")

LOCK_NAME = ".jsocmirror.lock"

_held: dict[str, tuple[int, int]] = {}  # resolved path -> (fd, depth), for re-entrancy
_guard = threading.Lock()


@contextmanager
def wait_for_file_lock(path: str | Path) -> Iterator[None]:
    """Block until this process holds an exclusive ``flock`` on ``path`` (created if missing).

    For short critical sections shared by processes (the emulator's state files), where waiting
    is right; a mirror run uses ``mirror_lock``, which refuses at once instead.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def lock_path(mirror_dir: str | Path) -> Path:
    return Path(mirror_dir) / LOCK_NAME


def holder(mirror_dir: str | Path) -> dict | None:
    """What the lock file says about its last holder (``pid``, ``command``, ``since``), if anything."""
    try:
        return json.loads(lock_path(mirror_dir).read_text(encoding="utf-8") or "null")
    except (OSError, ValueError):
        return None


#: How long a run that finds the lock taken waits for the holder's record: a holder writes it just
#: after its flock succeeds, so two runs started in the same instant would otherwise see an empty
#: file and name the holder '?' (pid ?).
RECORD_GRACE = 1.0


def settled_holder(mirror_dir: str | Path, grace: float = RECORD_GRACE) -> dict | None:
    """``holder()``, read again for up to ``grace`` seconds while the file holds no complete
    record yet (a holder between its flock and its write). None if none appears: a shared
    holder (a dry run) or a tool outside jsocmirror, which write none."""
    deadline = time.monotonic() + grace
    while True:
        info = holder(mirror_dir)
        if (info and info.get("pid")) or time.monotonic() >= deadline:
            return info
        time.sleep(0.02)


def boot_id() -> str:
    """This boot of this host (Linux); empty where the kernel does not say."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def pid_namespace() -> int | None:
    """This process's pid namespace (Linux): a pid means something only inside its own."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None


def holder_is_dead(info: dict | None) -> bool:
    """True when the recorded holder provably no longer runs (same host: pid gone or host rebooted)."""
    if not info or info.get("host") != socket.gethostname():
        return False  # another host's pid means nothing here; its kernel (or NFS lease) decides
    recorded_boot = info.get("boot_id")
    if recorded_boot and boot_id() and recorded_boot != boot_id():
        return True
    if info.get("pidns") is not None and info.get("pidns") != pid_namespace():
        return False  # a container sharing this host name: its pids are not ours to look up
    try:
        os.kill(int(info.get("pid")), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, TypeError, ValueError):
        return False
    return False


def _replace_dead_lock(path: Path, dead: dict) -> None:
    """Replace the lock file of a dead holder, once: two runs that both saw it dead take turns
    here, and the second finds the record changed (the first run's own) and leaves it."""
    with wait_for_file_lock(path.with_name(path.name + ".replace")):
        if holder(path.parent) != dead:
            return
        fresh = path.with_name(f"{path.name}.{os.getpid()}.new")
        fresh.write_text("", encoding="utf-8")
        os.replace(fresh, path)


@contextmanager
def mirror_lock(mirror_dir: str | Path, command: str, *, wait: float = 0.0) -> Iterator[Path]:
    """Hold the mirror's lock for the duration of the block.

    Another live holder: poll for up to ``wait`` seconds, then raise LockedError (exit code 3).
    """
    path = lock_path(mirror_dir).resolve()
    key = str(path)
    with _guard:
        if key in _held:
            fd, depth = _held[key]
            _held[key] = (fd, depth + 1)
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield path
        finally:
            with _guard:
                fd, depth = _held[key]
                _held[key] = (fd, depth - 1)
        return
    record = json.dumps({"pid": os.getpid(), "command": command, "host": socket.gethostname(),
                         "boot_id": boot_id(), "pidns": pid_namespace(),
                         "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    fd = _acquire(path, wait, record.encode())
    try:
        with _guard:
            _held[key] = (fd, 1)
        yield path
    finally:
        with _guard:
            _held.pop(key, None)
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        os.close(fd)  # closing releases the flock


def _acquire(path: Path, wait: float, record: bytes) -> int:
    """An fd holding the flock on the current inode of ``path``, with ``record`` written in it.

    LockedError when ``wait`` runs out. A dead holder's lock is replaced only when its record is
    the same on a second look half a second later: a live run that just took the lock writes its
    own record at once, and checks after writing that its inode is still the lock file.
    """
    deadline = time.monotonic() + max(wait, 0.0)
    announced = False
    dead_seen: dict | None = None
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise JsocMirrorError(f"cannot create the lock file {path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise JsocMirrorError(f"cannot lock {path}: {exc.strerror}") from None
            info = settled_holder(path.parent)
            if holder_is_dead(info) and info != dead_seen:
                dead_seen = info
                time.sleep(0.5)
                continue
            if holder_is_dead(info):
                log.warning("the run that holds %s (pid %s on %s) is dead; replacing its lock", path,
                            info.get("pid"), info.get("host"))
                _replace_dead_lock(path, info)
                continue
            if time.monotonic() >= deadline:
                raise LockedError(_locked_message(path, info or {}, wait)) from None
            if not announced:
                log.warning("%s; waiting up to %.0f s", _locked_message(path, info or {}, 0), wait)
                announced = True
            time.sleep(min(1.0, max(deadline - time.monotonic(), 0.05)))
            continue
        # the record over the old bytes, then cut to its length: a reader never sees an empty
        # file between the two (the old record, or the new one; settled_holder waits out a torn one)
        os.pwrite(fd, record, 0)
        os.ftruncate(fd, len(record))
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the file was replaced while we locked the old one: lock the new one


def _locked_message(path: Path, info: dict, wait: float) -> str:
    waited = f" (waited {wait:.0f} s)" if wait > 0 else ""
    if not info.get("pid"):  # a shared holder writes no record: a dry run, or something outside jsocmirror
        return (f"the lock of the mirror {path.parent} is held by a process that left no record (a dry run, "
                f"or a tool outside jsocmirror){waited}; try again later or use --wait SECONDS")
    where = f" on {info['host']}" if info.get("host") and info.get("host") != socket.gethostname() else ""
    who = f"'{info.get('command', '?')}' (pid {info.get('pid', '?')}{where}, since {info.get('since', '?')})"
    return f"another jsocmirror run {who} is using the mirror {path.parent}{waited}; try again later or use --wait SECONDS"


@contextmanager
def reading_lock(mirror_dir: str | Path, *, wait: float = 0.0) -> Iterator[None]:
    """Keep writers out while a dry run reads the catalog, without writing anything: a shared
    ``flock`` on the lock file (never created here: no file, no writer yet). A writer holding it:
    poll up to ``wait`` seconds, then LockedError (exit code 3)."""
    path = lock_path(mirror_dir)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        yield
        return
    deadline = time.monotonic() + max(wait, 0.0)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockedError(_locked_message(path, settled_holder(mirror_dir) or {}, wait)) from None
                time.sleep(min(1.0, max(deadline - time.monotonic(), 0.05)))
        yield
    finally:
        os.close(fd)
