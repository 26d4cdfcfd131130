"""The catalog: a DuckDB file. The only module that runs SQL.

SQL lives in named ``.sql`` files under the top-level ``sql/`` directory (shipped in the wheel
as ``jsocmirror/sql``):

- ``sql/migrations/NNNN_name.sql`` are applied in order, once each, and recorded in
  ``schema_migrations``; the highest number applied is the catalog's *schema version*, and
  ``catalog_meta`` records it with the jsocmirror and DuckDB versions of the last writing open.
  A catalog from a newer jsocmirror (a migration we do not know) is refused rather than damaged;
  a writing open of an older one backs it up before migrating it (``jsocmirror.upgrade``).
- ``sql/queries/*.sql`` hold blocks headed ``-- name: query_name``; ``Catalog.q("query_name",
  param=...)`` runs one with DuckDB ``$param`` parameters.

Every JSOC name that becomes an SQL identifier goes through ``quote_ident``.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import duckdb

from jsocmirror import __version__, log
from jsocmirror.errors import CatalogError, CatalogVersionError

_NAME_RE = re.compile(r"^--\s*name:\s*(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*$", re.M)
_MIGRATION_RE = re.compile(r"^(?P<num>\d{4})_(?P<desc>[a-z0-9_]+)\.sql$")


def sql_dir() -> Path:
    """The SQL directory: inside the installed package, or the source tree's top-level ``sql/``."""
    packaged = resources.files("jsocmirror") / "sql"
    if packaged.is_dir():
        return Path(str(packaged))
    source = Path(__file__).resolve().parent.parent / "sql"
    if source.is_dir():
        return source
    raise CatalogError("jsocmirror's SQL files are missing from this installation (reinstall jsocmirror)")


@lru_cache(maxsize=1)
def queries() -> dict[str, str]:
    """Every named query in ``sql/queries/*.sql``."""
    named: dict[str, str] = {}
    for path in sorted((sql_dir() / "queries").glob("*.sql")):
        text = path.read_text(encoding="utf-8")
        marks = list(_NAME_RE.finditer(text))
        for mark, nxt in zip(marks, marks[1:] + [None]):
            body = text[mark.end(): nxt.start() if nxt else len(text)].strip()
            if mark["name"] in named:
                raise CatalogError(f"query {mark['name']!r} is defined twice (second time in {path.name})")
            named[mark["name"]] = body
    return named


def migrations() -> list[tuple[int, str, str]]:
    """(number, name, sql) of every migration, in order."""
    out = []
    for path in sorted((sql_dir() / "migrations").glob("*.sql")):
        match = _MIGRATION_RE.match(path.name)
        if match is None:
            raise CatalogError(f"migration file name {path.name!r} is not NNNN_snake_name.sql")
        out.append((int(match["num"]), path.stem, path.read_text(encoding="utf-8")))
    return out


def quote_ident(name: str) -> str:
    """Quote any JSOC name (series, keyword, segment) as a DuckDB identifier."""
    if "\x00" in name:
        raise CatalogError(f"name {name!r} cannot be an SQL identifier (it contains NUL)")
    return '"' + name.replace('"', '""') + '"'


def series_slug(series: str) -> str:
    """``hmi.M_720s`` -> ``hmi_m_720s``: the stem of a series' table and view names."""
    return re.sub(r"[^a-z0-9]+", "_", series.lower()).strip("_")


def keyword_table(series: str) -> str:
    """Name of the typed keyword table of a series (quote it with ``quote_ident``)."""
    return f"kw_{series_slug(series)}"


# -- keyword tables (one per series) ---------------------------------------------------------
# DRMS keyword type -> DuckDB column type. Floats are DOUBLE whatever their DRMS width, so the
# value equals the decimal JSOC printed; times are TIMESTAMP holding UTC (see docs/sql.md).
DRMS_TO_DUCKDB = {
    "char": "TINYINT", "short": "SMALLINT", "int": "INTEGER", "longlong": "BIGINT",
    "float": "DOUBLE", "double": "DOUBLE", "time": "TIMESTAMP", "string": "VARCHAR",
}

