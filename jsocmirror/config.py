"""The mirror's configuration: ``<mirror>/jsocmirror.toml``.

A mirror is a directory holding ``jsocmirror.toml`` (this module), the DuckDB catalog
(``catalog.duckdb`` by default) and, unless the config points elsewhere, the data root
(``data/``). ``load_config(mirror_dir)`` reads and validates the file; ``save_config``
writes it back (atomically, with its explanatory comments). Unknown keys are refused at
load time so a typo never silently does nothing.

This module does no network I/O: checking a series entry against JSOC's definition of the
series is ``validate_series_entry(entry, series_def)``, which the CLI calls with the
definition it fetched through ``jsoc.py``.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Iterable

from jsocmirror import drmstime
from jsocmirror.errors import ConfigError, JsocMirrorError
from jsocmirror.net import NetPolicy

log = logging.getLogger("jsocmirror.config")

CONFIG_NAME = "jsocmirror.toml"
DEFAULT_CATALOG = "catalog.duckdb"
DEFAULT_DATA_ROOT = "data"
DEFAULT_READ_ROOT = "read"

METHODS = ("url_quick", "url", "url-tar")
#: The [section] tables of jsocmirror.toml, each a dataclass field of MirrorConfig, in file order.
SECTIONS = ("sync", "transfer", "network", "run", "verify", "retention", "storage")
PROTOCOLS = ("as-is", "fits")
ORPHAN_POLICIES = ("keep", "trash", "delete")
DEFAULT_TRASH = "trash"

_URL_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


# -- dataclasses ------------------------------------------------------------------------------
@dataclass
class SeriesConfig:
    """One mirrored series: which records (selection) and which segments.

    The selection is the record set ``series[start-end@cadence][key lists...][? filter ?]``.
    """

    #: Series name as JSOC spells it (``hmi.M_720s``); matched case-insensitively.
    series: str
    #: Segments to download (``magnetogram``); empty = none (keywords only).
    segments: list[str] = field(default_factory=list)
    #: First time of the window (any JSOC time string; no zone means UTC). None = the series' first record.
    start: str | None = None
    #: Last time of the window, inclusive. None = open: up to the series' newest record, at every sync.
    end: str | None = None
    #: Sampling cadence of the time prime key (a DRMS duration, ``12m``, ``1h``); None = every slot.
    cadence: str | None = None
    #: Value lists for other prime keys (``{"HARPNUM": [11465], "WAVELNTH": [171, 193]}``); absent = all.
    keys: dict[str, list[int | str]] = field(default_factory=dict)
    #: Keyword filter, the SQL inside JSOC's ``[? ... ?]`` (``QUALITY = 0``); None = no filter.
    filter: str | None = None
    #: Keywords to keep in the catalog (prime keys and QUALITY are always kept); None = all.
    keywords: list[str] | None = None
    #: Layout template for file paths (see docs/layout.md); None = the layout's default.
    layout: str | None = None
    #: Export method for this series (url_quick, url or url-tar); None = the [transfer] default.
    method: str | None = None
    #: Export protocol (as-is or fits); None = the [transfer] default.
    protocol: str | None = None
    #: Write the catalog's keywords into this series' as-is FITS headers; None = the [transfer] default.
    header_fill: bool | None = None
    #: Retention by the time prime key (``90d``, ``12h``, ``2w``): older records are not wanted; None = forever.
    keep: str | None = None
    #: Quota of this series' files (``2 TB``, ``500 GiB``, bytes); past it the oldest records go; None = none.
    max_bytes: str | int | None = None
    #: What happens to this series' orphaned files: keep, trash or delete; None = the [retention] default.
    orphans: str | None = None

    @property
    def keep_seconds(self) -> float | None:
        """``keep`` in seconds (None: keep forever)."""
        return None if self.keep is None else parse_age(self.keep)

    @property
    def max_bytes_value(self) -> int | None:
        """``max_bytes`` in bytes (None: no quota)."""
        return None if self.max_bytes is None else parse_size(self.max_bytes)

    def selection(self) -> dict[str, Any]:
        """The fields that decide which records are wanted (a change re-syncs the series)."""
        return {
            "start": self.start, "end": self.end, "cadence": self.cadence,
            "keys": {k.upper(): list(v) for k, v in sorted(self.keys.items())},
            "filter": self.filter, "keywords": self.keywords,
        }


@dataclass
class SyncConfig:
    """How ``jsocmirror sync`` talks to JSOC."""

    #: Trailing window re-fetched at every sync, before the watermark (a DRMS duration).
    recheck: str = "2d"
    #: Target number of records per rs_list request (JSOC has memory limits; keep <= 100000).
    chunk_records: int = 25000


@dataclass
class TransferConfig:
    """How exports and downloads behave (read by stage/download)."""

    #: Parallel download connections. JSOC asked SunPy to use one.
    max_connections: int = 1
    #: Default export method: url_quick (with as-is: files straight from their SUMS paths, no
    #: export queue, what JSOC prefers), url or url-tar.
    method: str = "url_quick"
    #: Default export protocol: as-is (JSOC's preference) or fits.
    protocol: str = "as-is"
    #: Seconds between export status polls (JSOC's own "wait" hint is honoured when longer).
    poll_interval: float = 5.0
    #: Export requests pending at once per email (JSOC allows 1).
    max_pending_exports: int = 1
    #: Seconds one run waits on one export (its polls, or JSOC's status-7 "busy") before it leaves
    #: the request pending for the next run.
    export_wait: float = 3600.0
    #: Hours after its submission a still-pending export is abandoned and its records asked for again.
    export_max_hours: float = 48.0
    #: Write the catalog's keywords into the header of as-is FITS files, so that they open as maps
    #: (the header's bytes then differ from JSOC's; DATASUM stays JSOC's). Per series: header_fill.
    header_fill: bool = True


@dataclass
class RunConfig:
    """Limits of one run of ``update`` or ``fetch``."""

    #: Stop the run after this many hours (a nightly job must end before the day's work starts):
    #: what it finished is kept, what is left waits for the next run, and it exits 1. Omit = no limit.
    max_hours: float | None = None


@dataclass
class VerifyConfig:
    """How ``update`` re-reads the mirror's files to find damage (a rotating slice each night)."""

    #: Re-verify files in every update (the rotating slice; damaged files are refetched that night).
    enabled: bool = True
    #: Every file is re-read at least once in this many nights (the slice is 1/cycle_days of the mirror).
    cycle_days: int = 30
    #: Seconds of reading per update at most; what is left waits for the next night (oldest first).
    budget_seconds: float = 600.0


@dataclass
class RetentionConfig:
    """Mirror-wide settings of retention (``jsocmirror prune`` and the end of ``update``)."""

    #: Where trashed files go, as <trash>/<UTC date>/<layout path>: a directory inside the mirror.
    trash: str = DEFAULT_TRASH
    #: Days a trashed file is kept before the trash folder of its day is emptied.
    trash_days: int | float = 7
    #: Never remove more than this fraction of a series' files in one run (a truncated catalog would).
    max_delete_fraction: float = 0.1
    #: Orphaned files of series whose entry sets no 'orphans' (and of unconfigured series): keep, trash or delete.
    orphans: str = "keep"


