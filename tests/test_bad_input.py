"""The bad-input corpus (issue 16): every case runs the real CLI on a real mirror (synced and
downloaded from the emulator over loopback) with one thing wrong in its config, its command
line, its catalog files or its environment, and must end in exactly one line on stderr naming
the bad value, the documented exit code, no traceback, and the mirror left as it was.

The mirror always lives at the same path (restored from a pristine copy before each case), so
the paths the catalog and its readers' copy hold stay true and nothing but the case differs.
"Unchanged" compares every file's bytes under the mirror but logs/ (a failed run logs, by design).
The terminal summary (conftest.py) says how many cases were tried and how many were clean.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
from click.testing import CliRunner

from jsocmirror import config as cfg
from jsocmirror.cli import cli

SERIES = "hmi.M_720s"
START, END = "2024.06.30_00:00:00_TAI", "2024.06.30_01:00:00_TAI"

pytestmark = pytest.mark.usefixtures("clean_faults")

#: (case id, clean?) of every case run in this module, for the summary line.
TRIED: list[tuple[str, bool]] = []


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: nothing listens there


DEAD_URL = f"http://127.0.0.1:{_dead_port()}/"


# -- the mirror -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mirror_paths(tmp_path_factory, emu):
    """(mirror, pristine copy): a mirror of one hour of hmi.M_720s, synced, downloaded, published."""
    base = tmp_path_factory.mktemp("bad-input")
    mirror = base / "mirror"
    mirror.mkdir()
    config = cfg.MirrorConfig(mirror_dir=mirror, server=emu.url, email="x@example.com",
                              series=[cfg.SeriesConfig(series=SERIES, segments=["magnetogram"], start=START, end=END)],
                              transfer=cfg.TransferConfig(poll_interval=0.05))
    cfg.save_config(config)
    result = CliRunner().invoke(cli, ["-q", "update", "-m", str(mirror)])
    assert result.exit_code == 0, (result.output, result.stderr)
    assert len(list((mirror / "data").rglob("*.fits"))) == 6
    pristine = base / "pristine"
    shutil.copytree(mirror, pristine, symlinks=True)
    return mirror, pristine


def summary_line() -> str | None:
    """What conftest's terminal summary prints: the cases tried and how many were clean."""
    if not TRIED:
        return None
    return f"bad-input corpus: {len(TRIED)} cases tried, {sum(ok for _, ok in TRIED)} clean"


def catalog_content(mirror: Path) -> dict[str, str]:
    """A digest of every catalog table but ``runs``, row by row (a failed run may add its row)."""
    import duckdb

    con = duckdb.connect(str(mirror / "catalog.duckdb"), read_only=True)
    try:
        tables = [t for (t,) in con.execute("SELECT table_name FROM duckdb_tables() ORDER BY 1").fetchall()]
        return {t: hashlib.sha256(repr(sorted(map(repr, con.execute(f'SELECT * FROM "{t}"').fetchall()))).encode())
                .hexdigest() for t in tables if t != "runs"}
    finally:
        con.close()


def fingerprint(mirror: Path) -> dict[str, str]:
    """sha256 of every file under the mirror but logs/ (and the scratch directory a run empties)."""
    out = {}
    for path in sorted(mirror.rglob("*")):
        rel = path.relative_to(mirror).as_posix()
        if rel.split("/")[0] in ("logs", ".tmp") or not path.is_file():
            continue
        out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


# -- the cases ----------------------------------------------------------------------------------------
def toml(old: str, new: str) -> Callable[[Path], None]:
    """Replace the first ``old`` in jsocmirror.toml by ``new`` (a hand edit)."""
    def edit(mirror: Path) -> None:
        path = mirror / cfg.CONFIG_NAME
        text = path.read_text()
        assert old in text, old
        path.write_text(text.replace(old, new, 1))
    return edit


def in_series(line: str) -> Callable[[Path], None]:
    """Add ``line`` to the [[series]] table."""
    return toml("end = ", f"{line}\nend = ")


def top(line: str) -> Callable[[Path], None]:
    return toml("email = ", f"{line}\nemail = ")