#: Rows of a DuckDB row group (its storage default). A transaction that ends the table on a
#: row-group boundary lets DuckDB write whole compressed row groups once, instead of logging
#: rows to the WAL and re-compressing a partly filled last row group at the next checkpoint.
ROW_GROUP_ROWS = 122_880

#: Bookkeeping columns every keyword table has after its keyword columns (architecture.md).
RECORD_COLUMNS = (
    ("_recnum", "BIGINT"), ("_sunum", "BIGINT"), ("_online", "BOOLEAN"), ("_size", "BIGINT"),
    ("_prev_recnum", "BIGINT"), ("_gone_at", "TIMESTAMP"), ("_synced_at", "TIMESTAMP"),
)


class Column:
    """One column of a keyword table and where its values come from.

    ``kind`` is ``key`` (the record key), ``keyword`` (a JSOC keyword of DRMS type ``drms_type``),
    ``time_str`` (the JSOC string of a time prime key, ``T_REC_str``), ``slot`` (the slot index
    of a slotted prime key, ``T_REC_index``) or ``record`` (the ``_recnum``... bookkeeping).
    """

    __slots__ = ("name", "sql_type", "kind", "keyword", "drms_type")

    def __init__(self, name: str, sql_type: str, kind: str, keyword: str | None = None, drms_type: str | None = None):
        self.name, self.sql_type, self.kind, self.keyword, self.drms_type = name, sql_type, kind, keyword, drms_type

    def __repr__(self) -> str:
        return f"Column({self.name!r}, {self.sql_type!r}, {self.kind!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Column) and (self.name, self.sql_type, self.kind) == (other.name, other.sql_type, other.kind)


def keyword_columns(series_def, keywords: list[str] | None = None) -> list[Column]:
    """The columns of a series' keyword table, in order.

    ``_key``; the slot index of each slotted prime key (``T_REC_index``); one column per
    keyword (all visible ones, or ``keywords`` plus the prime keys and QUALITY); the JSOC string
    of each time prime key (``T_REC_str``); then ``RECORD_COLUMNS``.
    """
    wanted = None
    if keywords is not None:
        wanted = {k.lower() for k in keywords} | {k.lower() for k in series_def.primekeys} | {"quality"}
    cols = [Column("_key", "VARCHAR", "key")]
    for key in series_def.primekeys:
        if series_def.slotting(key) is not None:
            cols.append(Column(f"{series_def.keyword(key).name}_index", "BIGINT", "slot", keyword=key))
    for kw in series_def.visible_keywords:
        if wanted is not None and kw.name.lower() not in wanted:
            continue
        sql_type = DRMS_TO_DUCKDB.get(kw.type, "VARCHAR")
        cols.append(Column(kw.name, sql_type, "keyword", keyword=kw.name, drms_type=kw.type))
    for kw in series_def.primekey_keywords:
        if kw.is_time:
            cols.append(Column(f"{kw.name}_str", "VARCHAR", "time_str", keyword=kw.name))
    cols.extend(Column(name, sql_type, "record") for name, sql_type in RECORD_COLUMNS)
    seen: set[str] = set()
    for col in cols:
        if col.name.lower() in seen:
            raise CatalogError(f"series {series_def.name}: column name {col.name!r} occurs twice")
        seen.add(col.name.lower())
    return cols


def _catalog_now():
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).replace(tzinfo=None)


#: The runs this process has started and not finished (``Catalog.start_run``).
_LIVE_RUNS: set[str] = set()


