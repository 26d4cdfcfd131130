"""scan and diff on S3 (moto's server on loopback, through s3fs)."""

from __future__ import annotations

import pytest

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

from jsocmirror.catalog import Catalog  # noqa: E402
from jsocmirror.config import config_from_dict  # noqa: E402
from jsocmirror.diff import diff_mirror, export_catalog  # noqa: E402
from jsocmirror.layout import Layout  # noqa: E402
from jsocmirror.scan import scan_tree  # noqa: E402
from jsocmirror.series import builtin_series  # noqa: E402
from conftest import moto_s3  # noqa: E402
from test_diff import fill_keyword_table  # noqa: E402
from test_scan import fits_bytes  # noqa: E402

LAYOUT = Layout(builtin_series())


@pytest.fixture(scope="module")
def s3():
    import s3fs

    with moto_s3() as endpoint:
        options = {"client_kwargs": {"endpoint_url": endpoint}, "key": "testing", "secret": "testing"}
        fs = s3fs.S3FileSystem(**options)
        fs.mkdir("mirror")
        yield fs, options


def test_scan_tree_and_diff_on_s3(s3, tmp_path):
    fs, options = s3
    paths = [LAYOUT.relative_path("hmi.M_720s", [f"2024.01.01_00:{m:02d}:00_TAI", 3], "magnetogram") for m in (0, 12)]
    fs.pipe("mirror/data/" + paths[0], fits_bytes())
    fs.pipe("mirror/data/" + paths[1], b"")
    fs.pipe("mirror/data/stray.bin", b"?")
    fs.invalidate_cache()
    config = config_from_dict({"data": "s3://mirror/data",
                               "series": [{"series": "hmi.M_720s", "segments": ["magnetogram"]}]}, tmp_path)
    with Catalog(tmp_path / "catalog.duckdb") as catalog:
        result = scan_tree(catalog, "s3://mirror/data", LAYOUT, verify=True, storage_options=options)
        assert result.by_state == {"layout": 1, "empty": 1, "unknown": 1}
        assert catalog.execute("SELECT verify_state, file_recnum FROM local_files WHERE path = ?",
                               [paths[0]]).fetchall() == [("ok", 100)]
        fill_keyword_table(catalog, "hmi.M_720s", 3)
        diff = diff_mirror(catalog, config)
        assert {k: v for k, v in diff.counts["hmi.M_720s"].items() if v} == {"present": 1, "corrupt": 1, "missing": 1}
        # a re-scan after a delete forgets the object
        fs.rm("mirror/data/" + paths[1])
        fs.invalidate_cache()
        assert scan_tree(catalog, "s3://mirror/data", LAYOUT, storage_options=options).by_state == {"layout": 1, "unknown": 1}
        written = export_catalog(catalog, "s3://mirror/data/_catalog", storage_options=options)
        assert "mirror/data/_catalog/local_files.parquet" in written
        fs.invalidate_cache()
        assert fs.exists("mirror/data/_catalog/local_files.parquet")
        # the export is not data: a scan skips it
        assert scan_tree(catalog, "s3://mirror/data", LAYOUT, storage_options=options).by_state == {"layout": 1, "unknown": 1}
