"""Errors as data: every failure the library reports derives from JsocMirrorError.

``exit_code`` is what the CLI exits with, the same for every command (docs/cli.md):

- 0: all done
- 1: finished, but some records or files failed (``UpdateSummary.exit_code``), or a runtime failure
- 2: a usage or configuration error (``UsageError`` and its kinds)
- 3: another run holds the mirror's lock (``LockedError``; after ``--wait`` expired, if given)
- 4: the source was unreachable or refused us (``SourceUnavailable``: network, a storm of 5xx
  replies, an email JSOC does not know for exports)

``kind`` names the error in ``--json`` output (``{"code": 3, "error": "locked", ...}``).
"""

from typing import Any

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_LOCKED = 3
EXIT_SOURCE = 4


class JsocMirrorError(Exception):
    exit_code = EXIT_FAILED
    kind = "failed"


class UsageError(JsocMirrorError):
    """Bad input from the user: a value that is not accepted. The message names it."""

    exit_code = EXIT_USAGE
    kind = "usage"


class ConfigError(UsageError):
    """The mirror's configuration is missing, malformed or names something JSOC does not have."""

    kind = "config"


class RecordSetError(UsageError):
    """A record-set string that cannot be parsed or does not fit its series."""


class CatalogError(JsocMirrorError):
    """The DuckDB catalog cannot be opened, migrated or written."""

    kind = "catalog"


class CatalogVersionError(CatalogError):
    """The catalog is from a newer jsocmirror (or DuckDB) than the one installed: an operator must
    install the right version (docs/upgrading.md); retrying cannot help, so it exits 2 like a
    configuration error."""

    exit_code = 2


class JsocError(JsocMirrorError):
    """JSOC (or the emulator) answered with an error or could not be reached."""

    kind = "source"


class SourceUnavailable(JsocError):
    """The source could not be reached (network, repeated 5xx) or refused us (unregistered email)."""

    exit_code = EXIT_SOURCE
    kind = "source_unavailable"


class SyncError(JsocMirrorError):
    pass


class ScanError(JsocMirrorError):
    pass


class StageError(JsocMirrorError):
    pass


class DownloadError(JsocMirrorError):
    pass


class DeadlineError(JsocMirrorError):
    """The run reached its deadline (``[run] max_hours``) and stopped where it was: what it had
    finished is kept, what is left (pending exports, unfetched files) waits for the next run."""

    kind = "deadline"


class LockedError(JsocMirrorError):
    """Another jsocmirror run holds the mirror's lock."""

    exit_code = EXIT_LOCKED
    kind = "locked"


def quoted(value: Any, width: int = 60) -> str:
    """A value as an error message quotes it: its repr, cut short if it is long (a server may send
    megabytes where a name belongs)."""
    text = repr(value)
    return text if len(text) <= width else text[:width - 4] + "...'"