@dataclass
class StorageConfig:
    """fsspec ``storage_options`` for the object-storage roots (data and read); local roots ignore them.

    The names are s3fs's (``S3FileSystem(endpoint_url=..., profile=..., anon=...)``); other
    backends (gcsfs, adlfs) take theirs through ``options``. Each can be overridden from the
    environment as ``JSOCMIRROR_STORAGE_<NAME>`` (tables as JSON); the AWS_* variables s3fs
    reads (AWS_PROFILE, AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL...) work as well.
    """

    #: S3-compatible endpoint (MinIO, Ceph, a cloud's S3 gateway); omit = AWS itself.
    endpoint_url: str | None = None
    #: Named profile of ~/.aws/credentials and ~/.aws/config; omit = the default credential chain.
    profile: str | None = None
    #: Anonymous access (public buckets, no credentials at all).
    anon: bool | None = None
    #: Access key id. Discouraged: a profile or the environment keeps secrets out of this file.
    key: str | None = None
    #: Secret access key. Discouraged, as key.
    secret: str | None = None
    #: Keyword arguments of the storage client (s3fs: botocore's, e.g. {region_name = "eu-west-1"}).
    client_kwargs: dict[str, Any] = field(default_factory=dict)
    #: Any other fsspec options, passed as they are (for backends other than s3fs, or rarer s3fs settings).
    options: dict[str, Any] = field(default_factory=dict)


#: ``[storage]`` settings the environment can override: ``JSOCMIRROR_STORAGE_<NAME upper-cased>``.
STORAGE_ENV_PREFIX = "JSOCMIRROR_STORAGE_"


def storage_options(storage: StorageConfig | None = None, environ: dict[str, str] | None = None) -> dict[str, Any]:
    """The fsspec ``storage_options`` of a ``[storage]`` section, with the environment's overrides.

    ``storage=None`` gives the environment's alone (a reader opening ``s3://...`` with no config).
    """
    storage = storage or StorageConfig()
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {f.name: getattr(storage, f.name) for f in fields(StorageConfig)}
    for f in fields(StorageConfig):
        text = env.get(STORAGE_ENV_PREFIX + f.name.upper())
        if text is not None and text != "":
            values[f.name] = _storage_env_value(f.name, text)
    out = dict(values.pop("options") or {})
    out.update({k: v for k, v in values.items() if v is not None and v != {}})
    return out


#: The proxy variables requests reads (either case); NO_PROXY is a list of names, anything goes.
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
PROXY_SCHEMES = ("http", "https", "socks4", "socks4a", "socks5", "socks5h")


def check_proxy_environment(environ: dict[str, str] | None = None) -> None:
    """ConfigError naming a proxy variable whose value is no proxy URL (``http://proxy:3128``;
    ``proxy:3128`` counts as http:// as requests reads it): a typo there would otherwise surface
    as a name-resolution failure blamed on JSOC."""
    from urllib.parse import urlsplit

    env = os.environ if environ is None else environ
    for name in PROXY_VARIABLES:
        for var in (name, name.lower()):
            text = env.get(var)
            if not text or not text.strip():
                continue
            url = text.strip() if "://" in text else "http://" + text.strip()
            try:
                parts = urlsplit(url)
                port = parts.port
                host = parts.hostname
            except ValueError:
                host, port, parts = None, None, None
            if parts is None or parts.scheme.lower() not in PROXY_SCHEMES or not host \
                    or not re.fullmatch(r"[A-Za-z0-9._~%-]+|[0-9A-Fa-f:.]+", host) or (port is not None and not 0 < port < 65536):
                raise ConfigError(f"{var}={_shown(text)} is not a proxy URL; give e.g. http://proxy.example.org:3128 "
                                  f"({', '.join(PROXY_SCHEMES)}), or unset it")


def _storage_env_value(name: str, text: str) -> Any:
    var = STORAGE_ENV_PREFIX + name.upper()
    if name == "anon":
        lowered = text.strip().lower()
        if lowered not in ("1", "0", "true", "false", "yes", "no"):
            raise ConfigError(f"{var}={text!r} is not accepted; use true or false")
        return lowered in ("1", "true", "yes")
    if name in ("client_kwargs", "options"):
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if not isinstance(value, dict):
            raise ConfigError(f"{var} must be a JSON object, e.g. {{\"region_name\": \"eu-west-1\"}}")
        return value
    if name == "endpoint_url" and not re.match(r"^https?://[^/\s]+", text):
        raise ConfigError(f"{var}={text!r} is not an http(s):// URL (e.g. https://s3.example.org)")
    return text


