"""Perfusion auto-start in the real server: an acquisition split over several series is one
run (outside probe 30), and a new series stored after the newest study was deleted starts
its run although SQLite gave its instances the ids of the deleted rows (outside probe 31)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from lucent.api.client import LucentClient
from tests.data import phantom as P
from tests.integration.dicom_io import storescu
from tests.support.lucent import LucentServer


@pytest.fixture
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LucentServer, LucentClient]]:
    tmp = tmp_path_factory.mktemp("perfusion-split")
    srv = LucentServer(
        tmp / "server",
        workers=1,
        settings={"perfusion": {"quiet_seconds": 2.0, "scan_seconds": 0.3}},
    ).start()
    api = srv.client()
    try:
        yield srv, api
    finally:
        api.close()
        srv.kill()


def _max_instance_id(srv: LucentServer) -> int:
    paths = list(srv.data_dir.rglob("*.db")) + list(srv.data_dir.rglob("*.sqlite*"))
    with sqlite3.connect(paths[0]) as db:
        return int(db.execute("SELECT max(id) FROM instances").fetchone()[0] or 0)


def _send(srv: LucentServer, paths: list[Path]) -> None:
    done = storescu("127.0.0.1", srv.port, srv.ae_title, paths)
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_perfusion_split_over_two_series_is_analysed_once_as_a_whole(
    server: tuple[LucentServer, LucentClient], tmp_path: Path
) -> None:
    """The scanner starts a new series every 20 time points: the server ran each part on
    its own (first half "bolus truncated", second half core 0 mL marked reliable)."""
    srv, api = server
    spec = P.PhantomSpec(n_times=40, dt=1.5)
    ph = P.generate(spec, tmp_path / "in")
    n_z, half = spec.n_slices, 20
    second_uid = generate_uid()
    for path in ph.paths[half * n_z :]:
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID = second_uid
        ds.SeriesNumber = 5
        ds.save_as(path, enforce_file_format=True)
    first_uid = str(pydicom.dcmread(ph.paths[0], stop_before_pixels=True).SeriesInstanceUID)
    _send(srv, ph.paths[: half * n_z])
    _send(srv, ph.paths[half * n_z :])
    run = srv.wait_until(
        lambda: [r for r in api.perfusion_runs(series_uid=first_uid) if r.finished],
        240,
        "the evaluation of the split acquisition",
    )[-1]
    time.sleep(3.0)  # a second run for the later part would have started by now
    assert api.perfusion_runs(series_uid=second_uid) == []
    runs = api.perfusion_runs(series_uid=first_uid)
    assert [r.id for r in runs] == [run.id], runs
    assert run.trigger == "auto" and run.instances == len(ph.paths), run
    assert run.state == "done", run.message


def test_a_new_series_after_the_newest_study_was_deleted_starts_its_run(
    server: tuple[LucentServer, LucentClient], tmp_path: Path
) -> None:
    """SQLite reuses the ids of the deleted newest rows: the new series' instances lay below
    the scanner's id watermark and no run ever started."""
    srv, api = server
    spec = P.PhantomSpec(matrix=32, n_slices=2, n_times=12)
    old = P.generate(spec, tmp_path / "old")
    head = pydicom.dcmread(old.paths[0], stop_before_pixels=True)
    _send(srv, old.paths)
    first_uid = str(head.SeriesInstanceUID)
    srv.wait_until(
        lambda: [r for r in api.perfusion_runs(series_uid=first_uid) if r.finished],
        240,
        "the first evaluation",
    )
    time.sleep(1.0)
    top = _max_instance_id(srv)
    gone = api._request("DELETE", f"/api/v1/studies/{head.StudyInstanceUID}")
    assert gone.status_code == 204, gone.text
    new = P.generate(spec, tmp_path / "new")
    new_uid = str(pydicom.dcmread(new.paths[0], stop_before_pixels=True).SeriesInstanceUID)
    _send(srv, new.paths)
    assert _max_instance_id(srv) <= top  # the new series took ids of the deleted rows
    run = srv.wait_until(
        lambda: api.perfusion_runs(series_uid=new_uid), 60, "the run of the new series"
    )[-1]
    assert run.trigger == "auto" and run.instances == len(new.paths), run
