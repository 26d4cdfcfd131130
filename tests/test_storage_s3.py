"""Object-storage roots: [storage] settings reach every place that opens them, and an empty bucket
prefix is a new, empty root (moto's S3 server on loopback; no AWS_ENDPOINT_URL in the environment,
so only the config, or JSOCMIRROR_STORAGE_*, can lead s3fs there)."""

from __future__ import annotations

import dataclasses
import os

import pytest
from conftest import moto_s3

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

import jsocmirror  # noqa: E402
from jsocmirror import config as cfg  # noqa: E402
from jsocmirror.catalog import Catalog  # noqa: E402
from jsocmirror.errors import ConfigError, ScanError  # noqa: E402
from jsocmirror.layout import Layout  # noqa: E402
from jsocmirror.scan import scan_tree  # noqa: E402
from jsocmirror.series import builtin_series  # noqa: E402
from jsocmirror.update import update_mirror  # noqa: E402
from test_cli_catalog import run  # noqa: E402
from test_update import AIA_START, EMAIL, HMI_START, options  # noqa: E402


@pytest.fixture(scope="module")
def s3():
    import s3fs

    assert "AWS_ENDPOINT_URL" not in os.environ
    with moto_s3() as endpoint:
        s3fs.S3FileSystem.clear_instance_cache()
        fs = s3fs.S3FileSystem(endpoint_url=endpoint)
        for bucket in ("fresh", "other"):
            fs.mkdir(bucket)
        try:
            yield fs, endpoint
        finally:
            s3fs.S3FileSystem.clear_instance_cache()


def _add_series(config: cfg.MirrorConfig) -> cfg.MirrorConfig:
    config = cfg.with_series(config, cfg.SeriesConfig("hmi.M_720s", segments=["magnetogram"], start=HMI_START))
    config = cfg.with_series(config, cfg.SeriesConfig("aia.lev1_euv_12s", segments=["image"], start=AIA_START,
                                                      cadence="1m", keys={"WAVELNTH": [171]}, method="url",
                                                      protocol="fits"))
    config = dataclasses.replace(config, transfer=dataclasses.replace(config.transfer, max_connections=4,
                                                                      poll_interval=0.05))
    cfg.save_config(config)
    return cfg.load_config(config.mirror_dir)


def test_init_and_update_on_an_empty_bucket_prefix_with_the_endpoint_from_the_config(s3, emu, tmp_path):
    fs, endpoint = s3
    root = tmp_path / "m"
    run("init", root, "--server", emu.url, "--offline", "--email", EMAIL, "--data-root", "s3://fresh/sdo", "--endpoint-url", endpoint)
    config = cfg.load_config(root)
    assert config.storage.endpoint_url == endpoint and config.storage_options() == {"endpoint_url": endpoint}
    fs.invalidate_cache()
    assert not fs.exists("fresh/sdo")  # object stores have no directories: the prefix is still empty
    config = _add_series(config)
    summary = update_mirror(config, emu.url, options())
    assert summary.exit_code == 0 and summary.files_downloaded == 31, summary.render()
    fs.invalidate_cache()
    assert len(fs.find("fresh/sdo")) == 31
    # readers' tools go through the same settings: status reads the published copy and scans nothing
    status = run("status", "-m", root).output
    assert "hmi.M_720s: 16 files" in status and "aia.lev1_euv_12s: 15 files" in status
    assert "31 files" in run("scan", "-m", root).output


