"""The search attrs only the mirror's client accepts (``sunpy.net.attrs.jsocmirror`` once
``jsocmirror.sunpy`` is imported).

``Mirror`` is what routes a query to the mirror: no other Fido client accepts a query holding
an attr it does not know, so a query with ``a.jsocmirror.Mirror(...)`` is answered by the
mirror alone, never by JSOC or the VSO.
"""

from __future__ import annotations

import os

from sunpy.net.attr import SimpleAttr

__all__ = ["Mirror"]


def __dir__():
    return __all__


class Mirror(SimpleAttr):
    """Answer this query from a local jsocmirror mirror (no network).

    Parameters
    ----------
    path : str or os.PathLike, optional
        The mirror directory (the one holding ``jsocmirror.toml``). Without it: the mirror
        ``jsocmirror.sunpy.use()`` chose, else the environment variable ``JSOCMIRROR_MIRROR``.
    """

    def __init__(self, path: str | os.PathLike | None = None):
        super().__init__(None if path is None else os.fspath(path))
