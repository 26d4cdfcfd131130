"""jsocmirror: keep a departmental mirror of SDO data from JSOC.

The library never configures logging: it logs to the ``jsocmirror`` logger and
leaves handlers to the application (the CLI adds one).
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from os import PathLike

    from jsocmirror.api import Mirror

__version__ = "0.1.0.dev0"

log = logging.getLogger("jsocmirror")


def open(path: str | PathLike[str] = ".", *, storage_options: dict | None = None) -> Mirror:  # noqa: A001
    """Open a mirror for reading: a ``Mirror`` (see ``jsocmirror.api``)."""
    from jsocmirror.api import open as _open

    return _open(path, storage_options=storage_options)


def __getattr__(name: str):
    if name == "Mirror":
        from jsocmirror.api import Mirror

        return Mirror
    raise AttributeError(f"module 'jsocmirror' has no attribute {name!r}")