@dataclass
class MirrorConfig:
    """A mirror: where it is, which server it talks to, and what it mirrors."""

    mirror_dir: Path
    #: ``jsoc`` (the real JSOC), ``embedded`` (the built-in emulator) or a server URL.
    server: str = "jsoc"
    #: The email address registered with JSOC (needed for exports).
    email: str | None = None
    #: Catalog file, relative to the mirror directory unless absolute.
    catalog: str = DEFAULT_CATALOG
    #: Data root: a path relative to the mirror directory, an absolute path or any fsspec URL.
    data: str = DEFAULT_DATA_ROOT
    #: The readers' copy of the catalog (Parquet behind a views-only DuckDB file, docs/sql.md): a
    #: path relative to the mirror directory, an absolute path or an fsspec URL.
    read: str = DEFAULT_READ_ROOT
    series: list[SeriesConfig] = field(default_factory=list)
    sync: SyncConfig = field(default_factory=SyncConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    #: Timeouts, deadlines and the redirect rule of every request (net.py's NetPolicy).
    network: NetPolicy = field(default_factory=NetPolicy)
    run: RunConfig = field(default_factory=RunConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)

    def storage_options(self) -> dict[str, Any]:
        """fsspec ``storage_options`` for the data and read roots: ``[storage]`` with the environment's overrides."""
        return storage_options(self.storage)

    @property
    def config_path(self) -> Path:
        return self.mirror_dir / CONFIG_NAME

    @property
    def catalog_path(self) -> Path:
        path = Path(self.catalog).expanduser()
        return path if path.is_absolute() else self.mirror_dir / path

    @property
    def data_root(self) -> str:
        """The data root as an fsspec URL or an absolute local path."""
        return self._location(self.data)

    @property
    def read_root(self) -> str:
        """Where the readers' copy is published: an fsspec URL or an absolute local path."""
        return self._location(self.read)

    def _location(self, value: str) -> str:
        """A configured location: a URL as it is, a path relative to the mirror directory made absolute."""
        if _URL_RE.match(value):
            return value
        path = Path(value).expanduser()
        return str(path if path.is_absolute() else self.mirror_dir / path)

    def scratch_dir(self) -> str:
        """``<mirror>/.tmp``, created: where files are built before a rename or an upload moves them."""
        path = self.mirror_dir / ".tmp"
        path.mkdir(parents=True, exist_ok=True)
        return str(path)

    def get_series(self, name: str) -> SeriesConfig:
        """The entry of a configured series (case-insensitive), or a ConfigError listing them."""
        for entry in self.series:
            if entry.series.lower() == name.strip().lower():
                return entry
        raise ConfigError(
            f"series {name!r} is not configured in {self.config_path}; "
            + _choices_text(name, [s.series for s in self.series], what="configured series")
        )

    def method_for(self, entry: SeriesConfig) -> str:
        return entry.method or self.transfer.method

    def protocol_for(self, entry: SeriesConfig) -> str:
        return entry.protocol or self.transfer.protocol

    def header_fill_for(self, entry: SeriesConfig) -> bool:
        """Whether this series' files get the catalog's keywords: only as-is files (a fits export
        already has JSOC's full header)."""
        if self.protocol_for(entry) != "as-is":
            return False
        return self.transfer.header_fill if entry.header_fill is None else entry.header_fill

    def quota_for(self, entry: SeriesConfig) -> int | None:
        """The series' quota in bytes (None: no quota)."""
        return entry.max_bytes_value

    def orphans_for(self, entry: SeriesConfig | None) -> str:
        """What happens to a series' orphans (``entry`` None: a series the config does not name)."""
        return (entry.orphans if entry is not None else None) or self.retention.orphans

    @property
    def trash_root(self) -> str:
        """The trash directory as an absolute local path."""
        return self._location(self.retention.trash)


# -- finding the mirror -----------------------------------------------------------------------
def find_mirror(start: str | Path | None = None) -> Path:
    """The first directory holding ``jsocmirror.toml``, from ``start`` (default: the current
    directory) up to the filesystem root, as git finds its repository. ConfigError if none."""
    here = Path(start if start is not None else Path.cwd()).expanduser().resolve()
    for directory in (here, *here.parents):
        if (directory / CONFIG_NAME).is_file():
            return directory
    raise ConfigError(f"no {CONFIG_NAME} in {here} or any directory above it: pass -m/--mirror DIR "
                      "(or set JSOCMIRROR_MIRROR), or create a mirror with 'jsocmirror init'")


# -- loading ----------------------------------------------------------------------------------
def load_config(mirror_dir: str | Path) -> MirrorConfig:
    """Read and validate ``<mirror_dir>/jsocmirror.toml``. Raises ConfigError (one line) on any problem."""
    mirror_dir = Path(mirror_dir).expanduser().resolve()
    path = mirror_dir / CONFIG_NAME
    if not path.is_file():
        raise ConfigError(f"{mirror_dir} is not a jsocmirror mirror (no {CONFIG_NAME}); create one with 'jsocmirror init'")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    config = config_from_dict(raw, mirror_dir)
    config.storage_options()  # a bad JSOCMIRROR_STORAGE_* value fails here, before any work
    for name in ("data", "read"):
        check_local_root(getattr(config, f"{name}_root"), f"{name} = {_shown(getattr(config, name))}")
    if config.storage.secret and path.stat().st_mode & 0o077:
        log.warning("%s holds [storage] secret and others can read it: use a profile or the environment "
                    "(AWS_SECRET_ACCESS_KEY), or chmod 600 it", path)
    return config


def config_from_dict(raw: dict[str, Any], mirror_dir: str | Path) -> MirrorConfig:
    """A validated MirrorConfig from parsed TOML."""
    raw = dict(raw)
    series_raw = raw.pop("series", [])
    sync_raw = raw.pop("sync", {})
    transfer_raw = raw.pop("transfer", {})
    network_raw = raw.pop("network", {})
    run_raw = raw.pop("run", {})
    verify_raw = raw.pop("verify", {})
    retention_raw = raw.pop("retention", {})
    storage_raw = raw.pop("storage", {})
    top = _take_fields(MirrorConfig, raw, "top level",
                       skip={"mirror_dir", "series", *SECTIONS})
    if not isinstance(series_raw, list):
        raise ConfigError("'series' must be a list of [[series]] tables")
    config = MirrorConfig(
        mirror_dir=Path(mirror_dir).expanduser().resolve(),
        series=[_series_from_dict(item, i) for i, item in enumerate(series_raw)],
        sync=SyncConfig(**_take_fields(SyncConfig, _table(sync_raw, "sync"), "[sync]")),
        transfer=TransferConfig(**_take_fields(TransferConfig, _table(transfer_raw, "transfer"), "[transfer]")),
        network=NetPolicy(**_take_fields(NetPolicy, _table(network_raw, "network"), "[network]")),
        run=RunConfig(**_take_fields(RunConfig, _table(run_raw, "run"), "[run]")),
        verify=VerifyConfig(**_take_fields(VerifyConfig, _table(verify_raw, "verify"), "[verify]")),
        retention=RetentionConfig(**_take_fields(RetentionConfig, _table(retention_raw, "retention"), "[retention]")),
        storage=StorageConfig(**_take_fields(StorageConfig, _table(storage_raw, "storage"), "[storage]")),
        **top,
    )
    validate_config(config)
    return config


def _table(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"[{name}] must be a table")
    return dict(value)


def _take_fields(cls, raw: dict[str, Any], where: str, skip: Iterable[str] = ()) -> dict[str, Any]:
    names = [f.name for f in fields(cls) if f.name not in set(skip)]
    unknown = [k for k in raw if k not in names]
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} in {where}; " + _choices_text(unknown[0], names, what="keys"))
    return {k: v for k, v in raw.items()}


def _series_from_dict(item: Any, index: int) -> SeriesConfig:
    if not isinstance(item, dict):
        raise ConfigError(f"[[series]] entry {index + 1} must be a table")
    item = dict(item)
    if "series" not in item:
        raise ConfigError(f"[[series]] entry {index + 1} has no 'series' name")
    values = _take_fields(SeriesConfig, item, f"[[series]] {item.get('series')!r}")
    keys = values.get("keys") or {}
    if not isinstance(keys, dict):
        raise ConfigError(f"[[series]] {item.get('series')!r}: keys = {_shown(keys)} is not accepted: give a table of "
                          "prime key = [values], e.g. keys = {HARPNUM = [11465]}")
    values["keys"] = {str(k): list(v) if isinstance(v, list) else [v] for k, v in keys.items()}
    for name in ("start", "end", "cadence", "filter", "layout", "method", "protocol", "keep", "orphans"):
        if values.get(name) == "":
            values[name] = None
    return SeriesConfig(**values)


def _shown(value: Any) -> str:
    """A bad value as the TOML a person wrote (``"HARPNUM"``, ``5``), kept short."""
    try:
        text = _toml_value(value)
    except ConfigError:
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# -- validation (local: no JSOC needed) --------------------------------------------------------
def validate_config(config: MirrorConfig) -> None:
    """Check types and values that need no JSOC. Raises ConfigError naming the bad value."""
    if not isinstance(config.server, str) or not config.server:
        raise ConfigError("'server' must be \"jsoc\", \"embedded\" or a URL such as http://127.0.0.1:8080/")
    if config.server not in ("jsoc", "embedded") and not re.match(r"^https?://", config.server):
        raise ConfigError(f"server {config.server!r} is not accepted: use \"jsoc\", \"embedded\" or an http(s):// URL")
    if config.email is not None and (not isinstance(config.email, str) or not _EMAIL_RE.match(config.email)):
        raise ConfigError(f"email {config.email!r} is not an email address (expected e.g. you@example.org)")
    for name in ("catalog", "data", "read"):
        if not isinstance(getattr(config, name), str) or not getattr(config, name):
            raise ConfigError(f"'{name}' must be a non-empty string")
    for name in ("data", "read"):
        check_protocol(getattr(config, name), f"{name} = {_shown(getattr(config, name))}")
    validate_sync(config.sync)
    validate_transfer(config.transfer)
    validate_network(config.network)
    validate_run(config.run)
    validate_verify(config.verify)
    validate_retention(config)
    validate_storage(config.storage)
    seen: dict[str, str] = {}
    for entry in config.series:
        validate_series_entry(entry)
        key = entry.series.lower()
        if key in seen:
            raise ConfigError(f"series {entry.series!r} is configured twice; keep one [[series]] entry per series")
        seen[key] = entry.series


