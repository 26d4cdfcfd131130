"""The wheel carries the SQL files: migrations and named queries load from an installed package."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                           "--no-index", "-w", str(out), str(ROOT)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"building the wheel failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    wheels = list(out.glob("jsocmirror-*.whl"))
    assert len(wheels) == 1
    return wheels[0]


def test_wheel_contains_every_sql_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in sorted((ROOT / "sql").rglob("*.sql")):
        rel = "jsocmirror/sql/" + path.relative_to(ROOT / "sql").as_posix()
        assert rel in names, f"{rel} is missing from {wheel.name}"
    assert any(n.startswith("jsocmirror/sql/migrations/0002_") for n in names)
    assert "jsocmirror/sql/queries/sync.sql" in names
    assert "jsocmirror/py.typed" in names  # type checkers read jsocmirror.open / Mirror's annotations


def test_installed_wheel_migrates_a_catalog(wheel, tmp_path):
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import jsocmirror.catalog as c; assert str(c.sql_dir()).startswith(sys.argv[1]), c.sql_dir();"
        "cat = c.Catalog(sys.argv[2]); print(sorted(cat.applied_migrations())); cat.q('sync_state_list').fetchall()"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(target), str(tmp_path / "c.duckdb")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    applied = [int(x) for x in proc.stdout.strip().strip("[]").split(",")]
    assert {1, 2} <= set(applied)
