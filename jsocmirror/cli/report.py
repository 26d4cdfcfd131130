"""``jsocmirror report``: the coverage report as one self-contained HTML file."""

from __future__ import annotations

import click

from jsocmirror import config as cfg
from jsocmirror.cli import cli, echo_json, echo_report, json_option, mirror_option


@cli.command("report")
@mirror_option
@click.option("--out", "out", default=None, metavar="FILE",
              help="Where to write the page (default: <mirror>/report.html).")
@json_option
def report_command(mirror_dir: str, out: str | None, as_json: bool) -> None:
    """Write the coverage report: a calendar of each series' days, bytes, quota, gaps and last runs.

    One HTML file with no scripts and nothing fetched from elsewhere; it reads the readers'
    copy of the catalog, so it never waits for a running update.
    """
    from jsocmirror.report import write_report

    config = cfg.load_config(mirror_dir)
    result = write_report(config, out)
    if as_json:
        echo_json({"code": 0, **result.__dict__})
        return
    echo_report(f"wrote {result.path}: {result.series} series, {result.days} days, "
                f"{result.bytes / 1024:.0f} KiB, {result.seconds:.2f} s")