def check_protocol(value: str, where: str) -> None:
    """An fsspec URL's protocol must be one fsspec knows (``s3``, ``gcs``, ``memory``...): the
    typo is a config error, found at load time rather than part way through a run."""
    match = _URL_RE.match(value)
    if not match:
        return
    protocol = value.split("://", 1)[0].lower()
    from fsspec.registry import known_implementations, registry

    known = sorted(set(known_implementations) | set(registry))
    if protocol not in known:
        near = difflib.get_close_matches(protocol, known, n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(near)}? " if near else ""
        raise ConfigError(f"{where}: unknown storage protocol {protocol!r}; {hint}use a local path or an fsspec URL "
                          f"(s3://bucket/sdo, gs://, az://, file://...; fsspec knows {len(known)} protocols)")


def check_local_root(root: str, where: str) -> None:
    """A local root (data, read) must be a directory or not exist yet, and nothing above it may be
    a file: otherwise every command would fail part way, on its first write."""
    if _URL_RE.match(root) and not root.startswith("file://"):
        return
    path = Path(root[len("file://"):] if root.startswith("file://") else root).expanduser()
    for above in (path, *path.parents):
        try:
            if not above.exists():
                continue
        except OSError:  # a name too long, a loop of links: the write would fail the same way
            raise ConfigError(f"{where}: {path} is not a usable directory path") from None
        if above.is_dir():
            return
        what = "is a file" if above == path else f"lies under {above}, which is a file"
        raise ConfigError(f"{where}: {path} {what}; give a directory (or a path that does not exist yet)")


def check_writable_root(root: str, where: str) -> None:
    """A local root that a run writes to: created if missing, and a file can be made in it
    (tried with a temporary file, removed at once). A runtime error (exit 1) naming it otherwise:
    permissions are the machine's state, not the config's (a path under a file is ConfigError)."""
    if _URL_RE.match(root) and not root.startswith("file://"):
        return
    import tempfile

    path = Path(root[len("file://"):] if root.startswith("file://") else root).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".jsocmirror-write-test-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise JsocMirrorError(f"{where}: cannot write in {path} ({exc.strerror or exc}); give a directory this "
                              "user can write, or change its permissions") from None


def validate_sync(sync: SyncConfig) -> None:
    _check_duration(sync.recheck, "[sync] recheck")
    if not isinstance(sync.chunk_records, int) or isinstance(sync.chunk_records, bool) or not (
        100 <= sync.chunk_records <= 1_000_000
    ):
        raise ConfigError(f"[sync] chunk_records {sync.chunk_records!r} must be an integer from 100 to 1000000")


def validate_transfer(transfer: TransferConfig) -> None:
    if not isinstance(transfer.max_connections, int) or isinstance(transfer.max_connections, bool) or not (
        1 <= transfer.max_connections <= 64
    ):
        raise ConfigError(f"[transfer] max_connections {transfer.max_connections!r} must be an integer from 1 to 64")
    _check_choice(transfer.method, METHODS, "[transfer] method")
    _check_choice(transfer.protocol, PROTOCOLS, "[transfer] protocol")
    if isinstance(transfer.poll_interval, bool) or not isinstance(transfer.poll_interval, (int, float)) or not (
        0 < transfer.poll_interval <= 3600
    ):
        raise ConfigError(f"[transfer] poll_interval {transfer.poll_interval!r} must be a number of seconds in (0, 3600]")
    if isinstance(transfer.max_pending_exports, bool) or not isinstance(transfer.max_pending_exports, int) or not (
        1 <= transfer.max_pending_exports <= 10
    ):
        raise ConfigError(f"[transfer] max_pending_exports {transfer.max_pending_exports!r} must be an integer from 1 to 10")
    if not isinstance(transfer.header_fill, bool):
        raise ConfigError(f"[transfer] header_fill {transfer.header_fill!r} must be true or false")
    _check_number(transfer.export_wait, 1, 7 * 86400, "[transfer] export_wait", "seconds")
    _check_number(transfer.export_max_hours, 1, 24 * 30, "[transfer] export_max_hours", "hours")


def validate_run(run: RunConfig) -> None:
    if run.max_hours is not None:
        _check_number(run.max_hours, 0.001, 24 * 7, "[run] max_hours", "hours (omit it for no limit)")


def _check_number(value: Any, low: float, high: float, where: str, unit: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (low <= value <= high):
        raise ConfigError(f"{where} {value!r} must be a number from {low:g} to {high:g} {unit}")


_NETWORK_BOUNDS = {  # name: (lowest, highest) accepted
    "connect_timeout": (0.1, 600), "idle_timeout": (0.1, 3600), "metadata_seconds": (1, 86400),
    "poll_seconds": (1, 3600), "file_seconds": (1, 86400), "file_min_rate": (1, 10**12),
    "max_redirects": (0, 10), "max_json_bytes": (1 << 20, 1 << 40), "max_retry_after": (0, 3600),
}


def validate_network(network: NetPolicy) -> None:
    for name, (low, high) in _NETWORK_BOUNDS.items():
        value = getattr(network, name)
        integral = name in ("max_redirects", "max_json_bytes")
        kinds = int if integral else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds) or not (low <= value <= high):
            what = "an integer" if integral else "a number"
            raise ConfigError(f"[network] {name} {value!r} must be {what} from {low:g} to {high:g}")


def validate_verify(verify: VerifyConfig) -> None:
    if not isinstance(verify.enabled, bool):
        raise ConfigError(f"[verify] enabled {verify.enabled!r} must be true or false")
    if not isinstance(verify.cycle_days, int) or isinstance(verify.cycle_days, bool) or not (
        1 <= verify.cycle_days <= 3650
    ):
        raise ConfigError(f"[verify] cycle_days {verify.cycle_days!r} must be an integer from 1 to 3650 (nights)")
    if isinstance(verify.budget_seconds, bool) or not isinstance(verify.budget_seconds, (int, float)) or not (
        0 < verify.budget_seconds <= 86400
    ):
        raise ConfigError(f"[verify] budget_seconds {verify.budget_seconds!r} must be a number of seconds in (0, 86400]")


def validate_retention(config: MirrorConfig) -> None:
    """The [retention] section, and trash only where a trash can be (a local data root)."""
    ret = config.retention
    if not isinstance(ret.trash, str) or not ret.trash or _URL_RE.match(ret.trash):
        raise ConfigError(f"[retention] trash {ret.trash!r} must be a local directory (relative to the mirror or absolute)")
    if isinstance(ret.trash_days, bool) or not isinstance(ret.trash_days, (int, float)) or not 0 <= ret.trash_days <= 3650:
        raise ConfigError(f"[retention] trash_days {ret.trash_days!r} must be a number of days from 0 to 3650")
    fraction = ret.max_delete_fraction
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise ConfigError(f"[retention] max_delete_fraction {fraction!r} must be a number in (0, 1] (0.1 = a tenth)")
    _check_choice(ret.orphans, ORPHAN_POLICIES, "[retention] orphans")
    trash = os.path.realpath(config.trash_root)
    mirror = os.path.realpath(config.mirror_dir)
    if not trash.startswith(mirror + os.sep):
        raise ConfigError(f"[retention] trash {ret.trash!r} must be a directory inside the mirror {config.mirror_dir} "
                          "(the default: \"trash\")")
    if "://" not in config.data or config.data.startswith("file://"):
        data = os.path.realpath(config.data_root.removeprefix("file://"))
        if trash == data or trash.startswith(data + os.sep) or data.startswith(trash + os.sep):
            raise ConfigError(f"[retention] trash {ret.trash!r} overlaps the data root {config.data_root}; "
                              "put it beside the data root (the default: <mirror>/trash)")
    elif "trash" in {config.orphans_for(e) for e in config.series} | {ret.orphans}:
        raise ConfigError(f"orphans = \"trash\" needs a local data root, and {config.data} is object storage "
                          "(jsocmirror does not move objects into a trash): use \"delete\" or \"keep\"")


