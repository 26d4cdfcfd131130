"""The coverage report: a real mirror of the emulator with every state, written, parsed and
rendered in headless Chromium; escaping, empty mirrors and bad --out paths."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import quick_emulator

from jsocmirror.net import NetPolicy
from jsocmirror import config as cfg
from jsocmirror import report as rp
from jsocmirror.api import Mirror
from jsocmirror.catalog import Catalog
from jsocmirror.cli import cli
from jsocmirror.download import RetryPolicy
from jsocmirror.update import UpdateOptions, update_mirror

REPO = Path(__file__).resolve().parents[1]
SERIES = "hmi.M_720s"
# Four records a day for three months of 2022: old enough that about a fifth is on tape at the emulated JSOC.
WINDOW = {"start": "2022.04.01_00:00:00_TAI", "end": "2022.06.30_18:00:00_TAI", "cadence": "6h"}
STALE_DAY, CORRUPT_DAY, MISSING_DAY = "2022-05-10", "2022-05-20", "2022-06-01"
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None)


def run_cli(*args: str):
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, (args, result.output, result.exception)
    return result


def rows_of_day(rows, day: str):
    return [r for r in rows if r[0].startswith(f"[{day.replace('-', '.')}")]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """(emulator, mirror directory): a real update of the window, then one day made stale (JSOC
    reprocessed two records, seen by sync --full), one corrupt (a truncated file found by scan
    --verify) and one missing (its files deleted); offline and no-image records are the emulator's."""
    root = tmp_path_factory.mktemp("report") / "m"
    with quick_emulator() as emu:
        root.mkdir()
        config = cfg.MirrorConfig(
            mirror_dir=root, server=emu.url, email="mirror@example.org",
            series=[cfg.SeriesConfig(series=SERIES, segments=["magnetogram"], **WINDOW)],
            transfer=cfg.TransferConfig(max_connections=4, method="url_quick", protocol="as-is", poll_interval=0.05))
        cfg.save_config(config)
        with Catalog(config.catalog_path):
            pass
        Path(config.data_root).mkdir(parents=True)
        config = cfg.load_config(root)
        summary = update_mirror(config, emu.url, UpdateOptions(
            retry_policy=RetryPolicy(attempts=4, backoff=0.01, max_backoff=0.05, net=NetPolicy(idle_timeout=10))))
        assert summary.exit_code == 0 and summary.gaps.get("offline") and summary.gaps.get("no_image"), summary.render()
        with Catalog(config.catalog_path) as catalog:
            rows = catalog.execute("SELECT k._key, f.path FROM hmi_m_720s AS k JOIN local_files AS f "
                                   "ON f.record_key = k._key ORDER BY k._key").fetchall()
        data = Path(config.data_root)
        for key, _ in rows_of_day(rows, STALE_DAY)[:2]:
            emu.world.reprocess(SERIES, key)
        path = data / rows_of_day(rows, CORRUPT_DAY)[0][1]
        path.write_bytes(path.read_bytes()[:5000])
        for _, rel in rows_of_day(rows, MISSING_DAY):
            (data / rel).unlink()
        run_cli("sync", "--full", "-m", str(root))
        run_cli("scan", "--verify", "-m", str(root))
        yield emu, root


def expected_days(root: Path) -> dict[str, Counter]:
    """Each day's states by Mirror.record_files, a code path apart from the diff the report uses."""
    with Mirror(str(root / "read"), config=cfg.load_config(root)) as mirror:
        rows = mirror.record_files(SERIES).select("T_REC_str, state").fetchall()
    days: dict[str, Counter] = {}
    for t_rec, state in rows:
        days.setdefault(t_rec[:10].replace(".", "-"), Counter())[state] += 1
    return days


class Page(HTMLParser):
    """The day cells, the text and the tag structure of a page."""

    VOID = frozenset({"meta", "br", "rect", "input", "img", "link"})

    def __init__(self, text: str):
        super().__init__()
        self.cells: dict[str, dict[str, str]] = {}
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.text: list[str] = []
        self.titles: dict[str, str] = {}
        self._cell = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "rect" and a.get("class") == "day":
            self.cells[a["data-day"]] = a
            self._cell = a["data-day"]
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in self.VOID:
            if tag == "rect":
                self._cell = None
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)
        if self._cell and self.stack and self.stack[-1] == "title":
            self.titles[self._cell] = data


def write(root: Path, out: Path | None = None) -> tuple[rp.ReportResult, str]:
    result = rp.write_report(cfg.load_config(root), out)
    return result, Path(result.path).read_text(encoding="utf-8")


