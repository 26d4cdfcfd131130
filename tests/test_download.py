"""The downloader against a real loopback HTTP server with switchable faults."""

from __future__ import annotations

import io
import os
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from jsocmirror.net import NetPolicy
from jsocmirror.download import (
    FileTask, RetryPolicy, download_files, extract_tar, fill_header, fits_checksum_state, part_name, sweep_parts,
)

FAST = RetryPolicy(attempts=4, backoff=0.01, max_backoff=0.05, net=NetPolicy(idle_timeout=5))


def make_fits(seed: int, shape=(64, 64)) -> bytes:
    data = np.random.default_rng(seed).integers(-500, 500, size=shape, dtype=np.int32)
    hdul = fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data, compression_type="RICE_1")])
    out = io.BytesIO()
    hdul.writeto(out, checksum=True)
    return out.getvalue()


class Files:
    """What the server serves, and the faults it injects (each fault fires `count` times)."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.faults: dict[str, list] = {}  # path -> list of fault names, consumed in order
        self.requests: list[tuple[str, str | None]] = []
        self.lock = threading.Lock()

    def next_fault(self, path: str) -> str | None:
        with self.lock:
            queue = self.faults.get(path)
            return queue.pop(0) if queue else None


def serve(files: Files):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            path = self.path
            files.requests.append((path, self.headers.get("Range")))
            fault = files.next_fault(path)
            body = files.files.get(path)
            if body is None:
                self.send_error(404)
                return
            if fault == "500":
                self.send_error(503)
                return
            if fault == "corrupt":
                middle = len(body) // 2
                body = body[:middle] + bytes(b ^ 0x55 for b in body[middle:middle + 7]) + body[middle + 7:]
            start = 0
            rng = self.headers.get("Range")
            if rng and fault != "ignore-range":
                start = int(rng.split("=")[1].split("-")[0])
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            if fault == "truncate":
                self.wfile.write(body[start:start + (len(body) - start) // 2])
                self.wfile.flush()
                self.connection.shutdown(2)
                return
            self.wfile.write(body[start:])

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture()
def site():
    files = Files()
    server = serve(files)
    files.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield files
    server.shutdown()
    server.server_close()


def task_for(site, name: str, seed: int, dest: str | None = None, **kw) -> FileTask:
    site.files[f"/SUM1/D{seed}/S00000/{name}"] = make_fits(seed)
    return FileTask(url=f"{site.url}/SUM1/D{seed}/S00000/{name}", dest=dest or f"s/2024/{seed}.{name}",
                    series="s", record_key=f"[{seed}]", segment=name.split(".")[0], recnum=seed, **kw)


def layout_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_download_files_lands_verified_files_atomically(site, tmp_path):
    tasks = [task_for(site, "magnetogram.fits", seed) for seed in range(12)]
    landed = []
    results = download_files(tasks, tmp_path, connections=4, policy=FAST, on_landed=landed.append)
    assert not results.errors
    assert len(landed) == 12 and {item.checksum for item in landed} == {"ok"}
    files = layout_files(tmp_path)
    assert set(files) == {t.dest for t in tasks}
    for task in tasks:
        assert files[task.dest] == site.files[task.url.removeprefix(site.url)]


def test_download_files_retries_5xx_truncation_and_corruption(site, tmp_path):
    tasks = [task_for(site, "m.fits", seed) for seed in range(3)]
    site.faults[tasks[0].url.removeprefix(site.url)] = ["500", "500"]
    site.faults[tasks[1].url.removeprefix(site.url)] = ["truncate", "truncate"]
    site.faults[tasks[2].url.removeprefix(site.url)] = ["corrupt"]
    results = download_files(tasks, tmp_path, connections=2, policy=FAST)
    assert not results.errors, results.errors
    for task in tasks:
        assert (tmp_path / task.dest).read_bytes() == site.files[task.url.removeprefix(site.url)]
    # the truncated file was resumed with a Range request, not fetched again from byte 0
    ranges = [r for path, r in site.requests if path == tasks[1].url.removeprefix(site.url) and r]
    assert ranges and all(r.startswith("bytes=") and not r.startswith("bytes=0-") for r in ranges)


def test_download_files_reports_failures_and_never_leaves_final_names(site, tmp_path):
    good = task_for(site, "m.fits", 1)
    corrupt = task_for(site, "m.fits", 2)
    missing = FileTask(url=f"{site.url}/SUM1/D9/S00000/gone.fits", dest="s/2024/gone.fits", series="s",
                       record_key="[9]", segment="gone")
    site.faults[corrupt.url.removeprefix(site.url)] = ["corrupt"] * 10
    results = download_files([good, corrupt, missing], tmp_path, connections=2, policy=FAST)
    failed = {e.task.dest: e for e in results.errors}
    assert set(failed) == {corrupt.dest, missing.dest}
    assert "CHECKSUM" in failed[corrupt.dest].error or "DATASUM" in failed[corrupt.dest].error
    assert "404" in failed[missing.dest].error and failed[missing.dest].attempts == 1
    assert set(layout_files(tmp_path)) == {good.dest}


def test_download_files_resumes_a_part_left_by_a_killed_run(site, tmp_path):
    task = task_for(site, "m.fits", 5)
    body = site.files[task.url.removeprefix(site.url)]
    part = tmp_path / part_name(task.dest, task)
    part.parent.mkdir(parents=True)
    part.write_bytes(body[:5000])
    results = download_files([task], tmp_path, policy=FAST)
    assert results and (tmp_path / task.dest).read_bytes() == body
    assert not part.exists()
    assert site.requests[-1][1] == "bytes=5000-"


def test_download_files_refuses_destinations_outside_the_root(site, tmp_path):
    bad = task_for(site, "m.fits", 3, dest="../escape.fits")
    absolute = task_for(site, "m.fits", 4, dest="/tmp/escape.fits")
    results = download_files([bad, absolute], tmp_path / "root", policy=FAST)
    assert len(results.errors) == 2 and all("refusing" in e.error for e in results.errors)
    assert not (tmp_path / "escape.fits").exists() and not Path("/tmp/escape.fits").exists()


def test_download_files_to_fsspec_memory_root(site):
    import fsspec

    fs = fsspec.filesystem("memory")
    task = task_for(site, "m.fits", 7)
    results = download_files([task], "memory://mirror-dl-test", policy=FAST)
    assert results
    assert fs.cat_file(f"/mirror-dl-test/{task.dest}") == site.files[task.url.removeprefix(site.url)]
    assert not [p for p in fs.find("/mirror-dl-test") if ".part-" in p]
    fs.rm("/mirror-dl-test", recursive=True)


def test_fits_checksum_state_detects_truncation_and_corruption(tmp_path):
    body = make_fits(11)
    path = tmp_path / "x.fits"
    path.write_bytes(body)
    assert fits_checksum_state(path) == "ok"
    path.write_bytes(body[:-2880])
    with pytest.raises(ValueError, match="truncated"):
        fits_checksum_state(path)
    flipped = bytearray(body)
    flipped[-3000] ^= 0x55
    path.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="corrupt"):
        fits_checksum_state(path)


def test_fill_header_keeps_datasum_and_recomputes_checksum(tmp_path):
    path = tmp_path / "x.fits"
    path.write_bytes(make_fits(12))
    with fits.open(path, disable_image_compression=True) as hdul:
        datasum = hdul[1].header["DATASUM"]
    fill_header(path, {"T_REC": "2024.06.01_00:00:00_TAI", "QUALITY": 0, "DATAMEAN": 1.5, "DATE__OBS": "x"})
    assert fits_checksum_state(path) == "ok"
    with fits.open(path, disable_image_compression=True) as hdul:
        assert hdul[1].header["DATASUM"] == datasum
        assert hdul[1].header["T_REC"] == "2024.06.01_00:00:00_TAI" and hdul[1].header["DATE-OBS"] == "x"


def test_extract_tar_maps_members_by_record_and_skips_unsafe_ones(tmp_path):
    bodies = {f"export.{i}.m.fits": make_fits(20 + i) for i in range(3)}
    tar_path = tmp_path / "x.tar"
    with tarfile.open(tar_path, "w") as archive:
        for name, body in bodies.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            archive.addfile(info, io.BytesIO(body))
        evil = tarfile.TarInfo("../../evil.fits")
        evil.size = 4
        archive.addfile(evil, io.BytesIO(b"evil"))
        link = tarfile.TarInfo("link.fits")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        archive.addfile(link)
    members = {name: FileTask(url="", dest=f"s/{i}/rec{i}.fits", series="s", record_key=f"[{i}]", segment="m")
               for i, name in enumerate(bodies)}
    members["../../evil.fits"] = FileTask(url="", dest="s/evil.fits", series="s", record_key="[9]", segment="m")
    root = tmp_path / "root"
    results = extract_tar(tar_path, members, root)
    assert {item.path for item in results.landed} == {f"s/{i}/rec{i}.fits" for i in range(3)}
    assert [e.task.dest for e in results.errors] == ["s/evil.fits"]
    assert not (tmp_path / "evil.fits").exists() and not (root / "link.fits").exists()
    assert (root / "s/1/rec1.fits").read_bytes() == bodies["export.1.m.fits"]


def test_sweep_parts_removes_leftovers_only(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / ".x.fits.part-0123").write_bytes(b"x")
    (tmp_path / "a" / "x.fits").write_bytes(b"y")
    assert sweep_parts(tmp_path) == 1
    assert os.listdir(tmp_path / "a") == ["x.fits"]


def test_sweep_parts_keeps_the_parts_named(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / ".x.fits.part-0123").write_bytes(b"x")
    (tmp_path / "a" / ".y.fits.part-4567").write_bytes(b"y")
    assert sweep_parts(tmp_path, keep=["a/.y.fits.part-4567"]) == 1
    assert os.listdir(tmp_path / "a") == [".y.fits.part-4567"]


def test_download_files_interrupted_by_the_caller_stops_cleanly(site, tmp_path):
    """Ctrl-C in the calling thread (here: raised from on_landed) stops the run: no queued file is
    started, no worker thread is left, and every file under a final name is whole and verified."""
    tasks = [task_for(site, "m.fits", seed) for seed in range(400)]  # callbacks come in groups of 64
    landed = []

    def on_landed(item):
        landed.append(item)
        if len(landed) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        download_files(tasks, tmp_path, connections=2, policy=FAST, on_landed=on_landed)
    assert not [t for t in threading.enumerate() if t.name.startswith("jsocmirror-dl")]
    finals = {p: b for p, b in layout_files(tmp_path).items() if ".part-" not in p}
    by_dest = {t.dest: site.files[t.url.removeprefix(site.url)] for t in tasks}
    assert 3 <= len(finals) < len(tasks)  # stopped early; the files verified by then are in place
    assert all(by_dest[path] == data for path, data in finals.items())
    assert len(site.requests) < len(tasks)  # the queued ones were never asked for
