"""Shared fixtures: a real JSOC emulator over loopback, a drms client for it, the protocol fixtures."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_FIXTURES = REPO.parent / "shared" / "fixtures"


@contextmanager
def moto_s3(**extra_env: str):
    """moto's S3 server on loopback, with test credentials (and ``extra_env``, where ``{endpoint}``
    stands for its URL) in the environment for the duration; yields the endpoint URL."""
    import logging
    import os

    from moto import server as moto_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's server logs every request
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    env.update({k: v.format(endpoint=endpoint) for k, v in extra_env.items()})
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield endpoint
    finally:
        server.stop()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def sync_mirror(config, url: str) -> None:
    """Sync the mirror's catalog from ``url`` (a dry run writes nothing, so tests that want the
    records known before a fetch sync them this way)."""
    from jsocmirror.catalog import Catalog
    from jsocmirror.jsoc import JsocClient
    from jsocmirror.sync import sync

    with Catalog(config.catalog_path) as catalog:
        sync(config, catalog, JsocClient(url, email=config.email))


@contextmanager
def quick_emulator():
    """An in-memory Emulator (seed 3) whose exports carry no wait hint: the governor honours the
    server's hint, and the mirror tests have no reason to sit through it."""
    from jsocmirror.emulator import Emulator

    with Emulator(state_dir=None, seed=3) as emu:
        emu.exports.config.timing.wait_hint = 0
        yield emu


def hold_lock(mirror_dir, seconds: float = 60, command: str = "test-holder", record: dict | None = None):
    """Another process holding the mirror's lock (it is re-entrant within one process), started and
    holding when this returns; kill() it to let go.

    With ``record``, the process takes the bare flock and writes ``record`` as the lock file's
    holder record (a dead pid, another boot id): the cases where the kernel cannot say who holds it.
    """
    import subprocess
    import sys

    if record is None:
        code = ("import sys, time; from jsocmirror.lock import mirror_lock\n"
                f"with mirror_lock({str(mirror_dir)!r}, {command!r}):\n"
                "    print('held', flush=True); time.sleep(float(sys.argv[1]))\n")
    else:
        from jsocmirror.lock import LOCK_NAME

        code = ("import fcntl, json, os, sys, time\n"
                f"fd = os.open({str(Path(mirror_dir) / LOCK_NAME)!r}, os.O_RDWR | os.O_CREAT)\n"
                "fcntl.flock(fd, fcntl.LOCK_EX)\n"
                f"record = {record!r}\n"
                "record.setdefault('pid', os.getpid())\n"
                "os.write(fd, json.dumps(record).encode())\n"
                "print('held', flush=True); time.sleep(float(sys.argv[1]))\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.fixture
def clean_faults(emu):
    """Every fault switch of the module's ``emu`` off before and after the test."""
    emu.faults.clear()
    yield
    emu.faults.clear()


@pytest.fixture(scope="module")
def emu():
    """One quick_emulator() per test module (a module that mutates its world defines its own)."""
    with quick_emulator() as emulator:
        yield emulator


@pytest.fixture
def emulator(tmp_path):
    """A started Emulator with its world persisted under tmp_path/emu (clock 2024.07.01_00:00:00_TAI)."""
    from jsocmirror.emulator import Emulator

    with Emulator(state_dir=tmp_path / "emu", seed=0) as emu:
        yield emu


@pytest.fixture(scope="session")
def shared_emulator(tmp_path_factory):
    """One read-only emulator for the whole session: never mutate its world."""
    from jsocmirror.emulator import Emulator

    with Emulator(state_dir=tmp_path_factory.mktemp("emu-shared"), seed=0) as emu:
        yield emu


def make_drms_client(emu, email: str | None = "x@example.com"):
    import drms

    return drms.Client(drms.ServerConfig(**emu.drms_config()), email=email)


@pytest.fixture
def drms_client(emulator):
    """The unmodified drms client pointed at the ``emulator`` fixture."""
    return make_drms_client(emulator)


@pytest.fixture
def fixtures_dir() -> Path:
    """../shared/fixtures (real JSOC recordings); the test is skipped when it is absent."""
    if not SHARED_FIXTURES.is_dir():
        pytest.skip(f"shared fixtures not found at {SHARED_FIXTURES}")
    return SHARED_FIXTURES


def pytest_terminal_summary(terminalreporter):
    """The bad-input corpus's figures (tests/test_bad_input.py), when it ran."""
    import sys

    corpus = sys.modules.get("test_bad_input")
    line = corpus.summary_line() if corpus is not None else None
    if line:
        terminalreporter.write_line(line)