def write_file(name: str, data: bytes | None = None, size: int | None = None) -> Callable[[Path], None]:
    """Damage a file of the mirror: new bytes, or cut to ``size``."""
    def damage(mirror: Path) -> None:
        path = mirror / name
        if size is not None:
            with open(path, "r+b") as f:
                f.truncate(size)
        else:
            path.write_bytes(data)
    return damage


@dataclass
class Case:
    id: str
    args: list[str]  # "{m}" stands for the mirror directory
    code: int
    needle: str  # a fragment of the one stderr line: names the bad value
    setup: Callable[[Path], None] | None = None
    env: dict[str, str] = field(default_factory=dict)
    absent: str | None = None  # a path the command must not have created ("{m}" as above)
    #: a run started and failed at runtime (the source unreachable): its row in the catalog's
    #: ``runs`` table (and the readers' copy of it) is the one change allowed, as for any night
    ran: bool = False


M = ["-m", "{m}"]
SERIES_ADD = ["series", "add", *M, SERIES, "--segments", "magnetogram"]

CONFIG_CASES = [
    Case("keys-is-a-string", ["status", *M], 2, 'keys = "HARPNUM"', in_series('keys = "HARPNUM"')),
    Case("keys-is-an-integer", ["status", *M], 2, "keys = 5", in_series("keys = 5")),
    Case("keys-unknown-prime-key", ["update", *M], 2, "'FOO' is not a prime key", in_series("keys = {FOO = [1]}")),
    Case("keys-time-prime-key", ["update", *M], 2, "time prime key T_REC", in_series("keys = {T_REC = [1]}")),
    Case("keys-value-not-an-integer", ["update", *M], 2, "'x' is not an integer", in_series('keys = {CAMERA = ["x"]}')),
    Case("keys-value-with-bracket", ["status", *M], 2, "'1]'", in_series('keys = {CAMERA = ["1]"]}')),
    Case("keys-empty-list", ["status", *M], 2, "keys.CAMERA", in_series("keys = {CAMERA = []}")),
    Case("keywords-unknown", ["update", *M], 2, "unknown keyword 'NOPE'", in_series('keywords = ["NOPE"]')),
    Case("keywords-unknown-on-sync", ["sync", *M], 2, "unknown keyword 'DATAMAEN'", in_series('keywords = ["DATAMAEN"]')),
    Case("keywords-a-string", ["status", *M], 2, "keywords", in_series('keywords = "DATAMEAN"')),
    Case("toml-double-equals", ["status", *M], 2, "not valid TOML", toml("server =", "server = =")),
    Case("toml-unclosed-string", ["update", *M], 2, "not valid TOML", toml('email = "x@example.com"', 'email = "x@example.com')),
    Case("toml-not-utf8", ["status", *M], 2, "jsocmirror.toml", lambda m: (m / cfg.CONFIG_NAME).write_bytes(
        b"# \xff\xfe latin-1 bytes\n" + (m / cfg.CONFIG_NAME).read_bytes())),
    Case("unknown-top-level-key", ["status", *M], 2, "'serverr'", top('serverr = "jsoc"')),
    Case("unknown-series-key", ["status", *M], 2, "'segmnets'", in_series('segmnets = ["magnetogram"]')),
    Case("unknown-sync-key", ["status", *M], 2, "'rechek'", toml("recheck = ", 'rechek = "1d"\nrecheck = ')),
    Case("sync-not-a-table", ["status", *M], 2, "[sync] must be a table", lambda m: (m / cfg.CONFIG_NAME).write_text(
        re.sub(r"\[sync\]\n(?:[^\[]*\n)", "", (m / cfg.CONFIG_NAME).read_text(), count=1).replace(
            "email = ", "sync = 5\nemail = ", 1))),
    Case("series-entry-without-name", ["status", *M], 2, "has no 'series' name",
         toml(f'series = "{SERIES}"', '# no name')),
    Case("max-connections-a-string", ["status", *M], 2, "max_connections '1'", toml("max_connections = 1", 'max_connections = "1"')),
    Case("chunk-records-too-small", ["status", *M], 2, "chunk_records 5", toml("chunk_records = 25000", "chunk_records = 5")),
    Case("poll-interval-negative", ["status", *M], 2, "poll_interval -1", toml("poll_interval = 0.05", "poll_interval = -1")),
    Case("header-fill-yes", ["status", *M], 2, "header_fill 'yes'", toml("header_fill = true", 'header_fill = "yes"')),
    Case("verify-enabled-1", ["status", *M], 2, "enabled 1", toml("enabled = true", "enabled = 1")),
    Case("trash-days-negative", ["status", *M], 2, "trash_days -1", toml("trash_days = 7", "trash_days = -1")),
    Case("delete-fraction-2", ["status", *M], 2, "max_delete_fraction 2", toml("max_delete_fraction = 0.1", "max_delete_fraction = 2")),
    Case("orphans-burn", ["status", *M], 2, "'burn'", toml('orphans = "keep"', 'orphans = "burn"')),
    Case("server-ftp", ["update", *M], 2, "'ftp://example.org/'", toml("server = ", 'server = "ftp://example.org/"\n# was ')),
    Case("email-not-an-address", ["update", *M], 2, "'nobody'", toml('email = "x@example.com"', 'email = "nobody"')),
    Case("series-name-malformed", ["status", *M], 2, "'hmi M_720s'", toml(f'series = "{SERIES}"', 'series = "hmi M_720s"')),
    Case("series-twice", ["status", *M], 2, "configured twice",
         toml("[[series]]\nseries", f'[[series]]\nseries = "{SERIES}"\n\n[[series]]\nseries')),
    Case("segments-a-string", ["status", *M], 2, "segments", toml('segments = ["magnetogram"]', 'segments = "magnetogram"')),
    Case("start-an-integer", ["status", *M], 2, "start", toml(f'start = "{START}"', "start = 2024")),
    Case("start-february-30", ["status", *M], 2, "'2024-02-30'", toml(f'start = "{START}"', 'start = "2024-02-30"')),
    Case("end-before-start", ["status", *M], 2, "is before start", toml(f'end = "{END}"', 'end = "2023.01.01_TAI"')),
    Case("cadence-fast", ["status", *M], 2, "'fast'", in_series('cadence = "fast"')),
    Case("method-ftp", ["status", *M], 2, "'ftp'", in_series('method = "ftp"')),
    Case("protocol-jpg", ["status", *M], 2, "'jpg'", in_series('protocol = "jpg"')),
    Case("keep-forever", ["status", *M], 2, "'forever'", in_series('keep = "forever"')),
    Case("max-bytes-2-xb", ["status", *M], 2, "'2 XB'", in_series('max_bytes = "2 XB"')),
    Case("filter-no-comparison", ["status", *M], 2, "'QUALITY'", in_series('filter = "QUALITY"')),
    Case("layout-an-integer", ["status", *M], 2, "layout", in_series("layout = 5")),
    Case("storage-anon-yes", ["status", *M], 2, "anon 'yes'", toml("[storage]", '[storage]\nanon = "yes"')),
    Case("data-is-a-file", ["update", *M], 2, "/etc/passwd is a file", toml('data = "data"', 'data = "/etc/passwd"')),
    Case("data-under-a-file", ["update", *M], 2, "lies under /etc/passwd", toml('data = "data"', 'data = "/etc/passwd/sdo"')),
    Case("data-under-a-file-scan", ["scan", *M], 2, "lies under /etc/passwd", toml('data = "data"', 'data = "/etc/passwd/sdo"')),
    Case("data-unknown-protocol", ["update", *M], 2, "unknown storage protocol 'nope'", toml('data = "data"', 'data = "nope://x/sdo"')),
    Case("read-unknown-protocol", ["status", *M], 2, "unknown storage protocol 's4'", toml('read = "read"', 'read = "s4://bucket/read"')),
    Case("read-is-a-file", ["status", *M], 2, "/etc/passwd is a file", toml('read = "read"', 'read = "/etc/passwd"')),
    Case("data-unwritable", ["update", *M], 1, "cannot write in /sys/jsocmirror-data", toml('data = "data"', 'data = "/sys/jsocmirror-data"')),
    Case("data-read-only-directory", ["fetch", *M], 1, "cannot write in /sys", toml('data = "data"', 'data = "/sys"')),
    # nothing listens at the configured URL: the source is unreachable (4, as a JSOC outage); the line names the URL
    Case("server-port-unreachable", ["update", *M], 4, DEAD_URL, toml("server = ", f'server = "{DEAD_URL}"\n# was '),
         ran=True),
    Case("server-port-unreachable-sync", ["sync", *M], 4, DEAD_URL, toml("server = ", f'server = "{DEAD_URL}"\n# was '),
         ran=True),
]

