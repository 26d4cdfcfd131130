"""The JSOC emulator: a loopback HTTP server speaking JSOC's JSON protocol over a synthetic world.

``Emulator`` (server.py) owns the HTTP server and its routing table; ``World`` (world.py) is the
deterministic, changing set of records; ``query.py`` evaluates record sets over the world and
``info.py`` answers jsoc_info, show_series, showextseries and checkAddress.sh. The mirror's
stages never import this package; only the CLI and the tests do. See docs/emulator.md.
"""

from jsocmirror.emulator.server import Emulator, EmulatorConfig, Request, Response, json_response

__all__ = ["Emulator", "EmulatorConfig", "Request", "Response", "json_response"]
