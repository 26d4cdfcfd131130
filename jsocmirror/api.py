"""The reading face of a mirror: ``jsocmirror.open(path)`` returns a ``Mirror``.

A ``Mirror`` reads the readers' copy that the writer publishes (``jsocmirror.publish``): it
never opens the writer's catalog, never takes the run lock, needs no write permission, and a
nightly job never waits for it. It shows one generation, the newest at ``open`` (or at
``refresh()``), for as long as it stays open.

    import jsocmirror
    with jsocmirror.open("/data/sdo-mirror") as m:
        m.sql("SELECT count(*) FROM hmi_m_720s").fetchall()
        paths = m.files("hmi.M_720s", "QUALITY = 0", start="2024-06-30")

The CLI's reading commands (``sql``, ``status``, ``diff``, ``series list|show``,
``export-catalog``) go through this class too.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import duckdb

from jsocmirror import config as cfg
from jsocmirror import drmstime, recordset
from jsocmirror.catalog import Catalog, keyword_table, quote_ident, series_slug
from jsocmirror.errors import CatalogError, ConfigError, UsageError
from jsocmirror.publish import MANIFEST, MIRROR_INFO, READ_DB

if TYPE_CHECKING:
    from jsocmirror.diff import DiffResult, SeriesStatus
    from jsocmirror.series import SeriesDef

log = logging.getLogger("jsocmirror.api")

#: What ``record_files`` calls each (record, segment): the diff's states, from the same rules.
FILE_STATES = ("present", "missing", "stale", "corrupt", "no_image", "offline")


def open(path: str | os.PathLike = ".", *, storage_options: dict | None = None) -> Mirror:  # noqa: A001
    """Open a mirror for reading.

    ``path`` is a mirror directory (it holds ``jsocmirror.toml``; its ``read`` setting says
    where the readers' copy is), or the readers' copy itself: a directory or fsspec URL
    holding ``catalog.duckdb`` and ``manifest.json`` (``s3://bucket/sdo/read``), which is all
    a machine that only reads needs.
    """
    text = os.fspath(path)
    if "://" not in text and (Path(text) / cfg.CONFIG_NAME).is_file():
        config = cfg.load_config(text)
        return Mirror(config.read_root, config=config, storage_options=storage_options)
    return Mirror(text, storage_options=storage_options)


class Mirror:
    """A read-only view of a mirror's catalog and files (see the module doc)."""

    def __init__(self, read_root: str, *, config: cfg.MirrorConfig | None = None,
                 storage_options: dict | None = None):
        from jsocmirror.scan import open_root

        self.read_root = read_root
        if storage_options is None:  # [storage] of the mirror's config, or the environment's JSOCMIRROR_STORAGE_*
            storage_options = config.storage_options() if config is not None else cfg.storage_options()
        self.storage_options = storage_options
        self._fs, self._root = open_root(read_root, storage_options)
        self._config = config
        self._own_config = config is not None  # given by the caller (jsocmirror.toml), else published
        self.catalog = self._connect()

    # -- opening ---------------------------------------------------------------------------
    def _connect(self) -> Catalog:
        if self._fs is None:
            db = os.path.join(self._root, READ_DB)
            if not os.path.isfile(db):
                raise CatalogError(f"no readers' catalog at {db}: the mirror has not been published yet "
                                   "(any sync, scan or update publishes it; or run 'jsocmirror publish')")
            catalog = Catalog(db, read_only=True, migrate=False)
        else:
            db = self._download_views_file()
            try:
                catalog = self._remote_catalog(db)
            except BaseException:
                Path(db).unlink(missing_ok=True)
                raise
        if self._config is None:
            try:
                self._config = self._published_config(catalog)
            except BaseException:
                self._close(catalog)
                raise
        if catalog.pending:
            log.warning("%s", self.pending_message(catalog))
        return catalog

    def pending_message(self, catalog: Catalog | None = None) -> str:
        """What a reader says of a catalog that this jsocmirror would migrate (read on meanwhile)."""
        catalog = catalog or self.catalog
        where = f" -m {self._config.mirror_dir}" if self._own_config and self._config is not None else ""
        return (f"a catalog migration is pending: the mirror's catalog is at schema {catalog.schema_version():04d} "
                f"and this jsocmirror has {', '.join(catalog.pending)}; run 'jsocmirror migrate{where}' "
                "(readers see the old schema until then)")

    def _remote_catalog(self, db: str) -> Catalog:
        """The local copy of a remote views file, reading its Parquet parts through ``self._fs``.

        The filesystem is registered before the first query: the views name ``s3://...`` files,
        and without it DuckDB would try to install httpfs (Catalog's own open-time check reads
        ``schema_migrations``, itself a view over Parquet).
        """
        try:
            con = duckdb.connect(db, read_only=True)
        except duckdb.Error as exc:
            raise CatalogError(f"{self.read_root}/{READ_DB} is not a usable DuckDB catalog: "
                               f"{str(exc).strip().splitlines()[0]}") from None
        con.register_filesystem(self._fs)
        catalog = Catalog.from_connection(con, db, read_only=True)  # Catalog() would query before the registration
        try:
            catalog.check_version()
        except Exception:
            con.close()
            raise
        return catalog

    def _download_views_file(self) -> str:
        """A local copy of a remote views file (DuckDB opens local files; the data stay remote)."""
        remote = f"{self._root}/{READ_DB}"
        # fsspec caches listings per filesystem instance (shared in a process): one made before this
        # publish would say the new generation's files do not exist
        self._fs.invalidate_cache()
        fd, local = tempfile.mkstemp(prefix="jsocmirror-read-", suffix=".duckdb")
        os.close(fd)
        try:
            self._fs.get_file(remote, local)
        except FileNotFoundError:
            os.unlink(local)
            raise CatalogError(f"no readers' catalog at {self.read_root}/{READ_DB}") from None
        except Exception as exc:  # fsspec backends raise their own types
            os.unlink(local)
            raise CatalogError(f"cannot read {self.read_root}/{READ_DB}: {exc}") from None
        return local

    def _published_config(self, catalog: Catalog) -> cfg.MirrorConfig:
        """The config the writer published with this generation: data root and series entries.

        Read from the generation's own manifest, so a reader never pairs its views with the
        config of a newer generation (``mirror.json``, the newest, is for tools that have no DuckDB).
        """
        manifest = self._generation_manifest(catalog)
        info = manifest.get("mirror") if manifest else None
        if info is None:
            text = self._read_text(MIRROR_INFO)
            if text is None:
                raise CatalogError(f"{self.read_root} has no {MIRROR_INFO}: not a readers' copy of a mirror")
            info = json.loads(text)
        series = [{k: v for k, v in entry.items() if v not in (None, {}, [])} | {"segments": entry.get("segments", [])}
                  for entry in info.get("series", [])]
        mirror_dir = self._root if self._fs is None else tempfile.gettempdir()
        read = self._root if self._fs is None else self.read_root  # where it was read, not <mirror_dir>/read
        return cfg.config_from_dict({"data": info["data_root"], "read": read, "series": series}, mirror_dir)

    def _read_text(self, name: str) -> str | None:
        try:
            if self._fs is None:
                return Path(self._root, name).read_text(encoding="utf-8")
            with self._fs.open(f"{self._root}/{name}", "r", encoding="utf-8") as fh:
                return fh.read()
        except FileNotFoundError:
            return None

    def refresh(self) -> Mirror:
        """Move to the newest published generation (the one held so far is released)."""
        old = self.catalog
        if not self._own_config:
            self._config = None  # the new generation's own
        self.catalog = self._connect()
        self._close(old)
        return self

    def sandbox(self) -> Mirror:
        """Lock this Mirror's DuckDB connection down for queries from untrusted hands (``jsocmirror
        sql`` does this): no file outside the readers' copy can be read or written, no extension
        installed or loaded, and no setting changed (``enable_external_access = false`` with the
        readers' copy as the one allowed directory, then ``lock_configuration = true``). Python
        data frames can then no longer be queried by name, hence not the default. Returns self."""
        if self._fs is None:
            roots = sorted({os.path.join(r, "") for r in (self._root, os.path.realpath(self._root))})
        else:  # the views name the parts by URL (s3://bucket/read/tables/...), read through the registered fs
            roots = [self.read_root.rstrip("/") + "/"]
        (spill,), = self.con.execute("SELECT current_setting('temp_directory')").fetchall()
        if spill:  # where DuckDB spills a large sort or join
            roots.append(os.path.join(str(spill), ""))
        allowed = "[" + ", ".join(_literal(r) for r in roots) + "]"
        self.con.execute(f"SET allowed_directories = {allowed}")
        self.con.execute("SET enable_external_access = false")
        self.con.execute("SET lock_configuration = true")
        return self

    def close(self) -> None:
        self._close(self.catalog)

    def _close(self, catalog: Catalog) -> None:
        catalog.close()
        if self._fs is not None:  # the local copy of a remote views file
            Path(catalog.path).unlink(missing_ok=True)

    def __enter__(self) -> Mirror:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<jsocmirror.Mirror {self.read_root} generation {self.generation}>"

    # -- what it is --------------------------------------------------------------------------
    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """The DuckDB connection (read-only) for anything this class does not wrap."""
        return self.catalog.con

    @property
    def config(self) -> cfg.MirrorConfig:
        """The mirror's config: its jsocmirror.toml, or the one published with this generation."""
        if self._config is None:  # only while a refresh() is opening the next generation
            raise CatalogError(f"{self.read_root}: the mirror's config is not loaded")
        return self._config

    @property
    def data_root(self) -> str:
        """The data root: an absolute local path or an fsspec URL."""
        return self.config.data_root

    @property
    def generation(self) -> int:
        """The published generation this Mirror reads."""
        return self.catalog.q("publication_generation").fetchall()[0][0]

    @property
    def published_at(self) -> datetime:
        """When the writer published it (UTC)."""
        return self.catalog.q("publication_generation").fetchall()[0][1]

    def manifest(self) -> dict:
        """This generation's manifest: every table's Parquet files (what pyarrow or polars read)."""
        return self._generation_manifest(self.catalog) or json.loads(self._read_text(MANIFEST) or "{}")

    def _generation_manifest(self, catalog: Catalog) -> dict | None:
        (generation, _), = catalog.q("publication_generation").fetchall()
        text = self._read_text(f"gens/{int(generation):06d}.json")
        return json.loads(text) if text else None

    def series_names(self) -> list[str]:
        """The configured series."""
        return [entry.series for entry in self.config.series]

    def definition(self, series: str) -> SeriesDef:
        from jsocmirror.diff import series_definitions

        sd = series_definitions(self.catalog).get(series)
        if sd is None:
            raise ConfigError(f"series {series!r} has no known definition in this mirror; "
                              + cfg.choices_text(series, self.series_names(), "series"))
        return sd

    # -- SQL -------------------------------------------------------------------------------------
    def sql(self, query: str, params: Any = None) -> duckdb.DuckDBPyRelation | None:
        """Run SQL over the catalog; a relation (``.df()``, ``.arrow()``, ``.pl()``, ``.fetchall()``).

        Only statements that read are run (``refuse_changes``): COPY ... TO, EXPORT, ATTACH, INSTALL,
        LOAD, SET, CREATE (SECRET or anything else) and the table functions that change the session
        (``enable_logging``, ``enable_profiling``...) raise UsageError naming the statement.
        """
        if not isinstance(query, str) or not query.strip():
            raise UsageError("the SQL query is empty (give a statement such as \"SELECT count(*) FROM runs\")")
        refuse_changes(self.con, query)
        try:
            return self.con.sql(query, params=params)
        except duckdb.CatalogException as exc:  # a table or column: one a pending migration may add
            pending = f"; {self.pending_message()}" if self.catalog.pending else ""
            raise UsageError(_sql_error(exc) + pending) from None
        except duckdb.Error as exc:
            raise UsageError(_sql_error(exc)) from None

    def _select(self, query: str) -> duckdb.DuckDBPyRelation:
        relation = self.sql(query)
        if relation is None:  # a SELECT always has a result
            raise CatalogError(f"internal error: no result for {query[:60]!r}")
        return relation

    def _series_view(self, series: str) -> tuple[str, SeriesDef]:
        sd = self.definition(series)
        view = series_slug(sd.name)
        if not self.catalog.has_table(view):
            raise ConfigError(f"series {sd.name} has no catalog table yet (run 'jsocmirror sync')")
        return view, sd

    def records(self, series: str, where: str | None = None, *, start: Any = None, end: Any = None,
                columns: Sequence[str] | None = None) -> duckdb.DuckDBPyRelation:
        """The series' current records (gone ones excluded) as a relation.

        ``where`` is a DuckDB condition on its keyword columns (``"QUALITY = 0"``); ``start``
        (inclusive) and ``end`` (exclusive) bound its first time prime key, as JSOC time strings
        (``2024.06.30_00:00:00_TAI``, ``2024-06-30``) or datetimes (UTC).
        """
        view, sd = self._series_view(series)
        cols = "*" if not columns else ", ".join(quote_ident(c) for c in columns)
        return self._select(f"SELECT {cols} FROM {quote_ident(view)} AS k WHERE " + self._conditions(sd, where, start, end))

    def record_files(self, series: str, where: str | None = None, *, segment: str | Sequence[str] | None = None,
                     start: Any = None, end: Any = None) -> duckdb.DuckDBPyRelation:
        """One row per (record, segment): the record's keywords, ``segment``, ``path`` (absolute
        path or URL; NULL without a file), ``file_size`` and ``state`` (one of ``FILE_STATES``)."""
        view, sd = self._series_view(series)
        segments = self._segments(sd, series, segment)
        columns = {c.lower() for c in self.catalog.table_columns(view)}
        no_image = "coalesce(k.\"QUALITY\" < 0, false)" if "quality" in columns else "false"
        seg_list = "[" + ", ".join(_literal(s) for s in segments) + "]"
        return self._select(
            f"SELECT k.*, s.segment, CASE WHEN f.path IS NOT NULL THEN {_literal(self._path_prefix())} || f.path END AS path, "
            "f.size AS file_size, "
            "CASE WHEN f.path IS NULL AND " + no_image + " THEN 'no_image' "
            "WHEN f.path IS NULL AND NOT coalesce(k._online, true) THEN 'offline' "
            "WHEN f.path IS NULL THEN 'missing' "
            "WHEN f.state = 'empty' OR coalesce(f.verify_state, 'ok') <> 'ok' THEN 'corrupt' "
            "WHEN f.file_recnum < k._recnum THEN 'stale' "
            "WHEN f.file_recnum IS NULL AND k._prev_recnum IS NOT NULL THEN 'stale' "
            "ELSE 'present' END AS state "
            # the selection applies to the records alone, so ``where`` names keyword columns only
            f"FROM (SELECT * FROM {quote_ident(view)} AS k WHERE {self._conditions(sd, where, start, end)}) AS k "
            f"CROSS JOIN (SELECT unnest({seg_list}) AS segment) AS s "
            "LEFT JOIN (SELECT record_key, segment, path, size, state, verify_state, file_recnum FROM local_files "
            f"WHERE series = {_literal(sd.name)} AND state IN ('layout', 'empty')) AS f "
            "ON f.record_key = k._key AND f.segment = s.segment"
        )

    def files(self, series: str, where: str | None = None, *, segment: str | Sequence[str] | None = None,
              start: Any = None, end: Any = None) -> list[str]:
        """Paths (absolute, or fsspec URLs for object storage) of the present files, in record order."""
        rel = self.record_files(series, where, segment=segment, start=start, end=end)
        return [row[0] for row in rel.filter("state = 'present'").order("_key, segment").select("path").fetchall()]

    def maps(self, series: str, where: str | None = None, *, segment: str | Sequence[str] | None = None,
             start: Any = None, end: Any = None, limit: int | None = 100) -> list:
        """The present files as sunpy Maps (needs sunpy: ``pip install 'jsocmirror[sunpy]'``).

        At most ``limit`` maps (None: all), since each holds its data array in memory.
        """
        try:
            import sunpy.map
        except ImportError:
            raise UsageError("Mirror.maps needs sunpy, which is not installed: pip install 'jsocmirror[sunpy]'") from None
        paths = self.files(series, where, segment=segment, start=start, end=end)
        if limit is not None and len(paths) > limit:
            raise UsageError(f"{len(paths)} files match, more than limit={limit}; narrow the selection or pass limit=None")
        if not paths:
            return []
        maps = sunpy.map.Map(paths, sequence=False)
        return maps if isinstance(maps, list) else [maps]

    # -- the diff and status -------------------------------------------------------------------------
    def diff(self, series: str | Sequence[str] | None = None) -> DiffResult:
        """What the mirror lacks, as ``jsocmirror diff`` shows it (``.counts``, ``.gaps()``)."""
        from jsocmirror.diff import diff_mirror

        return diff_mirror(self.catalog, self.config, series)

    def status(self, *, by: str = "month") -> list[SeriesStatus]:
        """Per-series counts, bytes on disk and coverage per ``day`` or ``month``."""
        from jsocmirror.diff import mirror_status

        return mirror_status(self.catalog, self.config, by=by)[0]

    # -- helpers ---------------------------------------------------------------------------------
    def _path_prefix(self) -> str:
        return self.data_root.rstrip("/") + "/"

    def _segments(self, sd: SeriesDef, series: str, segment) -> list[str]:
        if segment is None:
            try:
                names = list(self.config.get_series(series).segments)
            except ConfigError:
                names = []
            if not names:
                raise UsageError(f"series {sd.name} has no configured segments; name one with segment=... "
                                 f"({', '.join(s.name for s in sd.segments) or 'it has none'})")
        else:
            names = [segment] if isinstance(segment, str) else list(segment)
        out = []
        for name in names:
            seg = sd.segment(name)
            if seg is None:
                raise UsageError(f"series {sd.name} has no segment {name!r} "
                                 f"(segments: {', '.join(s.name for s in sd.segments)})")
            out.append(seg.name)
        return out

    def _conditions(self, sd: SeriesDef, where: str | None, start: Any, end: Any) -> str:
        parts = ["TRUE"]
        if start is not None or end is not None:
            time_kw = next((kw for kw in sd.primekey_keywords if kw.is_time), None)
            if time_kw is None:
                raise UsageError(f"series {sd.name} has no time prime key; select records with where=...")
            slot_col = f"{time_kw.name}_index"
            if sd.slotting(time_kw.name) is not None and self.catalog.table_columns(keyword_table(sd.name)).get(slot_col):
                # by slot, as JSOC selects: an AIA record stamped 23:49:59Z belongs to the 23:50:00 slot
                col = "k." + quote_ident(slot_col)
                for bound, op, what in ((start, ">=", "start"), (end, "<", "end")):
                    if bound is not None:
                        parts.append(f"{col} {op} {int(recordset.slot_of_value(sd, time_kw.name, _jsoc_text(bound, what)))}")
            else:
                col = "k." + quote_ident(time_kw.name)
                if start is not None:
                    parts.append(f"{col} >= TIMESTAMP {_literal(_utc_text(start, 'start'))}")
                if end is not None:
                    parts.append(f"{col} < TIMESTAMP {_literal(_utc_text(end, 'end'))}")
        if where:
            parts.append(f"({where})")
        return " AND ".join(parts)


def _jsoc_text(value: Any, what: str) -> str:
    """A time bound as a JSOC time string (a datetime is UTC), checked."""
    text = value.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if isinstance(value, datetime) else str(value)
    if isinstance(value, datetime) and value.tzinfo is not None:
        text = value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    _utc_text(text, what)  # one clear error for a bad value
    return text


def _utc_text(value: Any, what: str) -> str:
    """A time bound as a UTC TIMESTAMP literal's text (the catalog's times hold UTC)."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(timezone.utc).replace(tzinfo=None)
        return value.isoformat(sep=" ")
    hint = "use a JSOC time such as 2024.06.30_00:00:00_TAI or 2024-06-30T00:00:00"
    try:
        dt = drmstime.to_datetime_utc(drmstime.parse_time(str(value)))
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{what} {value!r} is not a time ({hint}): {exc}") from None
    if dt is None:  # DRMS's MISSING time
        raise UsageError(f"{what} {value!r} is no time at all ({hint})")
    return dt.replace(tzinfo=None).isoformat(sep=" ")


def _literal(text: str) -> str:
    return "'" + str(text).replace("'", "''") + "'"


#: Statements that only read. Every other kind (INSERT, CREATE, COPY, EXPORT, ATTACH, DETACH,
#: INSTALL/LOAD, SET, PREPARE/EXECUTE, TRANSACTION...) changes something somewhere.
READING_STATEMENTS = ("SELECT", "EXPLAIN", "PRAGMA", "CALL", "VARIABLE_SET")
#: PRAGMAs (and their ``CALL pragma_...``/table-function forms) that only report.
READING_PRAGMAS = frozenset({
    "table_info", "show", "show_tables", "show_tables_expanded", "show_databases", "database_list",
    "database_size", "storage_info", "metadata_info", "functions", "collations", "version", "platform",
    "user_agent", "table_storage_info", "show_databases",
})
#: Table functions that change the session or write files (``enable_logging(storage = 'file', ...)``
#: writes CSV files wherever it is told), whether CALLed or SELECTed from.
CHANGING_FUNCTIONS = frozenset({
    "enable_logging", "disable_logging", "truncate_duckdb_logs", "enable_profiling", "disable_profiling",
    "checkpoint", "force_checkpoint",
})


def refuse_changes(con: duckdb.DuckDBPyConnection, query: str, hint: str = "") -> None:
    """UsageError unless every statement of ``query`` only reads (``READING_STATEMENTS``, with
    EXPLAIN's statement checked too, PRAGMAs limited to ``READING_PRAGMAS`` and no
    ``CHANGING_FUNCTIONS`` called). ``hint`` ends the message (the CLI's ``--write``)."""
    import re

    try:
        statements = con.extract_statements(query)
    except duckdb.Error as exc:
        raise UsageError(_sql_error(exc)) from None
    for statement in statements:
        kind, text = statement.type.name, statement.query.strip().rstrip(";")
        shown = " ".join(text.split())[:60]
        if kind not in READING_STATEMENTS:
            raise UsageError(f"{shown!r} is not accepted: {kind} statements change something, and only statements "
                             f"that read are run (SELECT, EXPLAIN, PRAGMA show_tables...){hint}")
        if kind == "EXPLAIN":
            inner = re.sub(r"^\s*EXPLAIN\s+(\(.*?\)\s*|ANALYZE\s+)?", "", text, flags=re.I | re.S)
            refuse_changes(con, inner, hint)
            continue
        if kind in ("PRAGMA", "CALL"):
            match = re.match(r"^\s*(?:PRAGMA|CALL)\s+(\w+)", text, re.I)
            name = match.group(1).lower() if match else ""
            if name.removeprefix("pragma_") not in READING_PRAGMAS and not name.startswith("duckdb_") \
                    or name in CHANGING_FUNCTIONS:
                raise UsageError(f"{shown!r} is not accepted: it may change the session, and only PRAGMAs and "
                                 f"CALLs that report are run ({', '.join(sorted(READING_PRAGMAS)[:6])}...){hint}")
            continue
        if kind == "SELECT":
            called = _called_functions(con, text)
            changing = sorted(called & CHANGING_FUNCTIONS)
            if changing:
                raise UsageError(f"{shown!r} is not accepted: it calls {changing[0]}(), which changes the session, "
                                 f"and only queries that read are run{hint}")


def _called_functions(con: duckdb.DuckDBPyConnection, query: str) -> set[str]:
    """Names of the functions a SELECT calls, from DuckDB's own parse tree (json_serialize_sql)."""
    try:
        (tree,), = con.execute("SELECT json_serialize_sql(?)", [query]).fetchall()
    except duckdb.Error:
        return set()
    names: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "function_name" and isinstance(value, str):
                    names.add(value.lower())
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(tree))
    return names


def _sql_error(exc: BaseException) -> str:
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "read-only" in message or "read only" in message:
        return f"the readers' catalog is read-only: {message} (change the writer's catalog with 'jsocmirror sql --write')"
    return f"SQL error: {message}"
