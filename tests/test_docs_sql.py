"""Every ```sql block in docs/sql.md runs against the readers' copy of a freshly synced catalog and returns rows."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from jsocmirror.api import Mirror
from jsocmirror.config import SeriesConfig
from jsocmirror.emulator import Emulator

from test_sync import make_mirror, run_sync

DOC = Path(__file__).resolve().parent.parent / "docs" / "sql.md"
BLOCKS = re.findall(r"```sql\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)


@pytest.fixture(scope="module")
def mirror_config(tmp_path_factory):
    root = tmp_path_factory.mktemp("docs-mirror")
    with Emulator(state_dir=None, seed=0) as emu:
        config = make_mirror(root, emu.url, [
            SeriesConfig("hmi.M_720s", start="2024.06.26_00:00:00_TAI", end="2024.06.28_00:00:00_TAI"),
            SeriesConfig("hmi.sharp_720s", start="2024.06.28_00:00:00_TAI", end="2024.06.28_12:00:00_TAI",
                         keys={"HARPNUM": [11355, 11358]}),
            SeriesConfig("aia.lev1_euv_12s", start="2024.06.30_10:00:00_TAI", end="2024.06.30_12:00:00_TAI",
                         keys={"WAVELNTH": [171, 193]}, cadence="2m"),
        ], chunk_records=1000)
        run_sync(config, emu.url)
        key = "[2024.06.27_00:00:00_TAI][3]"
        emu.world.reprocess("hmi.M_720s", key)  # so the "reprocessed" example has a row to show
        run_sync(config, emu.url)
    return config


def test_docs_have_sql_examples():
    assert len(BLOCKS) >= 8


@pytest.mark.parametrize("sql", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_docs_sql_block_runs(mirror_config, sql):
    with Mirror(mirror_config.read_root, config=mirror_config) as mirror:  # what `jsocmirror sql` reads
        names, rows = mirror.catalog.run_user_sql(sql)
    assert names, "an example should return columns"
    if "NOT _online" not in sql and "QUALITY < 0" not in sql:
        assert rows, f"example returned no rows:\n{sql}"