def validate_storage(storage: StorageConfig, where: str = "[storage]") -> None:
    for name in ("endpoint_url", "profile", "key", "secret"):
        value = getattr(storage, name)
        if value is not None and (not isinstance(value, str) or not value):
            raise ConfigError(f"{where} {name} {value!r} must be a non-empty string")
    if storage.endpoint_url is not None and not re.match(r"^https?://[^/\s]+", storage.endpoint_url):
        raise ConfigError(f"{where} endpoint_url {storage.endpoint_url!r} is not an http(s):// URL "
                          "(e.g. https://s3.example.org)")
    if storage.anon is not None and not isinstance(storage.anon, bool):
        raise ConfigError(f"{where} anon {storage.anon!r} must be true or false")
    for name in ("client_kwargs", "options"):
        if not isinstance(getattr(storage, name), dict):
            raise ConfigError(f"{where} {name} must be a table (e.g. {name} = {{region_name = \"eu-west-1\"}})")


def validate_series_entry(entry: SeriesConfig, series_def=None) -> None:
    """Check one entry; with ``series_def`` (a ``series.SeriesDef``) also check its names against it.

    Raises ConfigError naming the bad value and listing what is valid, closest matches first.
    """
    where = f"series {entry.series!r}"
    if not isinstance(entry.series, str) or not re.match(r"^[A-Za-z0-9_]+\.[A-Za-z0-9_]+$", entry.series):
        raise ConfigError(f"series name {entry.series!r} is not a JSOC series name (expected e.g. hmi.M_720s)")
    _check_str_list(entry.segments, f"{where}: segments")
    start = _check_time(entry.start, f"{where}: start")
    end = _check_time(entry.end, f"{where}: end")
    if start is not None and end is not None and end < start:
        raise ConfigError(f"{where}: end {entry.end!r} is before start {entry.start!r}")
    if entry.cadence is not None:
        _check_duration(entry.cadence, f"{where}: cadence")
    if not isinstance(entry.keys, dict):
        raise ConfigError(f"{where}: keys must be a table of prime key = [values]")
    for key, values in entry.keys.items():
        if not values or not all(isinstance(v, (int, str)) and not isinstance(v, bool) for v in values):
            raise ConfigError(f"{where}: keys.{key} must be a non-empty list of integers or strings")
        for v in values:
            if isinstance(v, str) and re.search(r"[\[\]{},]", v):
                raise ConfigError(f"{where}: keys.{key} value {v!r} may not contain [ ] {{ }} or ,")
    if entry.filter is not None:
        if not isinstance(entry.filter, str):
            raise ConfigError(f"{where}: filter must be a string (the SQL inside [? ?])")
        check_filter(entry.filter, series_def, where)
    if entry.keywords is not None:
        _check_str_list(entry.keywords, f"{where}: keywords")
    if entry.layout is not None and not isinstance(entry.layout, str):
        raise ConfigError(f"{where}: layout must be a string template")
    if entry.method is not None:
        _check_choice(entry.method, METHODS, f"{where}: method")
    if entry.protocol is not None:
        _check_choice(entry.protocol, PROTOCOLS, f"{where}: protocol")
    if entry.header_fill is not None and not isinstance(entry.header_fill, bool):
        raise ConfigError(f"{where}: header_fill {entry.header_fill!r} must be true or false (omit it for the "
                          "[transfer] default)")
    _check_retention_entry(entry, where)
    if series_def is not None:
        _check_against_definition(entry, series_def, where)


def check_download_settings(entry: SeriesConfig, series_def) -> None:
    """What ``update`` needs to download an entry's files, checked when the entry is added.

    A download setting without segments would make a keywords-only entry that downloads
    nothing, silently; a layout template must name every prime key and the segment, or the
    scan could not tell which record a file holds.
    """
    where = f"series {entry.series!r}"
    given = [f"{name} = {_toml_value(value)}" for name, value in (("method", entry.method), ("protocol", entry.protocol),
             ("layout", entry.layout), ("header_fill", entry.header_fill)) if value is not None]
    if given and not entry.segments:
        names = [s.name for s in series_def.segments]
        what = "is a download setting" if len(given) == 1 else "are download settings"
        raise ConfigError(f"{where}: {', '.join(given)} {what}, and no segments are chosen, so nothing would be "
                          f"downloaded: add segments ({', '.join(names) or 'the series has none'}), or leave "
                          f"{'it' if len(given) == 1 else 'them'} out for a keywords-only entry")
    if entry.layout is not None:
        from jsocmirror.layout import LayoutError, validate_template

        try:
            validate_template(series_def, entry.layout)
        except LayoutError as exc:
            raise ConfigError(f"{where}: {exc}") from None


def _check_against_definition(entry: SeriesConfig, sdef, where: str) -> None:
    segment_names = [s.name for s in sdef.segments]
    for seg in entry.segments:
        if sdef.segment(seg) is None:
            raise ConfigError(f"{where}: unknown segment {seg!r}; " + _choices_text(seg, segment_names, "segments"))
    time_keys = [k for k in sdef.primekeys if sdef.keyword(k).is_time]
    other_keys = [k for k in sdef.primekeys if k not in time_keys]
    for key in entry.keys:
        if key.lower() not in {k.lower() for k in other_keys}:
            if key.lower() in {k.lower() for k in time_keys}:
                raise ConfigError(f"{where}: time prime key {key} is selected with start/end, not keys.{key}")
            raise ConfigError(
                f"{where}: {key!r} is not a prime key of {sdef.name}; "
                + _choices_text(key, other_keys, "prime keys for keys.*")
            )
        kw = sdef.keyword(key)
        for v in entry.keys[key]:
            if kw.is_int and not _is_int_text(v):
                raise ConfigError(f"{where}: keys.{key} value {v!r} is not an integer ({key} is {kw.type})")
    if (entry.start or entry.end or entry.cadence) and not time_keys:
        raise ConfigError(f"{where}: start/end/cadence need a time prime key, and {sdef.name} has none")
    if (entry.keep or entry.max_bytes is not None) and not time_keys:
        raise ConfigError(f"{where}: keep and max_bytes go by the time prime key, and {sdef.name} has none")
    if entry.keywords is not None:
        names = [k.name for k in sdef.visible_keywords]
        for name in entry.keywords:
            if sdef.keyword(name) is None or sdef.keyword(name).hidden:
                raise ConfigError(f"{where}: unknown keyword {name!r}; " + _choices_text(name, names, "keywords"))


def _is_int_text(v: int | str) -> bool:
    if isinstance(v, int):
        return True
    return bool(re.match(r"^-?(\d+|0x[0-9a-fA-F]+)$", v.strip()))


def check_filter(text: str, series_def=None, where: str = "filter") -> None:
    """Validate a ``[? ... ?]`` keyword filter; with a series definition also its keyword names."""
    if "?" in text or not text.strip():
        raise ConfigError(f"{where}: filter {text!r} must be non-empty SQL without '?' (it goes inside [? ?])")
    names = _filter_names(text)
    if series_def is None:
        _check_filter_shape(text, where)
        return
    valid = [k.name for k in series_def.visible_keywords]
    for name in names:
        if series_def.keyword(name) is None and name.lower() not in _SQL_WORDS:
            raise ConfigError(
                f"{where}: filter {text!r} names unknown keyword {name!r}; " + _choices_text(name, valid, "keywords")
            )
    from jsocmirror import recordset

    try:
        recordset.parse_where(text, series_def)
    except Exception as exc:  # the parser's message says what is wrong and what is accepted
        raise ConfigError(f"{where}: bad filter {text!r}: {exc}") from None


