"""jsocmirror: keep a departmental mirror of SDO data from JSOC.

The library never configures logging: it logs to the ``jsocmirror`` logger and
leaves handlers to the application (the CLI adds one).
"""
import logging

__version__ = "0.1.0.dev0"

log = logging.getLogger("jsocmirror")
