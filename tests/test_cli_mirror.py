"""The scan/diff/status/export-catalog commands on a mirror synced from the emulator over loopback."""

from __future__ import annotations

import csv
import io
import json
import os
import re

import duckdb
from click.testing import CliRunner

from jsocmirror.catalog import Catalog, keyword_table
from jsocmirror.cli import cli
from jsocmirror.config import MirrorConfig, SeriesConfig, save_config, with_series
from jsocmirror.jsoc import JsocClient
from jsocmirror.layout import Layout
from jsocmirror.series import builtin_series
from jsocmirror.sync import sync
from test_scan import fits_bytes

LAYOUT = Layout(builtin_series())
SERIES = "hmi.M_720s"


def make_mirror(tmp_path, url):
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = MirrorConfig(mirror_dir=tmp_path, server=url, email="x@example.com")
    config = with_series(config, SeriesConfig(series=SERIES, segments=["magnetogram"],
                                              start="2024.06.30_00:00:00_TAI", end="2024.06.30_01:48:00_TAI"))
    save_config(config)
    return config


def synced_records(config, url):
    with Catalog(config.catalog_path) as catalog:
        sync(config, catalog, JsocClient(url))
        return catalog.execute(
            f'SELECT _key, "T_REC_str", "CAMERA", _recnum FROM {keyword_table(SERIES)} ORDER BY _key').fetchall()


def write_file(config, t_rec: str, camera: int, recnum: int | None, data: bytes | None = None) -> str:
    rel = LAYOUT.relative_path(SERIES, [t_rec, camera], "magnetogram")
    path = os.path.join(config.data_root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data if data is not None else fits_bytes(series=SERIES, t_rec=t_rec, camera=camera, recnum=recnum))
    return rel


def run(*args):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


DOC = os.path.join(os.path.dirname(__file__), "..", "docs", "sql.md")


def doc_blocks(lang: str) -> list[str]:
    with open(DOC, encoding="utf-8") as f:
        return re.findall(rf"```{lang} files\n(.*?)```", f.read(), re.S)


def test_cli_scan_diff_status_export_after_a_real_sync(emulator, tmp_path, monkeypatch):
    config = make_mirror(tmp_path / "m", emulator.url)
    records = synced_records(config, emulator.url)
    assert len(records) == 10
    have = records[:6]
    paths = [write_file(config, t, cam, recnum) for _, t, cam, recnum in have[:5]]
    write_file(config, have[5][1], have[5][2], None, data=b"")  # an empty file
    with open(os.path.join(config.data_root, "notes.txt"), "w") as f:
        f.write("mine")
    mirror = str(tmp_path / "m")

    code, out = run("scan", "-m", mirror, "--verify")
    assert code == 0, out
    assert "7 files" in out and "verified 5 files: ok 5" in out and "unknown: notes.txt" in out

    code, out = run("diff", "-m", mirror, "--format", "json")
    assert code == 0, out
    doc = json.loads(out)
    counts = {k: v for k, v in doc["counts"][SERIES].items() if v}
    assert counts == {"present": 5, "corrupt": 1, "missing": 4}
    assert {g["state"] for g in doc["gaps"]} == {"corrupt", "missing", "unknown"}
    assert doc["unknown_files"] == 1

    code, out = run("diff", "-m", mirror, "--format", "csv", "--state", "missing")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and [r["record_key"] for r in rows] == [r[0] for r in records[6:]]

    # JSOC reprocesses a record we hold: after the next sync our verified copy is stale
    emulator.world.reprocess(SERIES, records[0][0])
    synced_records(config, emulator.url)
    code, out = run("diff", "-m", mirror, "--state", "stale")
    assert code == 0 and f"stale     {SERIES}{records[0][0]}{{magnetogram}}" in out
    assert "is RECNUM" in out

    code, out = run("status", "-m", mirror, "--by", "day")
    assert code == 0, out
    assert f"{SERIES}: 6 files" in out and "2024-06-30" in out and "4/10" in out

    code, out = run("export-catalog", "-m", mirror)
    assert code == 0, out
    export = os.path.join(config.data_root, "_catalog")
    got = duckdb.connect().execute(
        f"SELECT count(*) FROM '{export}/local_files.parquet' WHERE state = 'layout'").fetchall()
    assert got == [(5,)]
    with Catalog(config.catalog_path) as catalog:
        assert sorted(r[0] for r in catalog.execute(
            "SELECT path FROM hmi_m_720s_files WHERE QUALITY >= 0 AND state = 'layout'").fetchall()) == sorted(paths)
    # the export under the data root does not show up as unknown files
    code, out = run("scan", "-m", mirror)
    assert code == 0 and "_catalog" not in out

    # every "files" example of docs/sql.md runs and returns rows, from the data root
    monkeypatch.chdir(config.data_root)
    blocks = doc_blocks("sql")
    assert len(blocks) >= 5
    with Catalog(config.catalog_path, read_only=True) as catalog:
        results = [catalog.run_user_sql(sql) for sql in blocks]
    for sql, (names, rows) in zip(blocks, results):
        assert names and rows, sql
    parquet_paths = {row[0] for row in results[-1][1]}
    (code_block,) = doc_blocks("python")
    scope: dict = {}
    exec(code_block, scope)  # noqa: S102 - our own documentation
    assert set(scope["paths"]) == parquet_paths and len(parquet_paths) >= 4

def test_cli_diff_bad_state_is_one_line_exit_2(tmp_path):
    config = MirrorConfig(mirror_dir=tmp_path, server="http://127.0.0.1:9/")
    save_config(config)
    code, out = run("diff", "-m", str(tmp_path), "--state", "lost")
    assert code == 2 and "state 'lost' is not one of" in out and out.count("\n") == 1


def test_cli_scan_without_a_mirror_is_exit_2(tmp_path):
    code, out = run("scan", "-m", str(tmp_path))
    assert code == 2 and "not a jsocmirror mirror" in out


def test_cli_scan_missing_data_root_is_exit_1(tmp_path):
    save_config(MirrorConfig(mirror_dir=tmp_path, server="http://127.0.0.1:9/", data="nowhere"))
    code, out = run("scan", "-m", str(tmp_path))
    assert code == 1 and "is not a directory" in out
