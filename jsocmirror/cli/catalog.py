"""Commands for the mirror and its catalog: ``init``, ``series add|remove|list|show``, ``sync``, ``sql``."""

from __future__ import annotations

import csv
import io
import json
import shutil
import sys
from contextlib import nullcontext
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import click

from jsocmirror import config as cfg
from jsocmirror.catalog import Catalog, keyword_table, series_slug
from jsocmirror.cli import (
    bar_size, bars_on_screen, cli, echo_json, echo_report, format_option, jsoc_server, json_option, mirror_option,
    output_format, quiet, run_log, show_progress, wait_option,
)
from jsocmirror.errors import CatalogError, ConfigError, JsocMirrorError, UsageError
from jsocmirror.api import refuse_changes
from jsocmirror.jsoc import JsocClient, SeriesNotFound
from jsocmirror.publish import publish

# -- init -----------------------------------------------------------------------------------------
@cli.command()
@click.argument("root", type=click.Path(file_okay=False))
@click.option("--server", default="jsoc", show_default=True,
              help='JSOC server: "jsoc" (the real one), "embedded" (built-in emulator) or a URL.')
@click.option("--email", default=None, help="Email address registered with JSOC (checked with JSOC).")
@click.option("--data-root", default=cfg.DEFAULT_DATA_ROOT, show_default=True,
              help="Where files go: a path (relative to ROOT) or any fsspec URL (s3://bucket/sdo).")
@click.option("--offline", is_flag=True, help="Do not contact JSOC (skips the email check).")
@click.option("--endpoint-url", default=None,
              help="S3-compatible endpoint of an object-storage data root (written to [storage] endpoint_url).")
@json_option
def init(root: str, server: str, email: str | None, data_root: str, offline: bool, endpoint_url: str | None,
         as_json: bool) -> None:
    """Create a mirror in ROOT: jsocmirror.toml, the DuckDB catalog, the data root and logs/."""
    path = Path(root).expanduser().resolve()
    config = init_mirror(path, server=server, email=email, data_root=data_root, check_email=not offline,
                         storage=cfg.StorageConfig(endpoint_url=endpoint_url))
    if as_json:
        echo_json({"code": 0, "mirror": str(path), "config": str(config.config_path),
                   "catalog": str(config.catalog_path), "data": config.data_root, "logs": str(path / "logs")})
        return
    echo_report(f"created mirror {path}\n"
                f"  config   {config.config_path}\n"
                f"  catalog  {config.catalog_path}\n"
                f"  data     {config.data_root}\n"
                f"  logs     {path / 'logs'}\n"
                f"next: jsocmirror series add -m {root} SERIES --start ...; then jsocmirror sync -m {root}")