_SQL_WORDS = {"and", "or", "not", "in", "is", "null", "between", "like", "true", "false", "recnum"}


def _filter_names(text: str) -> list[str]:
    without_strings = re.sub(r"'[^']*'|\$\([^()]*\)", "''", text)
    return [m for m in re.findall(r"\b([A-Za-z_][A-Za-z0-9_]*)\b", without_strings) if not m.lower().startswith("0x")]


def _check_filter_shape(text: str, where: str) -> None:
    """A light syntax check when the record-set parser offers none: balanced quotes/parens, comparisons."""
    if text.count("'") % 2:
        raise ConfigError(f"{where}: bad filter {text!r}: unbalanced quote")
    depth = 0
    for ch in re.sub(r"'[^']*'", "", text):
        depth += ch == "("
        depth -= ch == ")"
        if depth < 0:
            break
    if depth:
        raise ConfigError(f"{where}: bad filter {text!r}: unbalanced parentheses")
    if not re.search(r"(<=|>=|<>|!=|=|<|>|\bIS\b|\bIN\b|\bLIKE\b|\bBETWEEN\b)", text, re.I):
        raise ConfigError(f"{where}: bad filter {text!r}: no comparison (expected e.g. QUALITY = 0)")


def _check_time(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a JSOC time string such as 2024.01.01_00:00:00_TAI")
    try:
        seconds = drmstime.parse_time(value)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    _check_calendar_date(value, where)
    return seconds


_DATE_RE = re.compile(r"^\s*(\d{4})[.-](\d{1,2})[.-](\d{1,2})")


def _check_calendar_date(value: str, where: str) -> None:
    """Refuse a day the month lacks (2024-02-30): DRMS rolls it over into the next month, silently."""
    import calendar

    match = _DATE_RE.match(value)
    if match is None:
        return
    year, month, day = (int(g) for g in match.groups())
    if 1 <= month <= 12 and day > calendar.monthrange(year, month)[1]:
        raise ConfigError(f"{where}: {value!r} is not a date: {calendar.month_name[month]} {year} has "
                          f"{calendar.monthrange(year, month)[1]} days")


def _check_duration(value: Any, where: str) -> float:
    if not isinstance(value, str):
        raise ConfigError(f"{where} {value!r} must be a duration string such as 12m, 1h or 2d")
    try:
        seconds = drmstime.parse_duration(value)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if seconds <= 0 and not where.endswith("recheck"):
        raise ConfigError(f"{where} {value!r} must be positive")
    return seconds


def _check_retention_entry(entry: SeriesConfig, where: str) -> None:
    if entry.keep is not None:
        try:
            parse_age(entry.keep)
        except ValueError as exc:
            raise ConfigError(f"{where}: keep {exc}") from None
    if entry.max_bytes is not None:
        try:
            parse_size(entry.max_bytes)
        except ValueError as exc:
            raise ConfigError(f"{where}: max_bytes {exc}") from None
    if entry.orphans is not None:
        _check_choice(entry.orphans, ORPHAN_POLICIES, f"{where}: orphans")


_SIZE_RE = re.compile(r"^\s*(?P<n>[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?|\.[0-9]+)\s*(?P<unit>[A-Za-z]*)\s*$")
_SIZE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "pb": 10**15,
               "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "pib": 2**50}
SIZE_UNITS_TEXT = "B, kB, MB, GB, TB, PB (powers of 1000) or KiB, MiB, GiB, TiB, PiB (powers of 1024)"


def parse_size(value: Any) -> int:
    """Bytes in a size: ``"2 TB"``, ``"500 GiB"``, ``"10GB"``, ``"1e12"``, an integer (bytes).

    Raises ValueError whose text names the value and the accepted units (callers prefix the key).
    """
    accepted = f"use a positive number of bytes or a number with {SIZE_UNITS_TEXT}, e.g. \"2 TB\""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{value!r} is not a size: {accepted}")
    if isinstance(value, str):
        match = _SIZE_RE.match(value)
        unit = (match["unit"].lower() if match else None)
        if match is None or unit not in _SIZE_UNITS:
            raise ValueError(f"{value!r} is not a size: {accepted}")
        number = float(match["n"]) * _SIZE_UNITS[unit]
    else:
        number = float(value)
    if not number >= 1 or number != number or number == float("inf"):
        raise ValueError(f"{value!r} is not a size: {accepted}")
    return int(number)


_AGE_RE = re.compile(r"^\s*(?P<v>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(?P<u>[smhdw])\s*$", re.I)


def parse_age(value: Any) -> float:
    """Seconds in a retention age: a DRMS duration with its unit (``90d``, ``12h``) or weeks (``2w``).

    Raises ValueError whose text names the value and what is accepted (callers prefix the key).
    """
    accepted = "use a positive number and s, m, h, d or w (e.g. 90d, 12h, 2w)"
    match = _AGE_RE.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"{value!r} is not a duration: {accepted}")
    text = f"{float(match['v']) * 7}d" if match["u"].lower() == "w" else value
    try:
        seconds = _check_duration(text, "keep")
    except ConfigError:
        raise ValueError(f"{value!r} is not a duration: {accepted}") from None
    if seconds <= 0:
        raise ValueError(f"{value!r} is not a duration: {accepted}")
    return seconds


def _check_choice(value: Any, choices: Iterable[str], where: str) -> None:
    if value not in choices:
        raise ConfigError(f"{where} {value!r} is not accepted; use one of: {', '.join(choices)}")


def _check_str_list(value: Any, where: str) -> None:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where} must be a list of names")


def closest(name: str, candidates: Iterable[str], n: int = 5) -> list[str]:
    """Candidates ordered closest match first (case-insensitive), at most ``n``... then the rest."""
    cands = list(dict.fromkeys(candidates))
    lower = {c.lower(): c for c in cands}
    near = [lower[m] for m in difflib.get_close_matches(name.lower(), list(lower), n=n, cutoff=0.5)]
    return near + [c for c in cands if c not in near]


def _choices_text(name: str, candidates: Iterable[str], what: str, limit: int = 12) -> str:
    ordered = closest(name, candidates)
    if not ordered:
        return f"there are no {what}"
    shown = ordered[:limit]
    more = f" (and {len(ordered) - limit} more)" if len(ordered) > limit else ""
    return f"valid {what}: {', '.join(shown)}{more}"


def choices_text(name: str, candidates: Iterable[str], what: str) -> str:
    """``valid <what>: a, b, c`` with the closest matches to ``name`` first (for error messages)."""
    return _choices_text(name, candidates, what)


# -- writing ----------------------------------------------------------------------------------
_HEADER = """\
# jsocmirror.toml: configuration of one jsocmirror mirror.
# Edit by hand or with `jsocmirror series add|remove`. Unknown keys are refused.
# Times are JSOC time strings (2024.01.01_00:00:00_TAI, 2024-01-01T00:00:00Z); no zone means UTC.
# Durations are DRMS durations: a number and s, m, h or d (45s, 12m, 1h, 2d).
"""

