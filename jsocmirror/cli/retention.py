"""``jsocmirror prune``: retention (keep, max_bytes, orphans) run by an operator."""

from __future__ import annotations

import json
import os
import uuid

import click

from jsocmirror import config as cfg
from jsocmirror.catalog import Catalog
from jsocmirror.cli import cli, echo_json, json_option, mirror_option, quiet, run_log, wait_option
from jsocmirror.cli.mirror import skip_paths
from jsocmirror.lock import mirror_lock, reading_lock
from jsocmirror.scan import shadow_inventory
from jsocmirror.publish import publishing
from jsocmirror.retention import RetentionPlan, RetentionResult, apply_retention, human_bytes, plan_retention


@cli.command("prune")
@mirror_option
@click.argument("series_names", nargs=-1, metavar="[SERIES]...")
@click.option("--dry-run", is_flag=True, help="List what would go (per series and reason) and change nothing.")
@click.option("--force", is_flag=True,
              help="Lift the [retention] max_delete_fraction guard for this run (after checking --dry-run).")
@click.option("--list", "list_files", is_flag=True, help="Also list every file that goes (or would go).")
@json_option
@wait_option
@click.pass_context
def prune(ctx, mirror_dir, series_names, dry_run, force, list_files, as_json, wait):
    """Apply retention now: keep, max_bytes and orphans of the configured series (all, or those named).

    Scans the data root first, under the mirror's lock. Files of records older than 'keep' and the
    oldest past 'max_bytes' are deleted; orphans go as 'orphans' says (trash or delete); dated trash
    folders older than [retention] trash_days are emptied (whole-mirror runs only). A series that
    would lose more than max_delete_fraction of its files is refused (exit 1). Only layout files
    the inventory holds are ever touched.
    """
    config = cfg.load_config(mirror_dir)
    names = list(series_names) or None
    if dry_run:  # as the real run plans (after a scan), but read-only, the scan in temporary tables
        with reading_lock(config.mirror_dir, wait=wait), Catalog(config.catalog_path, read_only=True) as catalog:
            shadow_inventory(catalog)
            plan = _scan_and_plan(catalog, config, names, force)
            result = apply_retention(catalog, config, plan, dry_run=True)
    else:
        with run_log(ctx, config.mirror_dir, "prune"), mirror_lock(config.mirror_dir, "prune", wait=wait), \
                Catalog(config.catalog_path) as catalog, publishing(catalog, config):
            plan, result = _prune(catalog, config, names, force)
    code = _exit_code(result)
    if as_json:
        echo_json({"code": code, "plan": plan.as_dict(), "result": result.as_dict()})
    elif code or not quiet():
        _echo(plan, result, list_files)
    ctx.exit(code)


def _prune(catalog: Catalog, config: cfg.MirrorConfig, names, force: bool) -> tuple[RetentionPlan, RetentionResult]:
    """Scan (so the inventory is the data root as it is now), plan, apply; recorded in ``runs``."""
    from pathlib import Path

    from jsocmirror.diff import layout_for_config, refresh_file_views, series_definitions

    run_id = uuid.uuid4().hex[:12]
    catalog.start_run(run_id, "prune")
    status, summary = "failed", {}
    try:
        if "://" not in config.data_root:
            Path(config.data_root).mkdir(parents=True, exist_ok=True)
        plan = _scan_and_plan(catalog, config, names, force)
        result = apply_retention(catalog, config, plan, run_id=run_id, layout=layout_for_config(
            config, series_definitions(catalog)))
        refresh_file_views(catalog, [e.series for e in config.series])
        summary = result.as_dict()
        status = "ok" if not _exit_code(result) else "failed"
        return plan, result
    finally:
        catalog.finish_run(run_id, status, json.dumps(summary, default=str))


def _scan_and_plan(catalog: Catalog, config: cfg.MirrorConfig, names, force: bool) -> RetentionPlan:
    """The plan from the data root as it is now (a scan first; a missing local root has no files)."""
    from jsocmirror.diff import layout_for_config, series_definitions
    from jsocmirror.scan import scan_tree

    registry = series_definitions(catalog)
    if "://" in config.data_root or os.path.isdir(config.data_root):
        scan_tree(catalog, config.data_root, layout_for_config(config, registry), skip=skip_paths(config),
                  storage_options=config.storage_options())
    return plan_retention(catalog, config, names, registry=registry, force=force)


def _exit_code(result: RetentionResult) -> int:
    return 1 if result.refused or result.failures else 0


def _echo(plan: RetentionPlan, result: RetentionResult, list_files: bool) -> None:
    verb = "would go" if result.dry_run else "went"
    shown = False
    for sp in plan.series.values():
        counts = sp.by_reason()
        if not (counts or sp.refused or sp.notes or sp.quota):
            continue
        shown = True
        quota = f" of max_bytes {human_bytes(sp.quota)}" if sp.quota else ""
        click.echo(f"{sp.series}: {sp.files} files, {human_bytes(sp.bytes)}{quota}")
        for reason, acc in counts.items():
            click.echo(f"  {reason:<7} {acc['files']} files, {human_bytes(acc['bytes'])} "
                       f"{'refused' if sp.refused else verb}")
        if sp.refused:
            click.echo(f"  REFUSED: {sp.refused}")
        for note in sp.notes:
            click.echo(f"  note: {note}")
        if list_files:
            for r in sp.removals:
                click.echo(f"    {r.reason:<7} {r.action:<6} {r.path}  ({r.detail})")
    for folder in result.trash_emptied:
        click.echo(f"trash: {folder} {'would be emptied' if result.dry_run else 'emptied'}")
    for fail in result.failures[:50]:
        click.echo(f"  NOT REMOVED: {fail['path']}: {fail['reason']}")
    if not shown and not result.trash_emptied:
        click.echo("nothing to prune")
    click.echo(("dry run: " if result.dry_run else "") + result.summary_line(refusals=False))