class Catalog:
    """An open DuckDB catalog. Use as a context manager, or call ``close()``."""

    def __init__(self, path: str | Path, *, read_only: bool = False, migrate: bool = True):
        """Open a catalog; ``migrate`` (writable opens only) applies the migrations it lacks.

        An existing catalog is backed up before it is migrated, and migrated on a copy that
        replaces it only when every migration succeeded (``jsocmirror.upgrade``). A writable open
        with nothing pending records this jsocmirror's and DuckDB's versions in ``catalog_meta``.
        """
        self.path = str(path)
        self.read_only = read_only
        #: Called after each commit (``Publisher.step``: readers see each committed step).
        self.after_commit: Callable[[], None] | None = None
        self.publisher: Any = None  # the Publisher attached to this catalog, if any
        #: Names of the migrations this jsocmirror has and the catalog lacks (``check_version``).
        self.pending: list[str] = []
        #: What this open's own upgrade did (``jsocmirror.upgrade.Upgrade``), if it did one.
        self.upgraded: Any = None
        self.con = self._connect()
        try:
            self.check_version()
            if migrate and not read_only and self.pending:
                self._apply_pending()
            if not read_only and not self.pending:
                self.record_meta()
        except Exception:
            self.con.close()
            raise

    def _connect(self) -> duckdb.DuckDBPyConnection:
        try:
            return duckdb.connect(self.path, read_only=self.read_only)
        except duckdb.IOException as exc:
            message = _first_line(exc)
            if "version number" in message:  # a file format from a newer DuckDB
                raise CatalogVersionError(
                    f"{self.path} was written by a newer DuckDB than this one ({duckdb.__version__}): "
                    f"{message.rstrip('.')}; install the DuckDB that jsocmirror's requirements pin "
                    "(pip install -U jsocmirror)") from None
            raise CatalogError(f"cannot open catalog {self.path}: {message}") from None
        except duckdb.Error as exc:
            raise CatalogError(f"{self.path} is not a usable DuckDB catalog: {_first_line(exc)}") from None

    def _apply_pending(self) -> None:
        """Migrate: in place for a new catalog, else through a backup and a working copy."""
        if not self.applied_migrations():
            self.migrate()
            return
        from jsocmirror.upgrade import upgrade_file  # files and backups; it opens catalogs itself

        before = self.schema_version()
        self.con.execute("CHECKPOINT")
        self.con.close()
        try:
            self.upgraded = upgrade_file(self.path, before)
        finally:
            self.con = self._connect()
        self.check_version()
        log.warning("catalog %s was at schema %04d: backed up to %s, then applied %s",
                    self.path, before, self.upgraded.backup, ", ".join(self.upgraded.applied))

    @classmethod
    def from_connection(cls, con: duckdb.DuckDBPyConnection, path: str, *, read_only: bool) -> Catalog:
        """A Catalog over a connection opened elsewhere (no migration, no checks)."""
        catalog = object.__new__(cls)
        catalog.path, catalog.read_only, catalog.con = str(path), read_only, con
        catalog.after_commit, catalog.publisher = None, None
        catalog.pending, catalog.upgraded = [], None
        return catalog

    def cursor(self) -> Catalog:
        """Another connection to the same open database, for another thread (its own transactions)."""
        return Catalog.from_connection(self.con.cursor(), self.path, read_only=self.read_only)

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.con.close()

    # -- migrations ------------------------------------------------------------------------
    def applied_migrations(self) -> set[int]:
        exists = self.con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_migrations'"
        ).fetchall()[0][0]
        if not exists:
            return set()
        return {row[0] for row in self.con.execute("SELECT number FROM schema_migrations").fetchall()}

    def schema_version(self) -> int:
        """The highest migration applied (0 for a catalog with none)."""
        return max(self.applied_migrations(), default=0)

    def meta(self) -> dict[str, str]:
        """``catalog_meta`` as key -> value (empty before migration 0030)."""
        if not self._named("catalog_meta_exists").fetchall()[0][0]:
            return {}
        return dict(self._named("catalog_meta_get").fetchall())

    def check_version(self) -> None:
        """Refuse a catalog from a newer jsocmirror; note pending migrations and a DuckDB of another major."""
        known = migrations()
        applied = self.applied_migrations()
        unknown = sorted(applied - {num for num, _, _ in known})
        meta = self.meta()
        if unknown:
            wrote = meta.get("jsocmirror_version")
            if wrote == __version__:  # a development version that added a migration of its own
                wrote = None
            raise CatalogVersionError(
                f"catalog {self.path} is at schema {max(applied):04d}, written by "
                f"{'jsocmirror ' + wrote + ',' if wrote else 'a jsocmirror'} newer than this one ({__version__}, "
                f"schemas up to {max(n for n, _, _ in known):04d}): install "
                f"{'jsocmirror ' + wrote + ' or newer' if wrote else 'a newer jsocmirror'} (pip install -U jsocmirror)")
        self.pending = [name for num, name, _ in known if num not in applied]
        written_with = meta.get("duckdb_version")
        if written_with and _major(written_with) != _major(duckdb.__version__):
            log.warning("catalog %s was last written with DuckDB %s and this is DuckDB %s (another major "
                        "version): keep every jsocmirror that uses this mirror on one DuckDB major "
                        "(docs/upgrading.md)", self.path, written_with, duckdb.__version__)

    def record_meta(self) -> None:
        """Note this jsocmirror and DuckDB in ``catalog_meta`` (only values that changed: no new publish)."""
        values = {"schema_version": f"{self.schema_version():04d}", "jsocmirror_version": __version__,
                  "duckdb_version": duckdb.__version__,
                  "storage_version": str(self._named("storage_version").fetchall()[0][0])}
        old = self.meta()
        changed = {k: v for k, v in values.items() if old.get(k) != v}
        if changed:
            with self.transaction():
                for key, value in changed.items():
                    self._named("catalog_meta_put", key=key, value=value)

    def migrate(self) -> list[str]:
        """Apply the migrations this catalog lacks, each in its own transaction. Returns their names.

        This alone takes no backup: a writable ``Catalog()`` open and ``jsocmirror migrate`` go
        through ``jsocmirror.upgrade``, which does.
        """
        self.check_version()
        self.con.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " number INTEGER PRIMARY KEY, name VARCHAR NOT NULL,"
            " applied_at TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'))"
        )
        done = self.applied_migrations()
        applied = []
        for number, name, sql in migrations():
            if number in done:
                continue
            try:
                self.con.execute("BEGIN TRANSACTION")
                self.con.execute(sql)
                self.con.execute("INSERT INTO schema_migrations (number, name) VALUES (?, ?)", [number, name])
                self.con.execute("COMMIT")
            except duckdb.Error as exc:
                self.con.execute("ROLLBACK")
                raise MigrationError(name, self.path, _first_line(exc)) from None
            log.info("applied migration %s to %s", name, self.path)
            applied.append(name)
        self.pending = [name for name in self.pending if name not in applied]
        return applied

    # -- queries ---------------------------------------------------------------------------
    def q(self, name: str, **params: Any) -> duckdb.DuckDBPyConnection:
        """Run the named query with ``$param`` parameters; returns the cursor for fetching."""
        return self._named(name, **params)

    def _named(self, name: str, **params: Any) -> duckdb.DuckDBPyConnection:
        # what the open's own version checks run: a subclass that hooks q() sees only its caller's queries
        try:
            sql = queries()[name]
        except KeyError:
            raise CatalogError(f"no SQL query named {name!r} in sql/queries") from None
        return self.con.execute(sql, params or None)

    def execute(self, sql: str, params: Any = None) -> duckdb.DuckDBPyConnection:
        """Run SQL built in code (only for statements whose identifiers come from ``quote_ident``)."""
        return self.con.execute(sql, params)

    # -- keyword tables (one per series) ---------------------------------------------------
    def table_columns(self, table: str) -> dict[str, str]:
        rows = self.con.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ? "
            "AND table_schema = 'main' ORDER BY ordinal_position",
            [table],
        ).fetchall()
        return {name: dtype for name, dtype in rows}

    def has_table(self, table: str) -> bool:
        return bool(self.table_columns(table))

    def ensure_keyword_table(self, series_def, keywords: list[str] | None = None) -> list[Column]:
        """Create ``kw_<slug>`` and its view ``<slug>``, or add columns a changed definition needs.

        Columns are never dropped or retyped: a keyword JSOC removed keeps its past values.
        Returns the columns sync fills (those of the current definition).
        """
        table = keyword_table(series_def.name)
        cols = keyword_columns(series_def, keywords)
        existing = {name.lower(): dtype for name, dtype in self.table_columns(table).items()}
        if not existing:
            body = ",\n    ".join(
                f"{quote_ident(c.name)} {c.sql_type}" + (" NOT NULL" if c.kind == "key" else "") for c in cols
            )
            self.con.execute(f"CREATE TABLE {quote_ident(table)} (\n    {body}\n)")
        else:
            for c in cols:
                if c.name.lower() not in existing:
                    self.con.execute(f"ALTER TABLE {quote_ident(table)} ADD COLUMN {quote_ident(c.name)} {c.sql_type}")
        self.con.execute(
            f"CREATE OR REPLACE VIEW {quote_ident(series_slug(series_def.name))} AS "
            f"SELECT * EXCLUDE (_gone_at) FROM {quote_ident(table)} WHERE _gone_at IS NULL"
        )
        return cols

    # -- series definitions and sync chunks (sync.py) ----------------------------------------
    @contextmanager
    def bulk_load(self, memory_limit: str = "128MB", threads: int = 1):
        """Settings for streaming inserts: bounded memory, and one DuckDB thread.

        Sync's inserts are small next to JSOC's reply time; one thread leaves the second core to
        the fetch thread and the JSON decoding, and the memory limit keeps the syncing process
        bounded whatever the series size (DuckDB spills beyond it). A 256MB checkpoint threshold
        (default 16MB) stops DuckDB from re-compressing the growing last row group at nearly every
        commit (measured: ~20% less CPU for a 1M-record sync); the WAL it leaves after a crash is
        replayed on the next open. Restored afterwards.
        """
        old = dict(self.con.execute(
            "SELECT name, value FROM duckdb_settings() WHERE name IN ('memory_limit', 'threads', "
            "'checkpoint_threshold')").fetchall())
        self.con.execute("SET checkpoint_threshold = '256MB'")
        self.con.execute(f"SET memory_limit = '{_setting_text(memory_limit)}'")
        self.con.execute(f"SET threads = {int(threads)}")
        try:
            yield self
        finally:
            for name, value in old.items():
                self.con.execute(f"SET {name} = '{_setting_text(value)}'")

    @contextmanager
    def setting(self, name: str, value: str):
        """One DuckDB setting for the duration of the block (settings are the whole database's)."""
        (old,), = self.con.execute("SELECT value FROM duckdb_settings() WHERE name = $n", {"n": name}).fetchall()
        self.con.execute(f"SET {quote_ident(name)} = '{_setting_text(value)}'")
        try:
            yield
        finally:
            self.con.execute(f"SET {quote_ident(name)} = '{_setting_text(old)}'")

    def transaction(self):
        """``with catalog.transaction():`` one atomic unit; rolled back on any exception."""
        return _Transaction(self)

    def put_series_def(self, series: str, struct_json: str, struct_hash: str, interval_json: str | None) -> bool:
        """Store a series' definition; True if it is new or changed since the last time."""
        old = self.q("series_def_get", series=series).fetchall()
        self.q("series_def_put", series=series, slug=series_slug(series), struct=struct_json,
               struct_hash=struct_hash, interval=interval_json)
        return not old or old[0][2] != struct_hash

    def window_where(self, window, alias: str = "") -> tuple[str, dict[str, Any]]:
        """SQL condition (and its parameters) selecting a sync window's rows of a keyword table.

        ``window`` has ``slot_column`` (or None), ``lo``/``hi`` (slot range ``[lo, hi)``),
        ``anchor``/``every`` (sampling: ``(slot - anchor) % every = 0``) and ``key_lists``
        (column -> accepted values).
        """
        pre = f"{alias}." if alias else ""
        parts, params = ["TRUE"], {}
        if window.slot_column is not None:
            col = pre + quote_ident(window.slot_column)
            if window.lo is not None:
                parts.append(f"{col} >= $w_lo")
                params["w_lo"] = int(window.lo)
            if window.hi is not None:
                parts.append(f"{col} < $w_hi")
                params["w_hi"] = int(window.hi)
            if window.every > 1:
                parts.append(f"({col} - $w_anchor) % $w_every = 0")
                params.update(w_anchor=int(window.anchor), w_every=int(window.every))
        for i, (column, values) in enumerate(sorted(window.key_lists.items())):
            parts.append(f"list_contains($w_k{i}, {pre}{quote_ident(column)})")
            params[f"w_k{i}"] = list(values)
        return " AND ".join(parts), params

    def apply_chunk(self, series: str, columns: list[Column], rows, window, synced_at,
                    advance: dict[str, Any] | None = None) -> dict[str, int]:
        """``apply_rows`` and the ``sync_state`` advance in one transaction of their own."""
        with self.transaction():
            counts = self.apply_rows(series, columns, rows, window, synced_at)
            if advance is not None:
                self.advance_watermark(series, advance)
        return counts

    def advance_watermark(self, series: str, advance: dict[str, Any]) -> None:
        """Move a series' watermark (``watermark_index``, ``watermark_time``, ``run_id``) forward."""
        self.q("sync_state_advance", series=series, **advance).fetchall()

    def begin(self) -> None:
        self.con.execute("BEGIN TRANSACTION")

    def commit(self) -> None:
        try:
            self.con.execute("COMMIT")
        except duckdb.Error as err:
            raise CatalogError(f"cannot commit to the catalog: {_first_line(err)}") from None
        if self.after_commit is not None:
            self.after_commit()

    def rollback(self) -> None:
        try:
            self.con.execute("ROLLBACK")
        except duckdb.Error:
            pass  # nothing was open

    def apply_rows(self, series: str, columns: list[Column], rows, window, synced_at) -> dict[str, int]:
        """Upsert one chunk of rows (an Arrow table) and mark the window's vanished rows gone.

        MERGE by ``_key`` (a changed ``_recnum`` moves the old one to ``_prev_recnum``), and
        ``_gone_at`` for rows of ``window`` absent from the chunk. Runs inside the caller's
        transaction, so rows, gone-marks and the watermark that covers them commit together.
        Returns counts new/reprocessed/unchanged/restored/gone.
        """
        table = quote_ident(keyword_table(series))
        names = [c.name for c in columns if c.kind != "record"] + ["_recnum", "_sunum", "_online", "_size"]
        cols = ", ".join(quote_ident(n) for n in names)
        where, params = self.window_where(window, alias="t")
        if self.slot_range_is_empty(series, window):
            # Nothing of this slot range is here yet (a first sync): every row is new, none
            # can be gone, and a plain INSERT is much cheaper than MERGE. A record's key
            # fixes its slot, so no key of the chunk can live outside the range.
            return {"new": self.insert_new_rows(series, columns, rows, synced_at),
                    "reprocessed": 0, "unchanged": 0, "restored": 0, "gone": 0}
        self.con.register("_jm_chunk", rows)
        try:
            counts = self.con.execute(
                "SELECT count(*) FILTER (WHERE t._key IS NULL),"
                " count(*) FILTER (WHERE t._key IS NOT NULL AND t._recnum IS DISTINCT FROM s._recnum),"
                " count(*) FILTER (WHERE t._recnum = s._recnum AND t._gone_at IS NULL),"
                " count(*) FILTER (WHERE t._recnum = s._recnum AND t._gone_at IS NOT NULL)"
                f" FROM _jm_chunk s LEFT JOIN {table} t ON t._key = s._key"
            ).fetchall()[0]
            sets = ", ".join(f"{quote_ident(n)} = s.{quote_ident(n)}" for n in names if n != "_key")
            self.con.execute(
                f"MERGE INTO {table} AS t USING _jm_chunk AS s ON t._key = s._key "
                f"WHEN MATCHED THEN UPDATE SET {sets}, "
                "_prev_recnum = CASE WHEN t._recnum IS DISTINCT FROM s._recnum THEN t._recnum ELSE t._prev_recnum END, "
                "_gone_at = NULL, _synced_at = $now "
                f"WHEN NOT MATCHED THEN INSERT ({cols}, _synced_at) VALUES ("
                + ", ".join(f"s.{quote_ident(n)}" for n in names) + ", $now)",
                {"now": synced_at},
            )
            gone = self.con.execute(
                f"UPDATE {table} AS t SET _gone_at = $now WHERE t._gone_at IS NULL AND {where} "
                "AND NOT EXISTS (SELECT 1 FROM _jm_chunk s WHERE s._key = t._key)",
                {**params, "now": synced_at},
            ).fetchall()[0][0]
        finally:
            self.con.unregister("_jm_chunk")
        return {"new": counts[0], "reprocessed": counts[1], "unchanged": counts[2], "restored": counts[3], "gone": gone}

    def insert_new_rows(self, series: str, columns: list[Column], rows, synced_at) -> int:
        """Plain INSERT of rows none of which the table has (see ``slot_range_is_empty``)."""
        table = quote_ident(keyword_table(series))
        names = [c.name for c in columns if c.kind != "record"] + ["_recnum", "_sunum", "_online", "_size"]
        cols = ", ".join(quote_ident(n) for n in names)
        self.con.register("_jm_chunk", rows)
        try:
            self.con.execute(f"INSERT INTO {table} ({cols}, _synced_at) SELECT {cols}, $now FROM _jm_chunk",
                             {"now": synced_at})
        finally:
            self.con.unregister("_jm_chunk")
        return rows.num_rows

    def slot_range_is_empty(self, series: str, window) -> bool:
        """True if the table has no row in the window's slot range (False when the range is unknown)."""
        if window.slot_column is None or window.lo is None or window.hi is None:
            return False  # unknown extent: take the general (MERGE) path
        table = quote_ident(keyword_table(series))
        slot = quote_ident(window.slot_column)
        return not self.con.execute(
            f"SELECT EXISTS (SELECT 1 FROM {table} WHERE {slot} >= $lo AND {slot} < $hi)",
            {"lo": int(window.lo), "hi": int(window.hi)},
        ).fetchall()[0][0]

    def row_count(self, series: str) -> int:
        """Rows in a series' keyword table, gone ones included (where its last row group stands)."""
        return self.con.execute(f"SELECT count(*) FROM {quote_ident(keyword_table(series))}").fetchall()[0][0]

    def window_recnum_changes(self, series: str, upstream, window) -> list[int]:
        """Slots of ``window`` where the catalog and ``upstream`` (Arrow: slot, _recnum) disagree.

        A slot differs when a RECNUM JSOC lists is not in the catalog (new or reprocessed) or a
        current catalog RECNUM is not in JSOC's list (deleted or replaced).
        """
        table = quote_ident(keyword_table(series))
        slot = quote_ident(window.slot_column)
        where, params = self.window_where(window, alias="t")
        self.con.register("_jm_recnums", upstream)
        try:
            rows = self.con.execute(
                f"WITH here AS (SELECT t.{slot} AS slot, t._recnum FROM {table} t WHERE t._gone_at IS NULL AND {where}) "
                "SELECT DISTINCT coalesce(h.slot, u.slot) AS slot FROM here h "
                "FULL OUTER JOIN _jm_recnums u ON h._recnum = u._recnum "
                "WHERE h._recnum IS NULL OR u._recnum IS NULL ORDER BY 1",
                params,
            ).fetchall()
        finally:
            self.con.unregister("_jm_recnums")
        return [r[0] for r in rows]

    def unique_prime_keys(self, candidates: Mapping[str, Iterable[str]]) -> tuple[tuple[str, str], ...]:
        """(series, key) for each candidate prime key that no two rows of the series' keyword table
        share: such a key (aia.lev1's FSN) identifies a record on its own, which lets the planner
        list its values under one covering time range instead of one query per time slot."""
        known = {name for (name,) in self.con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'").fetchall()}
        out = []
        for series, keys in candidates.items():
            table = keyword_table(series)
            if table not in known:
                continue
            for key in keys:
                column = quote_ident(key)
                try:
                    (unique,), = self.con.execute(
                        f"SELECT count({column}) = count(*) AND count(DISTINCT {column}) = count(*) "
                        f"FROM {quote_ident(table)}").fetchall()
                except duckdb.Error:  # no such column (a keyword filter left it out, say)
                    continue
                if unique:
                    out.append((series, key))
        return tuple(out)

    def count_window(self, series: str, window) -> int:
        table = quote_ident(keyword_table(series))
        where, params = self.window_where(window, alias="t")
        return self.con.execute(
            f"SELECT count(*) FROM {table} t WHERE t._gone_at IS NULL AND {where}", params
        ).fetchall()[0][0]

    # -- user SQL (``jsocmirror sql``) -------------------------------------------------------
    # -- runs ------------------------------------------------------------------------------
    def start_run(self, run_id: str, command: str) -> None:
        """Record a run's start; first mark 'died' the rows of runs that never finished.

        The caller holds the mirror lock, so no other process runs: an unfinished row is a killed
        run's, unless this process started it (update's row while its sync runs inside it).
        """
        for dead, what, started in self.q("runs_mark_died", live=sorted(_LIVE_RUNS)).fetchall():
            log.warning("run %s (%s, started %s UTC) died without finishing; marked 'died'", dead, what, started)
        self.q("run_start", run_id=run_id, command=command).fetchall()
        _LIVE_RUNS.add(run_id)

    def finish_run(self, run_id: str, status: str, summary: str) -> None:
        _LIVE_RUNS.discard(run_id)
        self.q("run_finish", run_id=run_id, status=status, summary=summary).fetchall()

    def run_user_sql(self, sql: str) -> tuple[list[str], list[tuple]]:
        """Run a user's statement(s); returns the last statement's column names and rows."""
        from jsocmirror.errors import UsageError

        try:
            cursor = self.con.execute(sql)
            names = [d[0] for d in cursor.description] if cursor.description else []
            return names, cursor.fetchall() if names else []
        except duckdb.Error as exc:
            message = _first_line(exc)
            if self.read_only and ("read-only" in message or "read only" in message):
                raise UsageError(f"the catalog is opened read-only: {message} (add --write to change it)") from None
            raise UsageError(f"SQL error: {message}") from None


def _setting_text(value: str) -> str:
    if not re.match(r"^[0-9A-Za-z. ]+$", str(value)):
        raise CatalogError(f"bad DuckDB setting value {value!r}")
    return str(value)


def _major(version: str) -> str:
    return version.lstrip("v").split(".")[0]


class MigrationError(CatalogError):
    """A migration failed (and was rolled back): which one, on which file, and DuckDB's reason."""

    def __init__(self, migration: str, path: str, reason: str):
        super().__init__(f"migration {migration} failed on {path}: {reason}")
        self.migration, self.reason = migration, reason


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


class _Transaction:
    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        self.con = catalog.con

    def __enter__(self):
        self.con.execute("BEGIN TRANSACTION")
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.catalog.commit()
        else:
            try:
                self.con.execute("ROLLBACK")
            except duckdb.Error:
                pass
        return False