_COMMENTS = {
    "server": 'JSOC server: "jsoc" (jsoc.stanford.edu), "embedded" (built-in emulator), or a URL',
    "email": "Email address registered with JSOC (http://jsoc.stanford.edu/ajax/register_email.html)",
    "catalog": "DuckDB catalog file, relative to this directory unless absolute",
    "data": "Data root: a path relative to this directory, an absolute path, or an fsspec URL (s3://bucket/sdo)",
    "read": "Readers' copy of the catalog (what `sql`, `status`, `diff` and jsocmirror.open read): a path or an fsspec URL",
    "sync.recheck": "Trailing window re-fetched at every sync before the watermark (catches late reprocessing)",
    "sync.chunk_records": "Target records per rs_list request (keep <= 100000: JSOC answers from memory)",
    "transfer.max_connections": "Parallel download connections (JSOC asks for 1)",
    "transfer.method": "Default export method: url_quick, url or url-tar",
    "transfer.protocol": "Default export protocol: as-is (preferred by JSOC) or fits",
    "series.series": "Series name",
    "series.segments": "Segments to download ([] = keywords only)",
    "series.start": "Window start (omit = the series' first record)",
    "series.end": "Window end, inclusive (omit = open: up to the newest record)",
    "series.cadence": "Sampling of the time prime key (omit = every record)",
    "series.filter": "Keyword filter: the SQL inside JSOC's [? ?]",
    "series.keywords": "Keywords kept in the catalog (omit = all)",
    "series.layout": "File layout template (omit = default)",
    "series.method": "Export method for this series (omit = [transfer] method)",
    "series.protocol": "Export protocol for this series (omit = [transfer] protocol)",
    "series.header_fill": "Write catalog keywords into this series' as-is headers (omit = [transfer] header_fill)",
    "series.keys": "Value lists for other prime keys (omit a key = all values)",
    "series.keep": "Retention by the time prime key (90d, 12h, 2w): older records go (omit = forever)",
    "series.max_bytes": "Quota of this series' files: past it the oldest records go (omit = none)",
    "series.orphans": "Orphaned files: keep, trash or delete (omit = [retention] orphans)",
}


_STORAGE_NOTE = ("Object-storage roots (s3://...): fsspec storage_options; local roots ignore them. "
                 "Each is overridden by JSOCMIRROR_STORAGE_<NAME>; AWS_* variables work too.")

_EXAMPLES = {
    "storage.endpoint_url": '"https://s3.example.org"',
    "storage.profile": '"sdo-mirror"',
    "storage.anon": "false",
    "storage.client_kwargs": '{region_name = "eu-west-1"}',
    "run.max_hours": "6",
}


def config_to_toml(config: MirrorConfig) -> str:
    """The TOML text of a config, with a comment on every setting."""
    out = [_HEADER]
    for name in ("server", "email", "catalog", "data", "read"):
        value = getattr(config, name)
        out.append(f"# {_COMMENTS[name]}")
        out.append(f"{name} = {_toml_value(value)}" if value is not None else f'# {name} = "you@example.org"')
    for section in SECTIONS:
        out.append(f"\n[{section}]")
        obj = getattr(config, section)
        if section == "storage":
            out.append(f"# {_STORAGE_NOTE}")
        for f in fields(obj):
            comment = _COMMENTS.get(f"{section}.{f.name}") or _field_doc(type(obj), f.name)
            if comment:
                out.append(f"# {comment}")
            value = getattr(obj, f.name)
            if value is not None and value != {}:
                out.append(f"{f.name} = {_toml_value(value)}")
            elif f"{section}.{f.name}" in _EXAMPLES:
                out.append(f"# {f.name} = {_EXAMPLES[f'{section}.{f.name}']}")
    if not config.series:
        out.append("\n# Series to mirror: add them with `jsocmirror series add SERIES ...`, or by hand:")
        out.append("# [[series]]\n# series = \"hmi.M_720s\"\n# segments = [\"magnetogram\"]")
        out.append("# start = \"2024.01.01_00:00:00_TAI\"\n# cadence = \"1h\"")
    for entry in config.series:
        out.append("")
        out.extend(_series_lines(entry))
    return "\n".join(out) + "\n"


def _series_lines(entry: SeriesConfig) -> list[str]:
    """One ``[[series]]`` table, a comment on each setting."""
    out = ["[[series]]"]
    for f in fields(entry):
        if f.name == "keys":
            continue
        value = getattr(entry, f.name)
        comment = _COMMENTS.get(f"series.{f.name}")
        if value is None:
            continue
        out.append(f"{f.name} = {_toml_value(value)}  # {comment}" if comment else f"{f.name} = {_toml_value(value)}")
    if entry.keys:
        out.append(f"[series.keys]  # {_COMMENTS['series.keys']}")
        for key, values in entry.keys.items():
            out.append(f"{_toml_key(key)} = {_toml_value(values)}")
    return out


def _field_doc(cls, name: str) -> str:
    """The ``#:`` comment above a dataclass field (so new fields are documented in the file too)."""
    import inspect

    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):
        return ""
    doc: list[str] = []
    for line in lines:
        text = line.strip()
        if text.startswith("#:"):
            doc.append(text[2:].strip())
        elif text.startswith(f"{name}:"):
            return " ".join(doc)
        else:
            doc = []
    return ""


def _toml_key(key: str) -> str:
    return key if re.match(r"^[A-Za-z0-9_-]+$", key) else _toml_str(key)


def _toml_str(s: str) -> str:
    escaped = s.replace("\\", "\\\\").replace('"', '\\"')
    escaped = re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\u{ord(m.group()):04x}", escaped)
    return f'"{escaped}"'


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return _toml_str(value)
    if isinstance(value, Path):
        return _toml_str(str(value))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise ConfigError(f"cannot write {value!r} to TOML")


def save_config(config: MirrorConfig) -> Path:
    """Validate and write ``jsocmirror.toml`` atomically (a reader never sees half a file).

    An existing file is edited in place (tomlkit): only the settings and ``[[series]]`` tables
    that differ change, so the operator's comments, order and formatting stay, and so does
    the file's mode. A new file is written from ``config_to_toml`` (mode 0666 less the umask).
    """
    validate_config(config)
    path = config.config_path
    _refuse_read_only(path)
    text = _edited_toml(path, config) if path.exists() else config_to_toml(config)
    # Round-trip check: what we write must load back to the same config.
    reloaded = config_from_dict(tomllib.loads(text), config.mirror_dir)
    if reloaded != config:
        raise ConfigError(f"cannot edit {path} in place (its layout is unusual): make the change by hand")
    _write_atomically(path, text)
    return path


def _refuse_read_only(path: Path) -> None:
    """A read-only config file or mirror directory is the operator's decision: keep it (even as root)."""
    for target in (path, path.parent):
        if not target.exists():
            continue
        mode = target.stat().st_mode
        if not os.access(target, os.W_OK) or not mode & 0o222:
            what = "mirror directory" if target == path.parent else "config file"
            raise ConfigError(f"cannot write {path}: the {what} {target} is read-only")


def _write_atomically(path: Path, text: str) -> None:
    """Write ``text`` whole to a temporary beside ``path``, keep the old file's mode and owner, rename.

    A symlinked config (kept in /etc, or by configuration management) is written where it points,
    so the link stays a link.
    """
    path = path.resolve() if path.is_symlink() else path
    try:
        old = path.stat()
    except FileNotFoundError:
        old = None
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        # os.open applies the umask to 0o666, as any editor's new file; mkstemp's 0600 would hide the config
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            if old is not None:
                os.fchmod(fd, old.st_mode & 0o7777)
                if os.geteuid() == 0 and (old.st_uid, old.st_gid) != (0, 0):
                    os.fchown(fd, old.st_uid, old.st_gid)  # root editing an operator's file leaves it theirs
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None