def init_mirror(path: Path, *, server: str, email: str | None, data_root: str, check_email: bool,
                storage: cfg.StorageConfig | None = None) -> cfg.MirrorConfig:
    """Validate everything first, then create; on failure remove what was created."""
    if (path / cfg.CONFIG_NAME).exists():
        raise UsageError(f"{path} is already a mirror ({cfg.CONFIG_NAME} exists)")
    config = cfg.MirrorConfig(mirror_dir=path, server=server, email=email, data=data_root,
                              storage=storage or cfg.StorageConfig())
    cfg.validate_config(config)
    cfg.check_local_root(str(path), f"mirror directory {str(path)!r}")  # under a file: exit 2 before anything is made
    for name in ("data", "read"):
        cfg.check_local_root(getattr(config, f"{name}_root"), f"{name} = {getattr(config, name)!r}")
    if email and check_email:
        with jsoc_server(server, path) as url:
            JsocClient(url).require_registered(email)
    created: list[Path] = []
    try:
        if not path.exists():
            try:
                path.mkdir(parents=True)
            except OSError as exc:
                raise JsocMirrorError(f"cannot create mirror directory {path}: {exc.strerror}") from None
            created.append(path)
        _check_writable(path)
        logs = path / "logs"  # the cron line in docs/nightly.md appends to logs/cron.out
        if not logs.exists():
            logs.mkdir()
            created.append(logs)
        read_root = Path(config.read_root)
        if "://" not in config.read and not read_root.exists():
            created.append(read_root)
        catalog_existed = config.catalog_path.exists()
        with Catalog(config.catalog_path) as catalog:
            publish(catalog, config)
        if not catalog_existed:
            created.append(config.catalog_path)
        if "://" not in config.data or config.data.startswith("file://"):
            local = Path(config.data_root.removeprefix("file://"))
            if not local.exists():
                local.mkdir(parents=True)
                created.append(local)
        else:
            import fsspec

            try:
                fs, root_path = fsspec.core.url_to_fs(config.data_root, **config.storage_options())
                fs.makedirs(root_path, exist_ok=True)
            except Exception as exc:  # fsspec backends raise their own types
                raise JsocMirrorError(f"cannot create data root {config.data_root}: {exc}") from None
        cfg.save_config(config)
    except BaseException:
        for item in reversed(created):
            if item.is_dir():
                shutil.rmtree(item, ignore_errors=True)
            else:
                item.unlink(missing_ok=True)
                Path(str(item) + ".wal").unlink(missing_ok=True)
        raise
    return config


def _check_writable(path: Path) -> None:
    probe = path / ".jsocmirror-write-test"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise JsocMirrorError(f"mirror directory {path} is not writable: {exc.strerror}") from None


# -- series ---------------------------------------------------------------------------------------
@cli.group()
def series() -> None:
    """Add, remove, list and show the mirrored series."""