def test_report_cells_show_each_days_state(world):
    _, root = world
    result, text = write(root)
    assert result.path == str(root / "report.html") and result.series == 1
    page = Page(text)
    assert not page.errors and not page.stack and text.startswith("<!DOCTYPE html>")
    expected = expected_days(root)
    assert result.days == len(expected) == len(page.cells) == 91
    assert {d: c["data-state"] for d, c in page.cells.items()} == {d: rp.day_state(c) for d, c in expected.items()}
    states = Counter(c["data-state"] for c in page.cells.values())
    assert set(states) == {"present", "missing", "stale", "corrupt", "offline", "no_image"}, states
    assert page.cells[STALE_DAY]["data-state"] == "stale" and page.cells[CORRUPT_DAY]["data-state"] == "corrupt"
    assert page.cells[MISSING_DAY]["data-state"] == "missing"
    # a day partly on tape is blue, not a failure, and its tooltip says all that is online is here
    tape_day = next(d for d, c in sorted(expected.items()) if set(c) == {"present", "offline"})
    assert page.cells[tape_day]["data-state"] == "offline" and page.cells[tape_day]["fill"] == rp.COLOURS["offline"]
    n_present, n_offline = expected[tape_day]["present"], expected[tape_day]["offline"]
    assert page.titles[tape_day] == (f"{tape_day}: {n_offline} offline (on tape), {n_present} present; "
                                     f"{n_present}/{n_present} of the online files here")


def test_report_figures_gaps_and_runs(world):
    _, root = world
    _, text = write(root)
    expected = expected_days(root)
    totals = sum(expected.values(), Counter())
    for state in ("present", "missing", "stale", "corrupt", "offline", "no_image"):
        assert f'data-count="{state}">{totals[state]:,}</td>' in text
    with Catalog(root / "catalog.duckdb", read_only=True) as catalog:
        files, size = catalog.execute("SELECT count(*), sum(size) FROM local_files").fetchall()[0]
    assert f"<td class=\"n\">{files:,}</td>" in text and rp.human_bytes(size) in text
    mirror = shlex.quote(str(root))
    # the worst day first (all its online files deleted), with the command that fetches it
    first_gap = re.search(r'<tr class="gap"><td>([^<]+)</td><td>([^<]+)</td>', text).groups()
    assert first_gap == (SERIES, MISSING_DAY)
    assert f"<code>jsocmirror fetch -m {mirror} {SERIES}</code>" in text
    assert f"<code>jsocmirror fetch -m {mirror} --include-offline {SERIES}</code>" in text
    runs = re.findall(r'<tr class="run"><td>([\w-]+)</td>.*?<td class="status-(\w+)">', text)
    assert runs == [("sync", "ok"), ("update-sync", "ok"), ("update", "ok")]  # newest first: update-sync began inside update
    assert "sync: new 0, reprocessed 2, gone 0" in text and "downloaded " in text


def test_report_fill_commands_fill_the_gaps(world, tmp_path):
    """The commands the page gives, run as they are on a copy of the mirror, fill what they claim."""
    _, root = world
    copy = tmp_path / "m"
    shutil.copytree(root, copy)
    _, text = write(copy)
    commands = sorted(set(re.findall(r"<code>(jsocmirror fetch [^<]+)</code>", text)), key=len)
    assert len(commands) == 2
    for command in commands:
        argv = shlex.split(command.replace("&#x27;", "'"))
        assert argv[0] == "jsocmirror"
        CliRunner().invoke(cli, argv[1:])
    _, after = write(copy)
    states = Counter(c["data-state"] for c in Page(after).cells.values())
    assert set(states) <= {"present", "no_image"}, states
    assert 'class="gap"' not in after


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (.ci/run installs Debian's chromium as root)")
def test_report_renders_in_chromium(world, tmp_path):
    """Headless Chromium shows every state's colour exactly where the fixture has that state: each
    colour covers one cell area per day in that state plus the legend's swatch."""
    from PIL import Image

    _, root = world
    result, _ = write(root, tmp_path / "report.html")
    expected = Counter(rp.day_state(c) for c in expected_days(root).values())
    shot = tmp_path / "shot.png"
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--force-color-profile=srgb", "--force-device-scale-factor=1", "--hide-scrollbars",
             f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,1600"]
    url = Path(result.path).as_uri()
    subprocess.run(flags + [f"--screenshot={shot}", url], check=True, capture_output=True, timeout=120)
    dom = subprocess.run(flags + ["--dump-dom", url], check=True, capture_output=True, text=True, timeout=120).stdout
    rendered = Page(dom)
    assert Counter(c["data-state"] for c in rendered.cells.values()) == expected
    pixels = {rgb: n for n, rgb in Image.open(shot).convert("RGB").getcolors(maxcolors=1 << 24)}
    area = rp.CELL * rp.CELL
    for state in rp.DAY_STATES + ("none",):
        rgb = tuple(int(rp.COLOURS[state][i:i + 2], 16) for i in (1, 3, 5))
        assert pixels.get(rgb, 0) == (expected[state] + 1) * area, (state, pixels.get(rgb), expected[state])


def test_report_has_no_external_references(world):
    _, root = world
    _, text = write(root)
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text, re.IGNORECASE)
    assert not re.search(r"<script|<link|<img|<iframe|@import|url\(", text, re.IGNORECASE)