CLI_CASES = [
    Case("add-start-february-30", [*SERIES_ADD, "--start", "2024-02-30"], 2, "'2024-02-30'"),
    Case("add-start-not-a-time", [*SERIES_ADD, "--start", "yesterday"], 2, "start"),
    Case("add-layout-not-invertible", [*SERIES_ADD, "--layout", "{series}/x.fits"], 2, "lacks {T_REC}"),
    Case("add-layout-without-segment", [*SERIES_ADD, "--layout", "{series}/{T_REC}/{CAMERA}.fits"], 2, "{segment}"),
    Case("add-unknown-series", ["series", "add", *M, "hmi.nope"], 2, "hmi.nope"),
    Case("add-unknown-segment", ["series", "add", *M, SERIES, "--segments", "magnetogrm"], 2, "'magnetogrm'"),
    Case("add-unknown-keyword", [*SERIES_ADD, "--keywords", "NOPE"], 2, "'NOPE'"),
    Case("add-unknown-prime-key", [*SERIES_ADD, "--key", "HARPNUM=1"], 2, "'HARPNUM'"),
    Case("add-key-without-values", [*SERIES_ADD, "--key", "CAMERA"], 2, "'CAMERA'"),
    Case("add-cadence-fast", [*SERIES_ADD, "--cadence", "fast"], 2, "'fast'"),
    Case("add-method-without-segments", ["series", "add", *M, SERIES, "--method", "url-tar"], 2, "no segments"),
    Case("remove-unconfigured", ["series", "remove", *M, "hmi.nope"], 2, "'hmi.nope'"),
    Case("update-unconfigured-series", ["update", *M, "hmi.nope"], 2, "'hmi.nope'"),
    Case("update-wait-negative", ["update", *M, "--wait=-1"], 2, "-1 is not accepted"),
    Case("update-wait-text", ["update", *M, "--wait", "soon"], 2, "'soon'"),
    Case("update-connections-0", ["update", *M, "--connections", "0"], 2, "--connections"),
    Case("diff-state-burnt", ["diff", *M, "--state", "burnt"], 2, "'burnt'"),
    Case("status-by-week", ["status", *M, "--by", "week"], 2, "'week'"),
    Case("unknown-command", ["updte", *M], 2, "'updte'"),
    Case("unknown-option", ["update", *M, "--fulll"], 2, "--fulll"),
    Case("log-level-loud", ["--log-level", "loud", "status", *M], 2, "'loud'"),
    Case("not-a-mirror", ["status", "-m", "/etc"], 2, "/etc is not a jsocmirror mirror"),
    Case("init-under-a-file", ["init", "/etc/passwd/sdo", "--offline"], 2, "lies under /etc/passwd",
         absent="/etc/passwd/sdo"),
    Case("init-data-under-a-file", ["init", "{m}-new", "--offline", "--data-root", "/etc/passwd/d"], 2,
         "lies under /etc/passwd", absent="{m}-new"),
    Case("init-existing-mirror", ["init", "{m}", "--offline"], 2, "already a mirror"),
    Case("init-server-ftp", ["init", "{m}-new", "--offline", "--server", "ftp://x/"], 2, "'ftp://x/'", absent="{m}-new"),
    Case("init-email-bogus", ["init", "{m}-new", "--offline", "--email", "bogus"], 2, "'bogus'", absent="{m}-new"),
    Case("log-file-under-a-file", ["--log-file", "/etc/passwd/x.log", "status", *M], 2, "'/etc/passwd/x.log'"),
    Case("report-under-a-file", ["report", *M, "--out", "/etc/passwd/report"], 2, "/etc/passwd is not a directory"),
    Case("series-show-unconfigured", ["series", "show", *M, "hmi.nope"], 2, "'hmi.nope'"),
    Case("diff-series-unconfigured", ["diff", *M, "--series", "hmi.nope"], 2, "'hmi.nope'"),
    Case("diff-limit-negative", ["diff", *M, "--limit", "-1"], 2, "-1"),
    Case("scan-problems-many", ["scan", *M, "--problems", "many"], 2, "'many'"),
    Case("migrate-wait-negative", ["migrate", *M, "--wait=-3"], 2, "-3 is not accepted"),
    Case("emulator-unknown-fault", ["emulator", "serve", "--fault", "bogus=1"], 2, "unknown fault 'bogus'"),
    Case("sql-empty", ["sql", *M, ""], 2, "the SQL query is empty"),
    Case("sql-blank", ["sql", *M, "  \n "], 2, "the SQL query is empty"),
    Case("sql-syntax", ["sql", *M, "SELEC 1"], 2, "SQL error"),
    Case("sql-unknown-table", ["sql", *M, "SELECT * FROM nope"], 2, "nope"),
    Case("sql-copy-to", ["sql", *M, "COPY (SELECT 1) TO '{m}/jsocmirror.toml'"], 2, "COPY statements"),
    Case("sql-copy-to-elsewhere", ["sql", *M, "COPY (SELECT 1) TO '{m}-evil.csv'"], 2, "COPY statements",
         absent="{m}-evil.csv"),
    Case("sql-copy-from", ["sql", *M, "COPY runs FROM '{m}/jsocmirror.toml'"], 2, "COPY statements"),
    Case("sql-export-database", ["sql", *M, "EXPORT DATABASE '{m}-export'"], 2, "EXPORT statements", absent="{m}-export"),
    Case("sql-attach", ["sql", *M, "ATTACH '{m}-other.duckdb' AS other"], 2, "ATTACH statements", absent="{m}-other.duckdb"),
    Case("sql-detach", ["sql", *M, "DETACH catalog"], 2, "DETACH statements"),
    Case("sql-install", ["sql", *M, "INSTALL httpfs"], 2, "INSTALL httpfs"),
    Case("sql-load", ["sql", *M, "LOAD httpfs"], 2, "LOAD httpfs"),
    Case("sql-set", ["sql", *M, "SET threads = 1"], 2, "SET statements"),
    Case("sql-set-profiling-output", ["sql", *M, "SET profiling_output = '{m}-profile'"], 2, "SET statements",
         absent="{m}-profile"),
    Case("sql-pragma-assignment", ["sql", *M, "PRAGMA threads = 1"], 2, "SET statements"),
    Case("sql-pragma-profiling", ["sql", *M, "PRAGMA enable_profiling"], 2, "PRAGMA enable_profiling"),
    Case("sql-create-secret", ["sql", *M, "CREATE SECRET s (TYPE s3, KEY_ID 'k', SECRET 'v')"], 2, "CREATE statements"),
    Case("sql-create-table", ["sql", *M, "CREATE TABLE t AS SELECT 1"], 2, "CREATE statements"),
    Case("sql-delete", ["sql", *M, "DELETE FROM runs"], 2, "DELETE statements"),
    Case("sql-second-statement-writes", ["sql", *M, "SELECT 1; COPY (SELECT 2) TO '{m}-x.csv'"], 2, "COPY statements",
         absent="{m}-x.csv"),
    Case("sql-explain-analyze-copy", ["sql", *M, "EXPLAIN ANALYZE COPY (SELECT 1) TO '{m}-x.csv'"], 2, "COPY statements",
         absent="{m}-x.csv"),
    Case("sql-call-enable-logging", ["sql", *M, "CALL enable_logging(storage = 'file', storage_path = '{m}-log')"], 2,
         "enable_logging", absent="{m}-log"),
    Case("sql-select-enable-logging", ["sql", *M, "SELECT * FROM enable_logging(storage = 'file', storage_path = '{m}-log')"],
         2, "enable_logging()", absent="{m}-log"),
    Case("sql-read-outside", ["sql", *M, "SELECT * FROM read_csv('/etc/passwd')"], 2, "/etc/passwd"),
    Case("sql-prepare", ["sql", *M, "PREPARE p AS SELECT 1"], 2, "PREPARE statements"),
    Case("sql-transaction", ["sql", *M, "BEGIN TRANSACTION"], 2, "TRANSACTION statements"),
    Case("sql-write-syntax", ["sql", *M, "--write", "DELET FROM runs"], 2, "SQL error"),
]

