"""A sunpy Fido client over a local jsocmirror mirror (the ``jsocmirror[sunpy]`` extra).

Importing this module registers ``MirrorClient`` with Fido and the attrs
``sunpy.net.attrs.jsocmirror`` (``Mirror``); see docs/sunpy.md::

    from sunpy.net import Fido, attrs as a
    import jsocmirror.sunpy

    res = Fido.search(a.jsocmirror.Mirror("/data/sdo"), a.jsoc.Series("hmi.M_720s"),
                      a.Time("2024-06-30 00:00", "2024-06-30 06:00"))
    files = Fido.fetch(res)  # the mirror's local paths: no network

(Inside this package ``sunpy`` is the real sunpy: imports are absolute.)
"""

from __future__ import annotations

try:
    import sunpy.net  # noqa: F401
except ImportError as exc:  # pragma: no cover - the extra is not installed
    from jsocmirror.errors import UsageError

    raise UsageError("jsocmirror.sunpy needs sunpy with its net extra: pip install 'jsocmirror[sunpy]'") from exc

from jsocmirror.sunpy.attrs import Mirror
from jsocmirror.sunpy.client import MirrorClient, MirrorResponseTable, NotInMirror, fill, stop_using, use

__all__ = ["Mirror", "MirrorClient", "MirrorResponseTable", "NotInMirror", "fill", "stop_using", "use"]
