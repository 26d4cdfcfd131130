"""Errors as data: every failure the library reports derives from JsocMirrorError.

``exit_code`` is what the CLI exits with: 2 for usage/config errors, 1 for runtime failures.
"""


class JsocMirrorError(Exception):
    exit_code = 1


class UsageError(JsocMirrorError):
    """Bad input from the user: a value that is not accepted. The message names it."""

    exit_code = 2


class ConfigError(UsageError):
    """The mirror's configuration is missing, malformed or names something JSOC does not have."""


class RecordSetError(UsageError):
    """A record-set string that cannot be parsed or does not fit its series."""


class CatalogError(JsocMirrorError):
    """The DuckDB catalog cannot be opened, migrated or written."""


class CatalogVersionError(CatalogError):
    """The catalog is from a newer jsocmirror (or DuckDB) than the one installed: an operator must
    install the right version (docs/upgrading.md); retrying cannot help, so it exits 2 like a
    configuration error."""

    exit_code = 2


class JsocError(JsocMirrorError):
    """JSOC (or the emulator) answered with an error or could not be reached."""


class SyncError(JsocMirrorError):
    pass


class ScanError(JsocMirrorError):
    pass


class StageError(JsocMirrorError):
    pass


class DownloadError(JsocMirrorError):
    pass


class LockedError(JsocMirrorError):
    """Another jsocmirror run holds the mirror's lock."""
