"""jsocmirror.toml: round trips, refusal of unknown or bad values, checks against a series definition."""

from __future__ import annotations

import tomllib

import pytest

from jsocmirror.config import (
    MirrorConfig, SeriesConfig, SyncConfig, TransferConfig, config_to_toml, load_config, save_config,
    validate_series_entry, with_series, without_series,
)
from jsocmirror.errors import ConfigError
from jsocmirror.series import builtin_series

REG = builtin_series()


def full_config(tmp_path) -> MirrorConfig:
    config = MirrorConfig(mirror_dir=tmp_path, server="http://127.0.0.1:8080/", email="me@example.org",
                          data="s3://bucket/sdo", sync=SyncConfig(recheck="3d", chunk_records=20000),
                          transfer=TransferConfig(max_connections=2, method="url-tar", protocol="fits"))
    config = with_series(config, SeriesConfig(
        "hmi.sharp_720s", segments=["magnetogram", "bitmap"], start="2024.06.01_00:00:00_TAI",
        end="2024.06.30_00:00:00_TAI", cadence="1h", keys={"HARPNUM": [11355, 11358]},
        filter="QUALITY = 0 AND NOAA_ARS <> '' ", keywords=["USFLUX", "T_OBS"],
        layout="{series}/{HARPNUM}/{T_REC:%Y}", method="url", protocol="as-is"))
    return with_series(config, SeriesConfig("aia.lev1_euv_12s", start="2024-06-30T00:00:00Z",
                                            keys={"WAVELNTH": [171, 193]}))


def test_save_config_round_trips_every_field(tmp_path):
    config = full_config(tmp_path)
    save_config(config)
    assert load_config(tmp_path) == config
    text = (tmp_path / "jsocmirror.toml").read_text()
    assert text.count("# ") > 15  # documented: a comment on every setting
    assert tomllib.loads(text)["series"][0]["keys"] == {"HARPNUM": [11355, 11358]}


def test_load_config_resolves_paths(tmp_path):
    save_config(MirrorConfig(mirror_dir=tmp_path))
    config = load_config(tmp_path)
    assert config.server == "jsoc" and config.email is None
    assert config.catalog_path == tmp_path.resolve() / "catalog.duckdb"
    assert config.data_root == str(tmp_path.resolve() / "data")
    assert config.transfer.max_connections == 1  # the real JSOC asks for one connection
    config.data = "s3://bucket/sdo"
    assert config.data_root == "s3://bucket/sdo"


def test_load_config_not_a_mirror(tmp_path):
    with pytest.raises(ConfigError, match="not a jsocmirror mirror"):
        load_config(tmp_path)


@pytest.mark.parametrize("text, message", [
    ('servr = "jsoc"\n', "unknown key 'servr' in top level; valid keys: server"),
    ('[sync]\nrecheck = "2x"\n', "recheck"),
    ('[sync]\nchunk_records = 5000000\n', "chunk_records"),
    ('[transfer]\nmethod = "ftp"\n', "use one of: url_quick, url, url-tar"),
    ('server = "ftp://x"\n', "server 'ftp://x' is not accepted"),
    ('email = "nobody"\n', "is not an email address"),
    ('[[series]]\nseries = "hmi.M_45s"\nstart = "2024.06.02"\nend = "2024.06.01"\n', "is before start"),
    ('[[series]]\nseries = "hmi.M_45s"\nstart = "yesterday"\n', "not a JSOC time: 'yesterday'"),
    ('[[series]]\nseries = "hmi.M_45s"\ncadence = "fast"\n', "not a duration"),
    ('[[series]]\nseries = "hmi.M_45s"\n[[series]]\nseries = "HMI.m_45s"\n', "configured twice"),
    ('[[series]]\nseries = "hmi.M_45s"\nfilter = "QUALITY = (0"\n', "unbalanced parentheses"),
    ('[[series]]\nseries = "hmi.M_45s"\nsegmnts = []\n', "valid keys: segments"),
    ('this is not toml', "not valid TOML"),
])
def test_load_config_rejects_bad_values(tmp_path, text, message):
    (tmp_path / "jsocmirror.toml").write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("entry, message", [
    (SeriesConfig("hmi.M_45s", segments=["magnetogrm"]), "unknown segment 'magnetogrm'; valid segments: magnetogram"),
    (SeriesConfig("hmi.sharp_720s", keys={"HARPNUMM": [1]}), "valid prime keys for keys.*: HARPNUM"),
    (SeriesConfig("hmi.sharp_720s", keys={"T_REC": ["2024.01.01"]}), "selected with start/end"),
    (SeriesConfig("hmi.sharp_720s", keys={"HARPNUM": ["abc"]}), "is not an integer"),
    (SeriesConfig("hmi.M_45s", keywords=["DATAMEAM"]), "unknown keyword 'DATAMEAM'; valid keywords: DATAMEAN"),
    (SeriesConfig("hmi.M_45s", filter="QUALTY = 0"), "unknown keyword 'QUALTY'; valid keywords: QUALITY"),
    (SeriesConfig("hmi.M_45s", filter="QUALITY = = 0"), "bad filter"),
])
def test_validate_series_entry_against_definition(entry, message):
    with pytest.raises(ConfigError) as err:
        validate_series_entry(entry, REG.get(entry.series))
    assert message in str(err.value)


def test_validate_series_entry_accepts_good_entry():
    validate_series_entry(SeriesConfig("hmi.sharp_720s", segments=["Bitmap"], keys={"harpnum": ["11355"]},
                                       filter="QUALITY = 0 AND USFLUX > 1e20"), REG.get("hmi.sharp_720s"))


def test_with_series_replaces_in_place_and_without_series_removes(tmp_path):
    config = full_config(tmp_path)
    replaced = with_series(config, SeriesConfig("HMI.sharp_720s", start="2024.01.01"))
    assert [s.series for s in replaced.series] == ["HMI.sharp_720s", "aia.lev1_euv_12s"]
    assert [s.series for s in without_series(config, "aia.lev1_euv_12s").series] == ["hmi.sharp_720s"]
    with pytest.raises(ConfigError, match="valid configured series: aia.lev1_euv_12s"):
        without_series(config, "aia.lev1_euv_21s")


def test_config_to_toml_escapes_strings(tmp_path):
    config = with_series(MirrorConfig(mirror_dir=tmp_path), SeriesConfig("hmi.M_45s", filter='INSTRUME = \'a"b\\\\c\''))
    assert tomllib.loads(config_to_toml(config))["series"][0]["filter"] == config.series[0].filter


def test_every_toml_example_of_docs_config_md_is_a_valid_config(tmp_path):
    """docs/config.md's examples are what the loader accepts (and its [run]/[transfer] values load as shown)."""
    import re
    from pathlib import Path

    from jsocmirror.config import config_from_dict

    text = (Path(__file__).resolve().parent.parent / "docs" / "config.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```toml\n(.*?)```", text, re.S)
    assert len(blocks) >= 2
    configs = [config_from_dict(tomllib.loads(block), tmp_path) for block in blocks]
    assert configs[0].transfer.export_wait == 3600 and configs[0].transfer.export_max_hours == 48
    assert any(c.run.max_hours == 6 for c in configs)
