"""One run at a time per mirror: an advisory lock on a file in the mirror directory.

``with mirror_lock(mirror_dir, "sync"):`` takes an exclusive ``flock`` on
``<mirror_dir>/.jsocmirror.lock``; a second process gets a one-line ``LockedError`` naming the
command and pid that hold it. The kernel drops the lock when its holder exits, however it dies
(Ctrl-C, SIGKILL, power loss), so a stale lock never blocks the next run and the file is never
deleted (deleting a lock file races with a process opening it).

The lock is re-entrant within a process: ``update`` can hold it and call ``sync``, which takes
it again without blocking itself.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from jsocmirror.errors import JsocMirrorError, LockedError

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


@contextmanager
def mirror_lock(mirror_dir: str | Path, command: str) -> Iterator[Path]:
    """Hold the mirror's lock for the duration of the block, or raise LockedError at once."""
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
    try:
        fd = os.open(key, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise JsocMirrorError(f"cannot create the lock file {path}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        info = holder(path.parent) or {}
        who = f"'{info.get('command', '?')}' (pid {info.get('pid', '?')}, since {info.get('since', '?')})"
        raise LockedError(f"another jsocmirror run {who} is using the mirror {path.parent}; wait for it to finish") from None
    try:
        record = json.dumps({"pid": os.getpid(), "command": command,
                             "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        os.ftruncate(fd, 0)
        os.pwrite(fd, record.encode(), 0)
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
