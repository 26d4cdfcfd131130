"""The same catalog serves many machines: the readers' copy on object storage (S3 on moto).

``update`` publishes to an S3 read root next to an S3 data root; another Python process that
imports only duckdb, s3fs, pyarrow and polars runs the docs' examples (docs/sql.md, "Reading
from other machines and tools", every ```python reader block, in order) and the docs' SQL
examples, and gets the writer's rows; ``jsocmirror.open("s3://...")`` reads it in-process, a
reader keeps its generation while a newer one is published, and the collector removes only
what no generation younger than ``KEEP_SECONDS`` (since it was superseded) uses.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import duckdb
import pytest
from conftest import moto_s3
from click.testing import CliRunner

pytest.importorskip("s3fs")
pytest.importorskip("polars")
pytest.importorskip("moto.server")

import jsocmirror  # noqa: E402
from jsocmirror import config as cfg  # noqa: E402
from jsocmirror.catalog import Catalog  # noqa: E402
from jsocmirror.cli import cli  # noqa: E402
from jsocmirror.diff import diff_mirror  # noqa: E402
from jsocmirror.publish import KEEP_SECONDS, _Store, collect_garbage, publish  # noqa: E402
from jsocmirror.update import update_mirror  # noqa: E402
from test_update import make_mirror, options  # noqa: E402

DOC = Path(__file__).resolve().parent.parent / "docs" / "sql.md"
TEXT = DOC.read_text(encoding="utf-8")
SECTION = TEXT[TEXT.index("## Reading from other machines and tools"):]
READER_BLOCKS = re.findall(r"```python reader\n(.*?)```", SECTION, re.S)
LOCATIONS = tomllib.loads(re.search(r"```toml\n(.*?)```", SECTION, re.S)[1])  # data and read, as documented
SQL_BLOCKS = [b for b in re.findall(r"```sql(?: files)?\n(.*?)```", TEXT, re.S) if "_catalog/" not in b]
READ = LOCATIONS["read"]
DATA = LOCATIONS["data"]

#: What the reader process reports, after the docs' blocks ran (appended to them).
READER_TAIL = '''
import sys as _sys
_sql = json.load(open("queries.json"))
_local = duckdb.connect("read/catalog.duckdb", read_only=True)  # the first block's connection
_out = {"sql": [json.loads(json.dumps(con.execute(q).fetchall(), default=str)) for q in _sql],
        "sql_local": [json.loads(json.dumps(_local.execute(q).fetchall(), default=str)) for q in _sql],
        "pyarrow_current": current.num_rows, "polars_good": good.height, "pandas_files": len(files),
        "paths": paths, "generation": manifest["generation"],
        "jsocmirror_modules": sorted(m for m in _sys.modules if m.split(".")[0] == "jsocmirror")}
json.dump(_out, open("result.json", "w"))
'''


@pytest.fixture(scope="module")
def s3():
    """moto on loopback; endpoint and credentials in the environment, as docs/sql.md says."""
    import s3fs

    with moto_s3(AWS_ENDPOINT_URL="{endpoint}", AWS_ALLOW_HTTP="true"):
        s3fs.S3FileSystem.clear_instance_cache()
        fs = s3fs.S3FileSystem()
        fs.mkdir(READ.removeprefix("s3://").split("/")[0])
        try:
            yield fs
        finally:
            s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="module")
def mirror(s3, emu, tmp_path_factory):
    """test_update's two-series mirror with its data root and read root on S3, after one update."""
    config = make_mirror(tmp_path_factory.mktemp("s3-mirror") / "m", emu.url)
    config = dataclasses.replace(config, data=DATA, read=READ)
    cfg.save_config(config)
    config = cfg.load_config(config.mirror_dir)
    summary = update_mirror(config, emu.url, options())
    assert summary.exit_code == 0 and summary.files_downloaded == 31, summary.render()
    s3.invalidate_cache()
    return config


def writer_rows(config, sql: str, params=None) -> list:
    with Catalog(config.catalog_path, read_only=True) as catalog:
        return catalog.execute(sql, params).fetchall()


def manifest_of(fs) -> dict:
    fs.invalidate_cache()
    return json.loads(fs.cat_file(f"{READ}/manifest.json"))