CATALOG_CASES = [
    *[Case(f"catalog-truncated-{cmd}", [cmd, *M, *extra], 1, "catalog.duckdb", write_file("catalog.duckdb", size=5000))
      for cmd, extra in (("update", []), ("sync", []), ("scan", []), ("fetch", []), ("prune", []), ("publish", []),
                         ("sql", ["--write", "SELECT 1"]))],
    Case("catalog-garbage-update", ["update", *M], 1, "catalog.duckdb", write_file("catalog.duckdb", b"not duckdb\n" * 500)),
    Case("catalog-empty-file-sync", ["sync", *M], 1, "catalog.duckdb", write_file("catalog.duckdb", b"")),
    *[Case(f"read-copy-truncated-{cmd}", [cmd, *M, *extra], 1, "read/catalog.duckdb",
           write_file("read/catalog.duckdb", size=5000))
      for cmd, extra in (("status", []), ("diff", []), ("sql", ["SELECT 1"]), ("export-catalog", []),
                         ("report", []))],
    Case("read-copy-garbage-sql", ["sql", *M, "SELECT count(*) FROM runs"], 1, "read/catalog.duckdb",
         write_file("read/catalog.duckdb", b"\x00garbage" * 700)),
    Case("read-copy-garbage-status", ["status", *M], 1, "read/catalog.duckdb",
         write_file("read/catalog.duckdb", b"\x00garbage" * 700)),
]

