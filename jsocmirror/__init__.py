"""jsocmirror: keep a departmental mirror of SDO data from JSOC.

The library never configures logging: it logs to the ``jsocmirror`` logger and
leaves handlers to the application (the CLI adds one).
"""
import logging

__version__ = "0.1.0.dev0"

log = logging.getLogger("jsocmirror")


def open(path=".", *, storage_options=None):  # noqa: A001 - jsocmirror.open, like io.open
    """Open a mirror for reading: a ``Mirror`` (see ``jsocmirror.api``)."""
    from jsocmirror.api import open as _open

    return _open(path, storage_options=storage_options)


def __getattr__(name):
    if name == "Mirror":
        from jsocmirror.api import Mirror

        return Mirror
    raise AttributeError(f"module 'jsocmirror' has no attribute {name!r}")