def test_another_process_with_only_duckdb_pyarrow_polars_runs_the_docs_examples(s3, mirror, tmp_path):
    config = mirror
    # the docs' local example opens read/catalog.duckdb: publish a local copy there as well
    reader_dir = tmp_path / "reader"
    reader_dir.mkdir()
    with Catalog(config.catalog_path) as catalog:
        publish(catalog, dataclasses.replace(config, read=str(reader_dir / "read")))
    queries, expected = [], []
    for sql in SQL_BLOCKS:
        try:
            rows = writer_rows(config, sql)
        except duckdb.CatalogException:  # a series this mirror lacks (hmi.sharp_720s)
            continue
        queries.append(sql)
        expected.append(json.loads(json.dumps(rows, default=str)))
    assert len(queries) >= len(SQL_BLOCKS) - 1 >= 12
    assert len(READER_BLOCKS) >= 5
    (reader_dir / "queries.json").write_text(json.dumps(queries))
    script = reader_dir / "reader.py"
    script.write_text("\n".join(READER_BLOCKS) + READER_TAIL)
    # -I: no PYTHONPATH, no script or current directory on sys.path; the cwd is outside the repo
    proc = subprocess.run([sys.executable, "-I", str(script)], cwd=reader_dir, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((reader_dir / "result.json").read_text())
    assert result["jsocmirror_modules"] == []

    current = writer_rows(config, "SELECT count(*) FROM hmi_m_720s")[0][0]
    assert current == 16
    printed = proc.stdout.splitlines()
    assert printed[0] == printed[1] == f"[({current},)]"  # the local copy and the S3 copy
    assert result["generation"] == manifest_of(s3)["generation"]
    assert f"[({result['generation']}," in printed[2]
    for got, local, want in zip(result["sql"], result["sql_local"], expected, strict=True):
        assert sorted(map(json.dumps, got)) == sorted(map(json.dumps, local)) == sorted(map(json.dumps, want))
    assert result["pyarrow_current"] == current
    assert result["polars_good"] == writer_rows(config, "SELECT count(*) FROM hmi_m_720s WHERE QUALITY = 0")[0][0]
    files = writer_rows(config, "SELECT path FROM hmi_m_720s_files WHERE segment = 'magnetogram' ORDER BY T_REC")
    assert result["pandas_files"] == len(files) == 16
    assert result["paths"] == [f"{DATA}/{path}" for (path,) in files]
    assert s3.exists(result["paths"][0]) and s3.exists(result["paths"][-1])


def test_jsocmirror_open_s3_reads_one_generation_and_the_collector_keeps_what_readers_use(s3, mirror, emu):
    config = mirror
    with jsocmirror.open(READ) as m:
        assert m.generation == manifest_of(s3)["generation"]
        assert m.data_root == DATA and m.config.read_root == READ
        assert m.sql("SELECT count(*) FROM hmi_m_720s").fetchall() == writer_rows(config, "SELECT count(*) FROM hmi_m_720s")
        assert len(m.records("hmi.M_720s", "QUALITY = 0").fetchall()) == writer_rows(
            config, "SELECT count(*) FROM hmi_m_720s WHERE QUALITY = 0")[0][0]
        paths = m.files("hmi.M_720s")
        assert len(paths) == 16 and all(p.startswith(DATA + "/hmi.M_720s/") for p in paths)
        assert s3.exists(paths[-1])
        with Catalog(config.catalog_path, read_only=True) as catalog:
            assert m.diff().counts == diff_mirror(catalog, config).counts
        status = {s.series: s for s in m.status()}
        assert status["hmi.M_720s"].counts["present"] == 16 and status["aia.lev1_euv_12s"].files == 15

    # the CLI's reading commands, on a mirror directory whose read root is on S3
    shown = CliRunner().invoke(cli, ["sql", "-m", str(config.mirror_dir), "--format", "csv",
                                     "SELECT count(*) AS n FROM hmi_m_720s"])
    assert shown.exit_code == 0 and shown.output.split() == ["n", "16"], shown.output
    # sandboxed to the readers' copy: the bucket's other objects are out of reach
    outside = CliRunner().invoke(cli, ["sql", "-m", str(config.mirror_dir),
                                       f"SELECT count(*) FROM read_parquet('{DATA}/**/*.parquet')"])
    assert outside.exit_code == 2 and "disabled by configuration" in outside.stderr, outside.output

    old = jsocmirror.open(READ)
    first, before = old.generation, old.sql("SELECT count(*) FROM hmi_m_720s").fetchall()[0][0]
    time.sleep(1.5)  # S3 times have a second's resolution: the next generation is clearly younger
    emu.world.next_night(seconds=3600)
    summary = update_mirror(config, emu.url, options())
    assert summary.exit_code == 0 and summary.files_downloaded > 0, summary.render()
    manifest = manifest_of(s3)
    assert manifest["generation"] > first
    now_count = writer_rows(config, "SELECT count(*) FROM hmi_m_720s")[0][0]
    assert now_count > before
    # the open reader keeps its generation; one that opens now sees the new one
    assert old.generation == first
    assert old.sql("SELECT count(*) FROM hmi_m_720s").fetchall()[0][0] == before
    with jsocmirror.open(READ) as new:
        assert new.generation == manifest["generation"]
        assert new.sql("SELECT count(*) FROM hmi_m_720s").fetchall()[0][0] == now_count
        assert len(new.files("hmi.M_720s")) == now_count

    # The collector: the old reader's generation was published before the second update, but
    # superseded only by it, so an hour after its own publication it is still kept.
    store = _Store(READ)
    stamps = {int(Path(p).stem): t for p, t in store.listing(store.path("gens")) if p.endswith(".json")}
    successor = min(g for g in stamps if g > first)
    assert stamps[successor] - stamps[first] >= 1
    collect_garbage(store, manifest, now=stamps[successor] + KEEP_SECONDS - 0.5)
    s3.invalidate_cache()
    root = READ.removeprefix("s3://")
    assert s3.exists(f"{root}/gens/{first:06d}.duckdb")
    held = json.loads(s3.cat_file(f"{root}/gens/{first:06d}.json"))
    assert all(s3.exists(f"{root}/{info['file']}") for parts in held["tables"].values() for info in parts.values())
    assert not any(s3.exists(f"{root}/gens/{g:06d}.json") for g in stamps if g < first)  # superseded before it
    assert old.sql("SELECT count(*) FROM hmi_m_720s").fetchall()[0][0] == before
    # an hour after the newest generation replaced them, the superseded ones go, with their files
    assert collect_garbage(store, manifest, now=time.time() + KEEP_SECONDS + 60) > 0
    s3.invalidate_cache()
    left = {p[len(root) + 1:] for p in s3.find(root)}
    kept = {info["file"] for parts in manifest["tables"].values() for info in parts.values()}
    generation = f"{manifest['generation']:06d}"
    assert left == kept | {"catalog.duckdb", "manifest.json", "mirror.json",
                           f"gens/{generation}.json", f"gens/{generation}.duckdb"}
    old.close()
    with jsocmirror.open(READ) as again:
        assert again.sql("SELECT count(*) FROM hmi_m_720s").fetchall()[0][0] == now_count
    assert len(s3.find(READ.removeprefix("s3://").split("/")[0])) < 1000  # moto is slow: keep it small
