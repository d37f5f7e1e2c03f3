"""Perfusion re-runs and deleted sources in the real server (issue 6, "Server integration";
outside probe 39).

A real ``lucent-server`` with a short quiet time gets a small phantom CT perfusion series by
DCMTK storescu and sends its results to a DCMTK storescp "PACS".

- Images that arrive after an evaluation finished start a new one (correct), but the first
  run's results, made from a truncated bolus, stayed: the run still said "done", the study
  held every result series twice with the same Series Number and Description, and both sets
  went to the PACS. Seed FAQ (VEOcore): "at the end the correct and complete results should
  be available". Now the newer run supersedes the older one (state, message, result JSON),
  the older results leave the archive, and the re-run's series carry other Series Numbers
  and a "Re-run 2: " description, so the two sets on the PACS can be told apart.
- Deleting a study while its evaluation ran brought the study back with only the derived
  results, which then went to the PACS. Now the evaluation is cancelled, stores and sends
  nothing, and says why.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest

from lucent.api import schemas
from lucent.api.client import ApiError, LucentClient
from tests.data import phantom as P
from tests.integration.dicom_io import storescu
from tests.support.lucent import LucentServer
from tests.support.peers import dcmtk_tool, dicom_env, end_process, free_port

UID_ROOT = "1.2.826.0.1.3680043.10.1455.39."
SPEC = P.PhantomSpec(matrix=48, n_slices=3, n_times=36, t0=8.0)
FIRST_PART = 22  # time points of the first, truncated delivery (bolus tail missing)


@dataclass
class Env:
    server: LucentServer
    api: LucentClient
    pacs_dir: Path
    tmp: Path


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("perfusion-rerun")
    pacs_dir = tmp / "pacs"
    pacs_dir.mkdir()
    port = free_port()
    pacs = subprocess.Popen(
        [dcmtk_tool("storescp"), "-aet", "PACS", "-od", str(pacs_dir), str(port)],
        env=dicom_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    server = LucentServer(
        tmp / "server",
        workers=1,
        settings={
            "server": {"uid_root": UID_ROOT},
            "perfusion": {"quiet_seconds": 2.0, "scan_seconds": 0.3, "send_to_node": "PACS"},
        },
    ).start()
    api = server.client()
    try:
        api.add_node(
            schemas.RemoteNodeIn(
                name="PACS", ae_title="PACS", host="127.0.0.1", port=port, query_retrieve=False
            )
        )
        yield Env(server, api, pacs_dir, tmp)
    finally:
        api.close()
        server.kill()
        end_process(pacs)


def _phantom(env: Env, name: str) -> tuple[list[Path], str, str]:
    ph = P.generate(SPEC, env.tmp / name)
    first = pydicom.dcmread(ph.paths[0], stop_before_pixels=True)
    return ph.paths, str(first.StudyInstanceUID), str(first.SeriesInstanceUID)


def _send(env: Env, paths: list[Path]) -> None:
    done = storescu("127.0.0.1", env.server.port, env.server.ae_title, paths)
    assert done.returncode == 0, done.stderr[-2000:]


def _on_pacs(env: Env, study_uid: str) -> list[pydicom.Dataset]:
    found = []
    for f in env.pacs_dir.iterdir():
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        if ds.StudyInstanceUID == study_uid:
            found.append(ds)
    return found


def _sends_settled(env: Env, job_ids: list[int]) -> bool:
    return all(env.api.job(j).state not in ("queued", "running") for j in job_ids)


def test_late_images_supersede_the_finished_run_and_its_results(env: Env) -> None:
    paths, study_uid, series_uid = _phantom(env, "late")
    _send(env, paths[: FIRST_PART * SPEC.n_slices])
    first = env.server.wait_until(
        lambda: [r for r in env.api.perfusion_runs(series_uid=series_uid) if r.finished],
        240,
        "the evaluation of the truncated series",
    )[-1]
    assert first.state == "done", (first.message, env.server.log_tail())
    assert first.result_series_uids and first.send_job_ids
    env.server.wait_until(lambda: _sends_settled(env, first.send_job_ids), 120, "first sends")
    # the rest of the time points arrive after the evaluation finished
    _send(env, paths[FIRST_PART * SPEC.n_slices :])
    final = env.server.wait_until(
        lambda: [
            r
            for r in env.api.perfusion_runs(series_uid=series_uid)
            if r.instances == len(paths) and r.finished
        ],
        240,
        "the evaluation of the complete series",
    )[0]
    assert final.state == "done", (final.message, env.server.log_tail())
    assert f"replaces run {first.id}" in final.message, final.message
    assert env.api.perfusion_result(final.id)["replaces_runs"] == [first.id]

    # the older run says what became of it, and what reached the PACS
    old = env.api.perfusion_run(first.id)
    assert old.state == "superseded", old.message
    assert f"replaced by run {final.id}" in old.message, old.message
    assert "ALREADY SENT" in old.message and "cannot be recalled" in old.message, old.message
    assert env.api.perfusion_result(first.id)["superseded_by"] == final.id

    # one current result set in the archive: the older series are gone
    listed = {s.series_uid: s for s in env.api.series(study_uid)}
    assert set(listed) == {series_uid, *final.result_series_uids}
    assert not set(first.result_series_uids) & set(listed)
    for uid in final.result_series_uids:
        assert listed[uid].description.startswith("Re-run 2: "), listed[uid].description
    # removed through the server's own delete path: audited (DICOM Study Deleted, 110105)
    removed = env.api._get("/api/v1/audit", object_id=first.result_series_uids[0])
    assert [
        r
        for r in removed
        if r["event_id"] == "110105"
        and f"superseded (by {final.id}) perfusion run {first.id}" in r["detail"]
    ], removed

    # on the PACS both sets exist (a send cannot be recalled), but no Series Number and
    # Description names two series: a reader can tell the re-run from the first set
    env.server.wait_until(lambda: _sends_settled(env, final.send_job_ids), 120, "re-run sends")
    received = _on_pacs(env, study_uid)
    assert {str(d.SeriesInstanceUID) for d in received} == {
        *first.result_series_uids,
        *final.result_series_uids,
    }
    named: dict[tuple[int, str], set[str]] = defaultdict(set)
    for d in received:
        named[(int(d.SeriesNumber), str(d.SeriesDescription))].add(str(d.SeriesInstanceUID))
    assert all(len(uids) == 1 for uids in named.values()), named


def test_deleting_the_study_during_its_evaluation_cancels_it(env: Env) -> None:
    paths, study_uid, series_uid = _phantom(env, "deleted")
    _send(env, paths)
    run = env.server.wait_until(
        lambda: [
            r
            for r in env.api.perfusion_runs(series_uid=series_uid)
            if r.state == "running" and r.message.startswith("analysis")
        ],
        240,
        "the analysis",
    )[0]
    assert env.api._request("DELETE", f"/api/v1/studies/{study_uid}").status_code == 204
    env.api.wait_job(run.job_id or 0, timeout=120)  # the job has ended: nothing more comes
    final = env.api.wait_perfusion(run.id, timeout=30)
    assert final.state == "cancelled", final.message
    assert "source series was deleted during the evaluation" in final.message
    assert final.send_job_ids == []
    with pytest.raises(ApiError) as gone:
        env.api.series(study_uid)
    assert gone.value.status == 404
    time.sleep(2.0)  # what a late send would have delivered by now
    assert _on_pacs(env, study_uid) == []


def test_a_refusal_names_the_images_as_the_reader_finds_them(env: Env) -> None:
    """The engine names the files it read, and the server's are scratch counters
    ("files 000006.dcm, 000018.dcm, ... and 14 more": probe 39): the run's message names the
    images by instance and series number instead."""
    ph = P.generate(SPEC, env.tmp / "grid")
    second = float(pydicom.dcmread(ph.paths[1], stop_before_pixels=True).ImagePositionPatient[2])
    changed = []
    for path in ph.paths:
        ds = pydicom.dcmread(path)
        if abs(float(ds.ImagePositionPatient[2]) - second) < 0.01 and len(changed) < 5:
            ds.PixelSpacing = [float(v) * 1.1 for v in ds.PixelSpacing]  # another grid
            ds.save_as(path)
            changed.append((int(ds.InstanceNumber), int(ds.SeriesNumber)))
    series_uid = str(pydicom.dcmread(ph.paths[0], stop_before_pixels=True).SeriesInstanceUID)
    _send(env, ph.paths)
    run = env.server.wait_until(
        lambda: [r for r in env.api.perfusion_runs(series_uid=series_uid) if r.finished],
        240,
        "the refusal",
    )[-1]
    assert run.state == "refused" and "inconsistent" in run.message, run.message
    assert not re.search(r"\d{6}\.dcm", run.message), run.message
    named = [f"image {n} of series {s}" for n, s in changed]
    assert any(name in run.message for name in named), (run.message, changed)