def _edited_toml(path: Path, config: MirrorConfig) -> str:
    """The text of the file at ``path`` with what differs from ``config`` changed, and nothing else."""
    import tomlkit

    try:
        doc = tomlkit.parse(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    except tomlkit.exceptions.ParseError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    old = config_from_dict(doc.unwrap(), config.mirror_dir)
    for name in ("server", "email", "catalog", "data", "read"):
        _set_key(doc, name, getattr(old, name), getattr(config, name), getattr(MirrorConfig, name, None))
    for section in SECTIONS:
        old_obj, new_obj = getattr(old, section), getattr(config, section)
        if old_obj == new_obj:
            continue
        if section not in doc:
            doc.add(section, tomlkit.table())
        for f in fields(new_obj):
            default = type(new_obj)()
            _set_key(doc[section], f.name, getattr(old_obj, f.name), getattr(new_obj, f.name), getattr(default, f.name))
    _edit_series(doc, old.series, config.series)
    return tomlkit.dumps(doc)


def _set_key(table, name: str, old: Any, new: Any, default: Any) -> None:
    if old == new:
        return
    if new is None or (new == default and name not in table) or new == {}:
        if name in table:
            del table[name]
        return
    table[name] = new


def _edit_series(doc, old: list[SeriesConfig], new: list[SeriesConfig]) -> None:
    """Remove, change in place or append ``[[series]]`` tables, matched by series name."""
    import tomlkit

    wanted = {e.series.lower(): e for e in new}
    tables = doc.get("series")
    for index in reversed(range(len(old))):
        if old[index].series.lower() not in wanted:
            _remove_series_table(doc, index)
    tables = doc.get("series")
    present = {str(t.get("series", "")).lower(): t for t in (tables or [])}
    for entry in new:
        table = present.get(entry.series.lower())
        if table is None:
            block = tomlkit.parse("\n".join(_series_lines(entry)) + "\n")["series"][0]
            if tables is None:
                doc.add(tomlkit.nl())
                doc.append("series", tomlkit.aot())
                tables = doc["series"]
            else:
                _append_after(tables, block)
                continue
            tables.append(block)
        else:
            _edit_series_table(table, _entry_of(table), entry)


def _append_after(tables, block) -> None:
    """Append ``block`` to the array of tables, right after the last entry's own lines.

    The blank lines and comments that end the last entry lead to what follows it (the next
    section): they move below the new entry, and one blank line separates the two entries.
    """
    from tomlkit.items import Comment, Whitespace

    last = _innermost(tables[-1]).value.body
    trailing = []
    while last and last[-1][0] is None and isinstance(last[-1][1], (Comment, Whitespace)):
        trailing.insert(0, last.pop()[1])
    last.append((None, Whitespace("\n")))
    tables.append(block)
    end = _innermost(tables[-1]).value
    for item in trailing:
        end.body.append((None, item))


def _innermost(table):
    """The last sub-table of a table (``[series.keys]``), whose body holds the table's last lines."""
    from tomlkit.items import Table

    while table.value.body and isinstance(table.value.body[-1][1], Table):
        table = table.value.body[-1][1]
    return table


def _entry_of(table) -> SeriesConfig:
    return _series_from_dict(table.unwrap(), 0)


def _edit_series_table(table, old: SeriesConfig, new: SeriesConfig) -> None:
    import tomlkit

    for f in fields(SeriesConfig):
        before, after = getattr(old, f.name), getattr(new, f.name)
        if f.name != "keys":
            _set_key(table, f.name, before, after, None)
        elif before != after:
            if not after:
                del table["keys"]
            elif "keys" not in table or before.keys() != after.keys():
                keys = tomlkit.table()
                for key, values in after.items():
                    keys[key] = values
                table["keys"] = keys
            else:
                for key, values in after.items():
                    if before.get(key) != values:
                        table["keys"][key] = values


def _remove_series_table(doc, index: int) -> None:
    """Delete one ``[[series]]`` table with the comment lines directly above its header.

    tomlkit keeps those comments at the end of whatever precedes the header (the previous
    entry, or the section or top level before the first entry), so they are cut from there;
    the comments ending the removed table lead to what follows it, so they stay.
    """
    from tomlkit.items import Comment, Whitespace

    tables = doc["series"]
    if index > 0:
        body, end = _innermost(tables[index - 1]).value.body, len(_innermost(tables[index - 1]).value.body)
    else:
        body, end = _lines_before(doc, "series")
    _blank_comments_before(body, end)
    own = _innermost(tables[index]).value.body
    trailing = []
    while own and own[-1][0] is None and isinstance(own[-1][1], (Comment, Whitespace)):
        trailing.insert(0, own.pop()[1])
    while trailing and isinstance(trailing[0], Whitespace):
        trailing.pop(0)  # the blank line before the next header: the previous entry has its own
    kept = "".join(item.as_string() for item in trailing)
    if kept and end and body[end - 1][0] is None and isinstance(body[end - 1][1], Whitespace):
        body[end - 1] = (None, Whitespace(body[end - 1][1].as_string() + kept))
    elif kept and end == len(body):
        body.append((None, Whitespace(kept)))
    if len(tables) == 1:
        del doc["series"]
    else:
        del tables[index]


def _lines_before(doc, key: str) -> tuple[list, int]:
    """(a body, an end index): the items just above the first ``[[key]]`` header."""
    from tomlkit.items import Table

    body = doc.body
    position = next(i for i, (k, _) in enumerate(body) if k is not None and k.key == key)
    before = body[position - 1][1] if position else None
    if not isinstance(before, Table):
        return body, position
    inner = _innermost(before).value.body
    return inner, len(inner)


def _blank_comments_before(body: list, end: int) -> None:
    """Empty the run of comment lines that ends at ``body[end]`` (emptied, not removed: tomlkit
    indexes its keys by position)."""
    from tomlkit.items import Comment, Whitespace

    i = end - 1
    while i >= 0 and body[i][0] is None and isinstance(body[i][1], Comment):
        body[i] = (None, Whitespace(""))
        i -= 1


def edit_config(mirror_dir: str | Path, change: Callable[[MirrorConfig], MirrorConfig]) -> MirrorConfig:
    """Load jsocmirror.toml, ``change`` it and save it, one editor at a time: two ``series add`` run
    at once both land (each applies its change to what the other saved), never one over the other.

    The lock is an ``flock`` on the mirror directory itself: it needs no file of its own, and the
    config file's inode changes with every save.
    """
    import fcntl

    try:
        fd = os.open(mirror_dir, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise ConfigError(f"cannot open the mirror directory {mirror_dir}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        changed = change(load_config(mirror_dir))
        save_config(changed)
        return changed
    finally:
        os.close(fd)  # closing releases the flock


def with_series(config: MirrorConfig, entry: SeriesConfig) -> MirrorConfig:
    """A copy of ``config`` with ``entry`` added, or replacing the entry of the same series."""
    series = list(config.series)
    for i, old in enumerate(series):
        if old.series.lower() == entry.series.lower():
            series[i] = entry
            break
    else:
        series.append(entry)
    return replace(config, series=series)


def without_series(config: MirrorConfig, name: str) -> MirrorConfig:
    config.get_series(name)  # raises if absent
    return replace(config, series=[s for s in config.series if s.series.lower() != name.strip().lower()])