def _csv_list(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def _parse_key_options(items: tuple[str, ...]) -> dict[str, list]:
    keys: dict[str, list] = {}
    for item in items:
        name, sep, values = item.partition("=")
        if not sep or not name.strip() or not values.strip():
            raise UsageError(f"--key {item!r} is not NAME=v1,v2 (e.g. --key HARPNUM=11465,11466)")
        parsed: list[int | str] = []
        for v in values.split(","):
            v = v.strip()
            parsed.append(int(v) if v.lstrip("-").isdigit() else v)
        keys[name.strip().upper()] = parsed
    return keys


def fetch_definition(client: JsocClient, name: str):
    """(canonical name, SeriesDef) of a series from JSOC; unknown series -> ConfigError with closest names."""
    from jsocmirror.sync import struct_definition

    try:
        struct = client.series_struct(name)
    except SeriesNotFound:
        try:
            names = client.series_names()
        except JsocMirrorError:
            names = []
        raise ConfigError(f"JSOC has no series {name!r}; " + cfg.choices_text(name, names, "series")) from None
    canonical = name
    try:
        names = client.series_names()
        canonical = next((n for n in names if n.lower() == name.lower()), name)
    except JsocMirrorError:
        pass
    sdef, _, _ = struct_definition(struct, canonical)
    return canonical, sdef


@series.command("add")
@mirror_option
@click.argument("name")
@click.option("--segments", help="Comma list of segments to download (default: none, keywords only).")
@click.option("--start", help="Window start (JSOC time; default: the series' first record).")
@click.option("--end", help="Window end, inclusive (default: open, up to the newest record).")
@click.option("--cadence", help="Sampling of the time prime key, e.g. 12m or 1h (default: every record).")
@click.option("--key", "keys", multiple=True, help="Prime-key values: NAME=v1,v2 (repeatable), e.g. HARPNUM=11465.")
@click.option("--filter", "filter_", help="Keyword filter: the SQL inside JSOC's [? ?], e.g. \"QUALITY = 0\".")
@click.option("--keywords", help="Comma list of keywords to keep (default: all).")
@click.option("--layout", help="File layout template (default: the layout's default).")
@click.option("--method", type=click.Choice(cfg.METHODS), help="Export method (default: [transfer] method).")
@click.option("--protocol", type=click.Choice(cfg.PROTOCOLS), help="Export protocol (default: [transfer] protocol).")
@click.option("--header-fill/--no-header-fill", default=None,
              help="Write the catalog's keywords into as-is FITS headers (default: [transfer] header_fill).")
@json_option
def series_add(mirror_dir, name, segments, start, end, cadence, keys, filter_, keywords, layout, method, protocol,
               header_fill, as_json):
    """Add NAME to the mirror (or replace its entry), checked against JSOC's definition.

    Without --segments the entry is keywords only: sync fills its catalog table, no file is
    downloaded, and status/diff do not list it. The download settings (--method, --protocol,
    --layout, --header-fill) need --segments.
    """
    config = cfg.load_config(mirror_dir)
    entry = cfg.SeriesConfig(
        series=name.strip(), segments=_csv_list(segments) or [], start=start, end=end, cadence=cadence,
        keys=_parse_key_options(keys), filter=filter_, keywords=_csv_list(keywords), layout=layout,
        method=method, protocol=protocol, header_fill=header_fill,
    )
    cfg.validate_series_entry(entry)  # local checks first: no request for a malformed entry
    with jsoc_server(config.server, config.mirror_dir) as url:
        canonical, sdef = fetch_definition(JsocClient(url, email=config.email, policy=config.network), entry.series)
    entry.series = canonical
    _keep_what_the_options_cannot_say(config, entry)
    entry.segments = [sdef.segment(s).name if sdef.segment(s) else s for s in entry.segments]
    entry.keys = {sdef.keyword(k).name if sdef.keyword(k) else k: v for k, v in entry.keys.items()}
    if entry.keywords is not None:
        entry.keywords = [sdef.keyword(k).name if sdef.keyword(k) else k for k in entry.keywords]
    cfg.validate_series_entry(entry, sdef)
    cfg.check_download_settings(entry, sdef)
    replaced = any(s.series.lower() == canonical.lower() for s in config.series)
    cfg.edit_config(config.mirror_dir, lambda fresh: cfg.with_series(fresh, entry))
    if as_json:
        echo_json({"code": 0, "action": "updated" if replaced else "added", "series": canonical,
                   "config": str(config.config_path), "entry": _entry_dict(entry),
                   "keywords_only": not entry.segments})
        return
    echo_report(f"{'updated' if replaced else 'added'} {canonical} in {config.config_path}"
                + ("" if entry.segments else " (keywords only: no --segments, so no files are downloaded)"))


@series.command("remove")
@mirror_option
@click.argument("name")
@json_option
def series_remove(mirror_dir, name, as_json):
    """Remove NAME from the config (its catalog table stays; drop it with `sql --write`)."""
    config = cfg.load_config(mirror_dir)
    entry = config.get_series(name)
    cfg.edit_config(config.mirror_dir, lambda fresh: cfg.without_series(fresh, name))
    if as_json:
        echo_json({"code": 0, "action": "removed", "series": entry.series, "config": str(config.config_path),
                   "table_kept": keyword_table(entry.series)})
        return
    echo_report(f"removed {entry.series} from {config.config_path} (table {keyword_table(entry.series)} kept)")


#: Entry settings ``series add`` has no option for: replacing an entry keeps them (dropping a
#: max_bytes silently would bring back, the next night, every file its quota had removed).
_NOT_OPTIONS = ("keep", "max_bytes", "orphans")


def _keep_what_the_options_cannot_say(config: cfg.MirrorConfig, entry: cfg.SeriesConfig) -> None:
    old = next((s for s in config.series if s.series.lower() == entry.series.lower()), None)
    if old is None:
        return
    for name in _NOT_OPTIONS:
        if getattr(entry, name) is None and getattr(old, name) is not None:
            setattr(entry, name, getattr(old, name))
    if entry.header_fill is None:
        entry.header_fill = old.header_fill


def _entry_dict(entry: cfg.SeriesConfig) -> dict:
    return {k: v for k, v in entry.__dict__.items() if v not in (None, [], {})}


@series.command("list")
@mirror_option
@json_option
def series_list(mirror_dir, as_json):
    """The configured series, their windows, and what the catalog holds."""
    config = cfg.load_config(mirror_dir)
    if as_json:
        states = _sync_states(config)
        echo_json({"code": 0, "series": [{**_entry_dict(e), "state": states.get(e.series.lower())}
                                         for e in config.series]})
        return
    if not config.series:
        click.echo("no series configured; add one with 'jsocmirror series add'")
        return
    states = _sync_states(config)
    rows = [("series", "window", "keys", "segments", "records", "synced to")]
    for e in config.series:
        state = states.get(e.series.lower(), {})
        window = f"{e.start or 'first'} .. {e.end or 'now'}" + (f" @{e.cadence}" if e.cadence else "")
        keys = " ".join(f"{k}={','.join(map(str, v))}" for k, v in e.keys.items()) + (f" [? {e.filter} ?]" if e.filter else "")
        rows.append((e.series, window, keys or "-", ",".join(e.segments) or "-",
                     str(state.get("records") if state.get("records") is not None else "-"),
                     str(state.get("watermark_time") or "never")))
    _echo_table(rows)


@series.command("show")
@mirror_option
@click.argument("name")
@json_option
def series_show(mirror_dir, name, as_json):
    """One series: its config entry, JSOC definition (as last synced) and sync state."""
    config = cfg.load_config(mirror_dir)
    entry = config.get_series(name)
    if as_json:
        echo_json({"code": 0, "series": entry.series, "table": keyword_table(entry.series),
                   "view": series_slug(entry.series), "entry": _entry_dict(entry),
                   "method": config.method_for(entry), "protocol": config.protocol_for(entry),
                   "state": _sync_states(config).get(entry.series.lower())})
        return
    click.echo(f"series     {entry.series}")
    click.echo(f"table      {keyword_table(entry.series)}   (view {series_slug(entry.series)})")
    for field in ("segments", "start", "end", "cadence", "keys", "filter", "keywords", "layout"):
        value = getattr(entry, field)
        click.echo(f"{field:<10} {value if value not in (None, [], {}) else '-'}")
    click.echo(f"method     {config.method_for(entry)}  protocol {config.protocol_for(entry)}")
    state = _sync_states(config).get(entry.series.lower())
    if state:
        click.echo(f"synced to  {state['watermark_time'] or '-'}  records {state['records']}  "
                   f"complete {state['complete']}  (last run {state['updated_at']} UTC)")
        if state.get("primekeys"):
            click.echo(f"prime keys {', '.join(state['primekeys'])}; {state['nkeywords']} keywords; "
                       f"segments {', '.join(state['segments']) or '-'}")
    else:
        click.echo("synced to  never (run 'jsocmirror sync')")


def _sync_states(config: cfg.MirrorConfig) -> dict[str, dict]:
    """What the readers' copy says of each configured series (empty before the first publish)."""
    from jsocmirror.api import Mirror

    try:
        mirror = Mirror(config.read_root, config=config)
    except CatalogError:
        return {}
    out: dict[str, dict] = {}
    with mirror:
        catalog = mirror.catalog
        for e in config.series:
            rows = catalog.q("sync_state_get", series=e.series).fetchall()
            if not rows:
                continue
            (series_, _sel, _lo, _wm, wm_time, complete, *_r, records, _run, updated) = rows[0]
            state = {"watermark_time": wm_time, "complete": complete, "records": records, "updated_at": updated}
            defs = catalog.q("series_def_get", series=e.series).fetchall()
            if defs:
                struct = json.loads(defs[0][1])
                state["primekeys"] = struct.get("primekeys", [])
                state["nkeywords"] = len(struct.get("keywords", []))
                state["segments"] = [s["name"] for s in struct.get("segments") or []]
            out[e.series.lower()] = state
    return out


# -- sync -----------------------------------------------------------------------------------------
class _TqdmProgress:
    """Renders sync progress as one tqdm bar per series (records, with chunks as postfix)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.wants_total = enabled  # one rs_summary per series buys an exact bar
        self.bar = None
        self.chunks = 0

    def series_started(self, series: str, estimated_records: int | None) -> None:
        self.close()
        if not self.enabled:
            return
        from tqdm import tqdm

        self.chunks = 0
        size = bar_size()
        # Plain counts ("12480 rec"): unit_scale showed "0.00rec" until the first reply arrived.
        self.bar = tqdm(total=estimated_records or None, desc=series, unit=" rec", file=sys.stderr, leave=False,
                        **size)

    def chunk_done(self, series: str, records: int) -> None:
        if self.bar is not None:
            self.chunks += 1
            if self.bar.total is not None and self.bar.n + records > self.bar.total:
                self.bar.total = self.bar.n + records
            self.bar.update(records)
            self.bar.set_postfix(chunks=self.chunks, refresh=False)

    def series_done(self, summary) -> None:
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@cli.command("sync")
@mirror_option
@click.argument("series_names", nargs=-1, metavar="[SERIES]...")
@click.option("--full", is_flag=True,
              help="Compare every RECNUM of the window with JSOC, even if the probe shows no change "
                   "(catches deletions deep in the past).")
@json_option
@wait_option
@click.pass_context
def sync_command(ctx, mirror_dir, series_names, full, as_json, wait):
    """Pull keyword metadata of the configured series (all, or those named) into the catalog.

    Only what can have changed is asked for: records past the watermark plus the trailing
    re-check window; a series whose series_struct probe is unchanged is skipped.
    """
    from jsocmirror.lock import mirror_lock
    from jsocmirror.sync import sync

    config = cfg.load_config(mirror_dir)
    for name in series_names:
        config.get_series(name)
    progress = _TqdmProgress(show_progress(ctx))
    screen = bars_on_screen() if progress.enabled else nullcontext()
    with run_log(ctx, config.mirror_dir, "sync"), mirror_lock(config.mirror_dir, "sync", wait=wait):
        with jsoc_server(config.server, config.mirror_dir) as url, Catalog(config.catalog_path) as catalog:
            client = JsocClient(url, email=config.email, policy=config.network)
            try:
                with screen:
                    result = sync(config, catalog, client, list(series_names) or None, progress=progress, full=full)
            finally:
                progress.close()
    if as_json:
        echo_json({"code": 0, "run_id": result.run_id, "series": [s.as_dict() for s in result.series],
                   "requests": result.requests, "bytes_received": result.bytes_received,
                   "seconds": round(result.seconds, 3)})
        return
    _echo_sync_summary(result)


def _echo_sync_summary(result) -> None:
    if quiet():
        return
    rows = [("series", "new", "reprocessed", "gone", "unchanged", "records", "requests", "seconds", "")]
    for s in result.series:
        note = "unchanged upstream (probe)" if s.skipped else ("deep re-check" if s.deep_scanned else "")
        rows.append((s.series, str(s.new + s.restored), str(s.reprocessed), str(s.gone), str(s.unchanged),
                     str(s.records), str(s.requests), f"{s.seconds:.1f}", note))
    _echo_table(rows)
    click.echo(f"run {result.run_id}: {result.requests} requests, {result.bytes_received / 1e6:.1f} MB, "
               f"{result.seconds:.1f} s")


# -- publish --------------------------------------------------------------------------------------
@cli.command("publish")
@mirror_option
@click.option("--full", is_flag=True, help="Write every table again, not only the parts that changed.")
@json_option
@wait_option
def publish_command(mirror_dir, full, as_json, wait):
    """Publish the readers' copy of the catalog now.

    Every command that writes (sync, scan, update, fetch, sql --write) publishes by itself;
    this is for a catalog changed by other means, or a new read location.
    """
    from jsocmirror.lock import mirror_lock

    config = cfg.load_config(mirror_dir)
    if not config.catalog_path.exists():
        raise CatalogError(f"no catalog at {config.catalog_path}; run 'jsocmirror init' or 'jsocmirror sync'")
    with mirror_lock(config.mirror_dir, "publish", wait=wait), Catalog(config.catalog_path) as catalog:
        result = publish(catalog, config, force=full)
    if as_json:
        echo_json({"code": 0, **result.__dict__})
        return
    if not result.changed:
        echo_report(f"generation {result.generation} at {result.root} is current (nothing changed)")
        return
    echo_report(f"published generation {result.generation} to {result.root}: {result.parts_written} parts written "
                f"({result.rows_written} rows), {result.parts_kept} kept, {result.files_removed} old files removed, "
                f"{result.seconds:.2f} s")


# -- sql ------------------------------------------------------------------------------------------
@cli.command("sql")
@mirror_option
@click.argument("query")
@format_option(("table", "csv", "json"))
@click.option("--write", is_flag=True,
              help="Run QUERY on the writer's catalog (takes the run lock; publishes afterwards).")
@wait_option
def sql_command(mirror_dir, query, fmt, as_json, write, wait):
    """Run QUERY against the readers' copy of the catalog (the writer's with --write).

    Without --write it never waits for a running update and needs only read access.
    """
    fmt = output_format(fmt, as_json)
    config = cfg.load_config(mirror_dir)
    if write:
        names, rows = _write_sql(config, query, wait)
    else:
        from jsocmirror.api import Mirror

        with Mirror(config.read_root, config=config) as mirror:
            refuse_changes(mirror.con, query, hint=" (add --write to run it on the writer's catalog)")
            mirror.sandbox()  # and DuckDB itself refuses what a statement check could miss
            relation = mirror.sql(query)
            names = list(relation.columns) if relation is not None else []
            rows = _fetch_rows(relation)
    if fmt == "json":
        click.echo(json.dumps([dict(zip(names, r)) for r in rows], default=_json_default, indent=None))
    elif fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(names)
        writer.writerows([[_cell(v) for v in r] for r in rows])
        click.echo(buf.getvalue(), nl=False)
    else:
        if names:
            _echo_table([tuple(names)] + [tuple(_cell(v) for v in r) for r in rows])
        click.echo(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")


def _fetch_rows(relation) -> list[tuple]:
    import duckdb

    if relation is None:
        return []
    try:
        return relation.fetchall()
    except duckdb.Error as exc:  # errors found only while running (a bad cast, say)
        raise UsageError(f"SQL error: {str(exc).strip().splitlines()[0]}") from None


def _write_sql(config: cfg.MirrorConfig, query: str, wait: float = 0.0) -> tuple[list[str], list[tuple]]:
    """``sql --write``: the writer's catalog, under the run lock, then every table published again
    (a hand-made change may touch columns the change fingerprints do not look at)."""
    from jsocmirror.lock import mirror_lock

    if not config.catalog_path.exists():
        raise CatalogError(f"no catalog at {config.catalog_path}; run 'jsocmirror init' or 'jsocmirror sync'")
    with mirror_lock(config.mirror_dir, "sql --write", wait=wait), Catalog(config.catalog_path) as catalog:
        names, rows = catalog.run_user_sql(query)
        publish(catalog, config, force=True)
    return names, rows


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    return str(value)


def _json_default(value):
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    return str(value)


def _echo_table(rows: list[tuple]) -> None:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        click.echo("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip())
        if n == 0:
            click.echo("  ".join("-" * w for w in widths).rstrip())