ENV_CASES = [
    Case("http-proxy-garbage", ["update", *M], 2, "HTTP_PROXY=\"::garbage::\"", env={"HTTP_PROXY": "::garbage::"}),
    Case("http-proxy-lowercase", ["sync", *M], 2, "http_proxy=\"not a url\"", env={"http_proxy": "not a url"}),
    Case("https-proxy-bad-port", ["update", *M], 2, "HTTPS_PROXY=\"http://proxy:99999\"",
         env={"HTTPS_PROXY": "http://proxy:99999"}),
    Case("all-proxy-ftp", ["series", "add", *M, SERIES], 2, "ALL_PROXY=\"ftp://proxy\"", env={"ALL_PROXY": "ftp://proxy"}),
    Case("storage-anon-maybe", ["status", *M], 2, "JSOCMIRROR_STORAGE_ANON='maybe'", env={"JSOCMIRROR_STORAGE_ANON": "maybe"}),
    Case("storage-client-kwargs-not-json", ["status", *M], 2, "JSOCMIRROR_STORAGE_CLIENT_KWARGS",
         env={"JSOCMIRROR_STORAGE_CLIENT_KWARGS": "region=eu"}),
    Case("storage-endpoint-not-a-url", ["status", *M], 2, "JSOCMIRROR_STORAGE_ENDPOINT_URL",
         env={"JSOCMIRROR_STORAGE_ENDPOINT_URL": "s3.example.org"}),
    Case("env-connections-text", ["update", *M], 2, "'many'", env={"JSOCMIRROR_UPDATE_CONNECTIONS": "many"}),
    Case("env-wait-negative", ["update", *M], 2, "-5", env={"JSOCMIRROR_UPDATE_WAIT": "-5"}),
    Case("env-mirror-not-a-mirror", ["status"], 2, "not a jsocmirror mirror", env={"JSOCMIRROR_MIRROR": "/etc"}),
    Case("env-log-level-loud", ["status", *M], 2, "'loud'", env={"JSOCMIRROR_LOG_LEVEL": "loud"}),
]

