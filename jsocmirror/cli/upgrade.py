"""``jsocmirror migrate``: back up the catalog, apply pending migrations, republish (docs/upgrading.md)."""

from __future__ import annotations

import click

from jsocmirror import config as cfg
from jsocmirror.cli import cli, echo_json, echo_report, json_option, mirror_option, wait_option

from jsocmirror.upgrade import migrate_mirror


@cli.command("migrate")
@mirror_option
@click.option("--dry-run", is_flag=True, help="Say what would be applied, and change nothing.")
@json_option
@wait_option
def migrate_command(mirror_dir: str, dry_run: bool, as_json: bool, wait: float) -> None:
    """Upgrade the catalog to this jsocmirror's schema.

    Under the mirror's lock: a backup of catalog.duckdb in <mirror>/backups/ first, then the
    pending migrations, then the readers' copy published again. Exit 0 also when nothing is pending.
    """
    result = migrate_mirror(cfg.load_config(mirror_dir), dry_run=dry_run, wait=wait)
    if as_json:
        echo_json({"code": 0, **result.__dict__})
        return
    if not result.pending:
        echo_report(f"catalog {result.catalog} is at schema {result.from_schema:04d}: no migration pending")
        return
    if result.dry_run:
        click.echo(f"catalog {result.catalog} is at schema {result.from_schema:04d}; 'jsocmirror migrate' would "
                   f"back it up to {result.backups}/ and apply:")
        for name in result.pending:
            click.echo(f"  {name}")
        return
    if result.backup:
        echo_report(f"backed up {result.catalog} (schema {result.from_schema:04d}) to {result.backup}")
    for name in result.applied:
        echo_report(f"applied {name}")
    echo_report(f"catalog {result.catalog} is at schema {result.to_schema:04d}; "
                f"published generation {result.generation} to {result.read_root}")