def test_environment_overrides_the_config_and_reaches_an_s3_read_root(s3, emu, tmp_path, monkeypatch):
    fs, endpoint = s3
    root = tmp_path / "m"
    monkeypatch.setenv("JSOCMIRROR_STORAGE_ENDPOINT_URL", endpoint)
    run("init", root, "--server", emu.url, "--offline", "--email", EMAIL, "--data-root", "s3://other/data")
    config = cfg.load_config(root)
    assert config.storage == cfg.StorageConfig()  # the environment's settings are not written into the file
    # a dead endpoint in the file; the environment's JSOCMIRROR_STORAGE_ENDPOINT_URL wins
    config = dataclasses.replace(config, read="s3://other/read",
                                 storage=cfg.StorageConfig(endpoint_url="http://127.0.0.1:9"))
    cfg.save_config(config)
    config = _add_series(cfg.load_config(root))
    assert cfg.load_config(root).storage.endpoint_url == "http://127.0.0.1:9"  # the file keeps its own value
    summary = update_mirror(config, emu.url, options(series=["hmi.M_720s"]))
    assert summary.exit_code == 0 and summary.files_downloaded == 16, summary.render()
    fs.invalidate_cache()
    assert fs.exists("other/read/manifest.json")
    with jsocmirror.open(root) as mirror:  # the Mirror takes the config's settings, with the override
        assert len(mirror.files("hmi.M_720s")) == 16
        assert mirror.files("hmi.M_720s")[0].startswith("s3://other/data/hmi.M_720s/")
    monkeypatch.setenv("JSOCMIRROR_STORAGE_ANON", "maybe")
    with pytest.raises(ConfigError, match="JSOCMIRROR_STORAGE_ANON='maybe' is not accepted"):
        cfg.load_config(root)


def test_scan_of_a_missing_prefix_is_empty_but_a_missing_bucket_or_local_root_is_an_error(s3, tmp_path):
    _fs, endpoint = s3
    layout = Layout(builtin_series())
    with Catalog(tmp_path / "catalog.duckdb") as catalog:
        result = scan_tree(catalog, "s3://fresh/nothing/here", layout, storage_options={"endpoint_url": endpoint})
        assert result.files == 0 and result.by_state == {}
    with Catalog(tmp_path / "catalog2.duckdb") as catalog:
        with pytest.raises(ScanError, match="no bucket 'no-such-bucket'"):
            scan_tree(catalog, "s3://no-such-bucket/sdo", layout, storage_options={"endpoint_url": endpoint})
    with Catalog(tmp_path / "catalog3.duckdb") as catalog:
        with pytest.raises(ScanError, match="is not a directory"):
            scan_tree(catalog, str(tmp_path / "missing"), layout)


@pytest.mark.parametrize("storage, message", [
    ('endpoint_url = "s3.example.org"', "is not an http(s):// URL"),
    ("anon = 1", "anon 1 must be true or false"),
    ('client_kwargs = "eu"', "client_kwargs must be a table"),
    ('endpont_url = "https://x"', "unknown key 'endpont_url' in [storage]; valid keys: endpoint_url"),
])
def test_bad_storage_settings_are_one_line_errors(tmp_path, storage, message):
    (tmp_path / "jsocmirror.toml").write_text(f"[storage]\n{storage}\n")
    with pytest.raises(ConfigError) as info:
        cfg.load_config(tmp_path)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_storage_options_merge_file_and_environment():
    storage = cfg.StorageConfig(endpoint_url="https://a.example.org", profile="p", anon=False,
                                client_kwargs={"region_name": "eu-west-1"}, options={"requester_pays": True})
    assert cfg.storage_options(storage, environ={}) == {
        "requester_pays": True, "endpoint_url": "https://a.example.org", "profile": "p", "anon": False,
        "client_kwargs": {"region_name": "eu-west-1"}}
    env = {"JSOCMIRROR_STORAGE_PROFILE": "q", "JSOCMIRROR_STORAGE_ANON": "true",
           "JSOCMIRROR_STORAGE_CLIENT_KWARGS": '{"region_name": "us-east-2"}'}
    merged = cfg.storage_options(storage, environ=env)
    assert merged["profile"] == "q" and merged["anon"] is True and merged["client_kwargs"] == {"region_name": "us-east-2"}
    assert cfg.storage_options(None, environ={}) == {}
    with pytest.raises(ConfigError, match="must be a JSON object"):
        cfg.storage_options(storage, environ={"JSOCMIRROR_STORAGE_CLIENT_KWARGS": "[1]"})
