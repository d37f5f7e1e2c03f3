"""Perfusion in the real server (issue 6, "Server integration").

The phantom CT perfusion series is sent with DCMTK storescu to a real ``lucent-server``
subprocess with a short quiet time. The server must recognise it, start an evaluation on
its own, abort and restart it when more images of the series arrive (seed FAQ), store the
Secondary Capture and Parametric Map series through the one ingest path with UIDs under
the configured root, and serve the result JSON through the API.

The phantom's patient has an Issuer of Patient ID and the archive refuses UID conflicts
(``uid_conflict = "refuse"``): the Secondary Captures without the issuer were refused as
another patient's (52 of 58 results, outside probe 8). A run whose results the archive
refused in part says so (message, result status, QC flag), not a plain "done".
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from lucent.api.client import ApiError, LucentClient
from tests.data import phantom as P
from tests.integration.dicom_io import storescu
from tests.support.lucent import LucentServer

UID_ROOT = "1.2.826.0.1.3680043.10.1455.77."
SC = "1.2.840.10008.5.1.4.1.1.7"
PARAMETRIC_MAP = "1.2.840.10008.5.1.4.1.1.30"
ENHANCED_SR = "1.2.840.10008.5.1.4.1.1.88.22"
FIRST_PART = 25  # time points sent before the rest


@dataclass
class Env:
    server: LucentServer
    api: LucentClient
    phantom: P.Phantom
    series_uid: str
    study_uid: str


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("perfusion-server")
    ph = P.generate(P.PhantomSpec(), tmp / "phantom")
    for path in ph.paths:
        ds = pydicom.dcmread(path)
        ds.IssuerOfPatientID = "HOSPITAL_A"
        other = Dataset()
        other.PatientID = "OLD-77"
        other.TypeOfPatientID = "TEXT"
        ds.OtherPatientIDsSequence = [other]
        ds.save_as(path, enforce_file_format=True)
    first = pydicom.dcmread(ph.paths[0], stop_before_pixels=True)
    server = LucentServer(
        tmp / "server",
        workers=1,
        settings={
            "server": {"uid_root": UID_ROOT},
            "archive": {"uid_conflict": "refuse"},
            "perfusion": {"quiet_seconds": 2.0, "scan_seconds": 0.3},
        },
    ).start()
    api = server.client()
    try:
        yield Env(server, api, ph, str(first.SeriesInstanceUID), str(first.StudyInstanceUID))
    finally:
        api.close()
        server.kill()


def _send(env: Env, paths: list[Path]) -> None:
    done = storescu("127.0.0.1", env.server.port, env.server.ae_title, paths)
    assert done.returncode == 0, done.stderr[-2000:]


def _ensure_series(env: Env) -> None:
    """The phantom series in the archive, its automatic evaluation finished: with pytest-xdist
    a test may run in a worker (own server) without the first test of this module."""
    try:
        there = env.series_uid in {s.series_uid for s in env.api.series(env.study_uid)}
    except ApiError as exc:
        if exc.status != 404:
            raise
        there = False
    if not there:
        _send(env, env.phantom.paths)
    n = len(env.phantom.paths)
    env.server.wait_until(
        lambda: [
            r
            for r in env.api.perfusion_runs(series_uid=env.series_uid)
            if r.instances == n and r.finished
        ],
        240,
        "an evaluation of the whole series",
    )


def test_automatic_start_restart_on_new_images_and_results_in_archive(env: Env) -> None:
    n_z = env.phantom.spec.n_slices
    paths = env.phantom.paths
    _send(env, paths[: FIRST_PART * n_z])
    # complete after the quiet time -> recognised -> started without any API call
    first = env.server.wait_until(
        lambda: env.api.perfusion_runs(series_uid=env.series_uid), 60, "the automatic start"
    )[-1]
    assert first.trigger == "auto" and first.confidence == 1.0
    assert first.instances == FIRST_PART * n_z
    # the rest of the series arrives while (or after) the first evaluation runs
    _send(env, paths[FIRST_PART * n_z :])

    def final_run():  # type: ignore[no-untyped-def]
        runs = env.api.perfusion_runs(series_uid=env.series_uid)
        full = [r for r in runs if r.instances == len(paths) and r.finished]
        return full[0] if full else None

    run = env.server.wait_until(final_run, 240, "the evaluation of the whole series")
    assert run.state == "done", (run.message, env.server.log_tail())
    assert not run.message.startswith("PARTIAL"), run.message
    assert run.progress == 1.0
    earlier = env.api.perfusion_run(first.id)
    # FAQ: new images during an evaluation abort it; a new one starts once complete again
    # (if the first evaluation had already finished, the new images start another one)
    assert earlier.state in ("superseded", "done"), earlier
    if earlier.state == "superseded":
        assert run.trigger == "restart"

    # result JSON: volumes against the phantom truth (noise-free: issue's 10 %)
    result = env.api.perfusion_result(run.id)
    assert result["status"] == "ok"
    v = result["volumes"]
    truth = env.phantom.volumes_ml
    assert v["core_ml"] == pytest.approx(truth["core"], rel=0.10)
    assert v["hypoperfusion_ml"] == pytest.approx(truth["hypoperfusion"], rel=0.10)
    assert v["defuse3"]["verdict"] == "met"
    assert result["input"]["frames"] == env.phantom.spec.n_times
    assert result["archive"]["failed"] == 0 and result["archive"]["stored"] == run.stored > 0
    assert f"{run.stored} of {run.stored} object(s) stored" in run.message

    # the SC and Parametric Map series are in the archive, in the source study, our UIDs
    listed = {s.series_uid: s for s in env.api.series(env.study_uid)}
    assert set(run.result_series_uids) <= set(listed)
    classes: set[str] = set()
    for uid in run.result_series_uids:
        assert uid.startswith(UID_ROOT)
        instances = env.api.instances(uid)
        assert instances
        classes.update(i.sop_class_uid for i in instances)
        assert all(i.sop_instance_uid.startswith(UID_ROOT) for i in instances)
    assert SC in classes and PARAMETRIC_MAP in classes and ENHANCED_SR in classes
    # the Enhanced SR summary is its own series in the source study
    sr_uid = result["archive"]["summary_sr_series_instance_uid"]
    assert sr_uid in run.result_series_uids and listed[sr_uid].modality == "SR"
    assert [i.sop_class_uid for i in env.api.instances(sr_uid)] == [ENHANCED_SR]
    assert env.api.examine_perfusion(sr_uid).confidence == 0.0
    # the job is in the server's one job list, with kind "perfusion"
    job = env.api.job(run.job_id or 0)
    assert job.kind == "perfusion" and job.state == "done"

    # our own results are not mistaken for perfusion
    colour = [u for u in run.result_series_uids if listed[u].description.endswith("(colour)")]
    sc_series = colour[0]
    assert env.api.examine_perfusion(sc_series).confidence == 0.0
    with pytest.raises(ApiError) as refused:
        env.api.start_perfusion(sc_series)
    assert refused.value.status == 422 and "not a perfusion series" in refused.value.detail


def test_manual_start_cancel_and_examine(env: Env) -> None:
    _ensure_series(env)
    exam = env.api.examine_perfusion(env.series_uid)
    assert exam.confidence == 1.0 and exam.modality == "CT"
    assert exam.slice_positions == env.phantom.spec.n_slices
    assert exam.time_points == env.phantom.spec.n_times
    run = env.api.start_perfusion(env.series_uid)
    assert run.trigger == "manual" and run.state in ("queued", "running")
    with pytest.raises(ApiError) as busy:
        env.api.start_perfusion(env.series_uid)
    assert busy.value.status == 409
    env.server.wait_until(lambda: env.api.perfusion_run(run.id).state == "running", 60, "the start")
    cancelled = env.api.cancel_perfusion(run.id)
    # the answer says what the run will be, not "running" (outside probe 8)
    assert cancelled.id == run.id and cancelled.state == "cancelled", cancelled
    final = env.api.wait_perfusion(run.id, timeout=60)
    assert final.state == "cancelled", final
    # the run says cancelled at once; its job ends when the worker has stopped
    job = env.api.wait_job(run.job_id or 0, timeout=60)
    assert job.state == "cancelled", job
    with pytest.raises(ApiError) as none:
        env.api.perfusion_result(run.id)
    assert none.value.status == 404


def test_results_refused_by_the_archive_make_the_run_partial(env: Env) -> None:
    """A pool quota with room for a few small objects only: the archive refuses most
    results (A7xx). The run must not read as a plain "done"."""
    _ensure_series(env)
    [quota] = env.api.set_quota("pool", "DEFAULT", 1)
    try:
        # quotas are whole MB: room for 0.6-1.6 MB of the results' tens of MB
        env.api.set_quota("pool", "DEFAULT", math.ceil((quota.used_bytes + 600_000) / 2**20))
        run = env.api.start_perfusion(env.series_uid)
        run = env.api.wait_perfusion(run.id, timeout=240)
    finally:
        env.api.set_quota("pool", "DEFAULT", None)
    result = env.api.perfusion_result(run.id)
    refused, stored = result["archive"]["failed"], result["archive"]["stored"]
    assert refused > 0 and stored == run.stored
    total = refused + stored
    assert run.state == "partial"
    assert run.message.startswith(
        f"PARTIAL: {refused} of {total} result object(s) refused by the archive"
    ), run.message
    assert result["status"] == "partial"
    [flag] = [f for f in result["qc"]["flags"] if f["code"] == "results_not_stored"]
    assert flag["reason"] in run.message and flag["reason"] in result["warnings"]
    assert env.api.job(run.job_id or 0).state == "partial"


def test_a_server_stop_interrupts_the_evaluation_and_the_next_start_redoes_it(env: Env) -> None:
    """SIGTERM during an evaluation: the run said "cancelled" (as if a user cancelled it)
    and was never redone after the restart although the series was within
    ``lookback_minutes`` (outside probe 19). Now it is "interrupted", the start redoes it
    (trigger "restart") and no scratch folder with the exported images is left."""
    _ensure_series(env)
    run = env.api.start_perfusion(env.series_uid)
    env.server.wait_until(
        lambda: env.api.perfusion_run(run.id).message.startswith("analysis"), 120, "the analysis"
    )
    env.server.stop()
    env.server.start()
    api = env.server.client()
    try:
        stopped = api.perfusion_run(run.id)
        assert stopped.state == "interrupted", stopped
        assert "server stopped" in stopped.message
        assert api.job(stopped.job_id or 0).state == "interrupted"
        [redo] = env.server.wait_until(
            lambda: [r for r in api.perfusion_runs(series_uid=env.series_uid) if r.id > run.id],
            60,
            "the evaluation redone after the restart",
        )
        assert redo.trigger == "restart"
        final = api.wait_perfusion(redo.id, timeout=240)
        assert final.state == "done", (final.message, env.server.log_tail())
        assert not list((env.server.data_dir / "perfusion").glob("run-*"))
    finally:
        api.close()