def hostile_data() -> rp.ReportData:
    name = '<script>alert("s")</script>'
    series = rp.SeriesReport(name, ["<b>seg</b>"], "2024.01.01 .. now", counts={"missing": 2, "present": 1},
                             days={"2024-01-02": {"missing": 2, "present": 1}}, mirror="/m & <x>")
    run = rp._run_row("r1", "update<i>", None, None, "failed\"><b>",
                      '{"failures": [{"reason": "<img src=x onerror=alert(1)>"}], "gaps": {"missing": 2}}')
    return rp.ReportData(mirror="/m & <x>", generated_at=rp._now(), series=[series], runs=[run],
                         worst=rp.worst_gaps([series], "/m & <x>"), notes=["<svg onload=alert(2)>"])


def test_report_escapes_what_comes_from_the_server():
    text = rp.render_report(hostile_data())
    page = Page(text)
    assert not page.errors and not page.stack
    for raw in ("<script", "<img", "<b>", "<i>", "<svg onload"):
        assert raw not in text
    joined = "".join(page.text)
    assert '<script>alert("s")</script>' in joined and "<img src=x onerror=alert(1)>" in joined
    assert "jsocmirror fetch -m '/m & <x>' '<script>alert(\"s\")</script>'" in joined


def test_quota_bar_from_the_series_max_bytes(world, tmp_path):
    _, root = world
    config = cfg.load_config(root)
    assert config.series[0].max_bytes is None and "quota" not in rp.render_report(
        rp.read_report_data(config)).split("</style>")[1]
    config.series[0].max_bytes = "10 MiB"  # as jsocmirror.toml says it
    data = rp.read_report_data(config)
    assert data.series[0].quota_bytes == 10 * 1024 * 1024
    used = data.series[0].bytes / data.series[0].quota_bytes
    text = rp.render_report(data)
    assert f'<i style="width:{used * 100:.1f}%"></i>' in text and f"of 10.0 MiB ({used:.1%})" in text
    config.series[0].max_bytes = data.series[0].bytes // 2  # over quota: full bar, warning colour
    assert '<span class="quota over"' in (over := rp.render_report(rp.read_report_data(config)))
    assert '<i style="width:100.0%"></i>' in over and "(200.0%)" in over


def test_day_state_order_keeps_tape_and_no_image_neutral():
    assert rp.day_state({"present": 3, "offline": 1}) == "offline"
    assert rp.day_state({"present": 3, "no_image": 1}) == "no_image"
    assert rp.day_state({"present": 3, "offline": 1, "missing": 1}) == "missing"
    assert rp.day_state({"stale": 1, "corrupt": 1, "missing": 1}) == "corrupt"
    assert rp.day_state({}) == "none"
    assert rp.day_title("2024-01-01", {"present": 3, "offline": 1}) == \
        "2024-01-01: 1 offline (on tape), 3 present; 3/3 of the online files here"


def test_report_of_an_empty_mirror_is_a_valid_page(tmp_path):
    run_cli("init", str(tmp_path / "m"), "--offline")
    out = run_cli("report", "-m", str(tmp_path / "m")).output
    assert out.startswith(f"wrote {tmp_path / 'm' / 'report.html'}: 0 series, 0 days")
    page = Page((tmp_path / "m" / "report.html").read_text())
    assert not page.errors and not page.stack
    assert "No series configured" in "".join(page.text) and "No runs recorded yet." in "".join(page.text)
    # a series configured but never synced
    config = cfg.load_config(tmp_path / "m")
    cfg.save_config(cfg.with_series(config, cfg.SeriesConfig(series=SERIES, segments=["magnetogram"])))
    result, text = write(tmp_path / "m")
    assert result.series == 1 and result.days == 0 and "not synced yet" in text and not Page(text).errors
    # a mirror directory whose readers' copy was never published
    bare = tmp_path / "bare"
    bare.mkdir()
    entry = cfg.SeriesConfig(series=SERIES, segments=["magnetogram"])
    cfg.save_config(cfg.MirrorConfig(mirror_dir=bare, series=[entry]))
    result, text = write(bare)
    assert "no readers&#x27; catalog" in text and "not synced yet" in text and not Page(text).errors


@pytest.mark.parametrize("where", ["missing-dir", "under-a-file", "a-directory"])
def test_report_bad_out_is_a_one_line_error_and_writes_nothing(tmp_path, where):
    run_cli("init", str(tmp_path / "m"), "--offline")
    (tmp_path / "file").write_text("x")
    (tmp_path / "dir").mkdir()
    out = {"missing-dir": tmp_path / "nowhere" / "r.html", "under-a-file": tmp_path / "file" / "r.html",
           "a-directory": tmp_path / "dir"}[where]
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    proc = subprocess.run([sys.executable, "-m", "jsocmirror", "report", "-m", str(tmp_path / "m"), "--out", str(out)],
                          check=False, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("Error: ") and str(out) in proc.stderr
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_report_is_written_whole_and_readable(world, tmp_path):
    _, root = world
    out = tmp_path / "r.html"
    out.write_text("old")
    result, text = write(root, out)
    assert result.bytes == out.stat().st_size == len(text.encode()) and text.rstrip().endswith("</html>")
    assert oct(out.stat().st_mode & 0o777) == "0o644"
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"]  # no temporary file left