CASES = CONFIG_CASES + CLI_CASES + CATALOG_CASES + ENV_CASES


def _fill(text: str, mirror: Path) -> str:
    return text.replace("{m}", str(mirror))


def run_case(case: Case, mirror: Path, pristine: Path):
    """Restore the mirror, apply the case, run it: (result, fingerprint before, fingerprint after)."""
    shutil.rmtree(mirror)
    shutil.copytree(pristine, mirror, symlinks=True)
    if case.setup:
        case.setup(mirror)
    before = fingerprint(mirror)
    if case.ran:
        before = {k: v for k, v in before.items() if k != "catalog.duckdb" and not k.startswith("read/")}
        before["catalog tables"] = catalog_content(mirror)
    env = {k: None for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")}
    env.update(case.env)
    result = CliRunner().invoke(cli, [_fill(a, mirror) for a in case.args], env=env)
    after = fingerprint(mirror)
    if case.ran:
        after = {k: v for k, v in after.items() if k != "catalog.duckdb" and not k.startswith("read/")}
        after["catalog tables"] = catalog_content(mirror)
    return result, before, after


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_with_its_exit_code_and_changes_nothing(case: Case, mirror_paths):
    mirror, pristine = mirror_paths
    clean = False
    try:
        result, before, after = run_case(case, mirror, pristine)
        lines = result.stderr.splitlines()
        everything = result.output + result.stderr
        detail = (case.args, result.exit_code, result.stderr, result.output[-500:], repr(result.exception))
        assert result.exit_code == case.code, detail
        assert result.exception is None or isinstance(result.exception, SystemExit), detail
        assert "Traceback" not in everything, detail
        assert len(lines) == 1 and lines[0].startswith("Error: "), detail
        assert _fill(case.needle, mirror) in lines[0], detail
        assert after == before, ("the mirror changed", sorted(k for k in set(before) | set(after)
                                                              if before.get(k) != after.get(k)))
        if case.absent:
            assert not os.path.exists(_fill(case.absent, mirror)), case.absent
        clean = True
    finally:
        TRIED.append((case.id, clean))


# -- what a case list cannot hold ---------------------------------------------------------------------
def test_an_unexpected_exception_is_one_line_and_its_traceback_is_in_the_mirrors_logs(mirror_paths, monkeypatch):
    mirror, pristine = mirror_paths
    import jsocmirror.cli.mirror

    def broken(*args, **kwargs):
        raise RuntimeError("the index\nis upside down")

    monkeypatch.setattr(jsocmirror.cli.mirror, "mirror_status", broken)
    shutil.rmtree(mirror)
    shutil.copytree(pristine, mirror, symlinks=True)
    before = fingerprint(mirror)
    result = CliRunner().invoke(cli, ["status", "-m", str(mirror)])
    clean = False
    try:
        lines = result.stderr.splitlines()
        assert result.exit_code == 1 and len(lines) == 1, result.stderr
        match = re.fullmatch(r"Error: unexpected RuntimeError: the index is upside down \(a bug in jsocmirror; "
                             r"traceback in (.+)\)", lines[0])
        assert match, lines
        crash = Path(match[1])
        assert crash.parent == mirror / "logs" and crash.name.startswith("crash-")
        text = crash.read_text()
        assert "Traceback (most recent call last)" in text and "RuntimeError: the index" in text
        assert fingerprint(mirror) == before
        loud = CliRunner().invoke(cli, ["-vv", "status", "-m", str(mirror)])
        assert isinstance(loud.exception, RuntimeError)  # -vv: raised, for a bug report
        clean = True
    finally:
        TRIED.append(("unexpected-exception-crash-log", clean))


def test_quiet_is_silent_even_after_drms_set_up_the_root_logger(mirror_paths):
    """drms calls logging.basicConfig at import: its INFO handler on stderr must not print under -q."""
    mirror, pristine = mirror_paths
    shutil.rmtree(mirror)
    shutil.copytree(pristine, mirror, symlinks=True)
    code = ("import logging, sys\n"
            "import drms  # noqa: F401  (basicConfig: a root handler on stderr at INFO)\n"
            "from jsocmirror.cli import cli\n"
            "import jsocmirror.cli.mirror as d\n"
            "real = d.mirror_status\n"
            "def chatty(*a, **k):\n"
            "    logging.getLogger('thirdparty').info('an INFO line of another package')\n"
            "    return real(*a, **k)\n"
            "d.mirror_status = chatty\n"
            "cli(sys.argv[1:], prog_name='jsocmirror')\n")
    proc = subprocess.run([sys.executable, "-c", code, "-q", "status", "-m", str(mirror)],
                          capture_output=True, text=True, timeout=120)
    clean = proc.returncode == 0 and proc.stderr == ""
    TRIED.append(("quiet-after-drms-basicconfig", clean))
    assert clean, proc.stderr


def test_two_runs_started_in_the_same_instant_name_the_real_holder(mirror_paths):
    """The holder writes its record just after its flock succeeds; the loser, finding the file
    still empty, reads it again briefly rather than naming '?' (pid ?, since ?)."""
    mirror, pristine = mirror_paths
    shutil.rmtree(mirror)
    shutil.copytree(pristine, mirror, symlinks=True)
    from jsocmirror.lock import LOCK_NAME

    code = ("import fcntl, json, os, socket, sys, time\n"
            f"fd = os.open({str(mirror / LOCK_NAME)!r}, os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "print('locked', flush=True)\n"
            "time.sleep(0.4)  # a holder between its flock and its record\n"
            "os.pwrite(fd, json.dumps({'pid': os.getpid(), 'command': 'update', 'host': socket.gethostname(),\n"
            "                          'since': '2026-01-01T00:00:00Z'}).encode(), 0)\n"
            "time.sleep(30)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = CliRunner().invoke(cli, ["update", "-m", str(mirror)])
        clean = (result.exit_code == 3 and len(result.stderr.splitlines()) == 1
                 and f"'update' (pid {holder.pid}, since 2026-01-01T00:00:00Z)" in result.stderr)
        TRIED.append(("lock-race-names-the-holder", clean))
        assert clean, (result.exit_code, result.stderr)
    finally:
        holder.kill()
        holder.wait()


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 60
    assert len({c.id for c in CASES}) == len(CASES)


def test_the_python_api_sql_refuses_what_writes_and_sandbox_locks_the_connection(mirror_paths):
    import jsocmirror
    from jsocmirror.errors import UsageError

    mirror, pristine = mirror_paths
    shutil.rmtree(mirror)
    shutil.copytree(pristine, mirror, symlinks=True)
    before = fingerprint(mirror)
    outside = mirror.parent / "api-evil.csv"
    with jsocmirror.open(str(mirror)) as m:
        for query in (f"COPY (SELECT 1) TO '{outside}'", f"EXPORT DATABASE '{outside}'", "SET threads = 1",
                      f"SELECT * FROM enable_logging(storage = 'file', storage_path = '{outside}')",
                      "INSTALL httpfs", f"ATTACH '{outside}' AS x"):
            with pytest.raises(UsageError, match="is not accepted"):
                m.sql(query)
        assert m.sql("SELECT count(*) FROM hmi_m_720s").fetchall() == [(6,)]
        mine = mirror.parent / "api-mine.csv"  # a file of the caller's: reading it is fine until sandbox()
        mine.write_text("a,b\n1,2\n")
        assert m.sql("SELECT * FROM read_csv($p)", params={"p": str(mine)}).fetchall() == [(1, 2)]
        m.sandbox()
        assert m.sql("SELECT count(*) FROM hmi_m_720s_files").fetchall() == [(6,)]
        with pytest.raises(UsageError, match="api-mine.csv"):
            m.sql(f"SELECT * FROM read_csv('{mine}')").fetchall()
        import duckdb

        with pytest.raises(duckdb.Error, match="locked"):
            m.con.execute("SET enable_external_access = true")
    assert not outside.exists() and fingerprint(mirror) == before
    TRIED.append(("python-api-sql", True))
