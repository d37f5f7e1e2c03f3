"""A series holding an image twice (same position and Acquisition Time, new SOP Instance
UID) is refused for what it is: ``lucent-perfusion analyse`` said "missing timing: no
Acquisition Time, Content Time, ... orders the frames" although every image had an
Acquisition Time (outside probe 19)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

from lucent.perfusion import Refusal, RefusalCode
from lucent.perfusion.series import DUPLICATE_IMAGES, assemble
from tests.data import phantom as P

SPEC = P.PhantomSpec(matrix=32, n_slices=2, n_times=12)


def _copy(path: Path) -> Path:
    """The same image again under a new SOP Instance UID (a re-send of a modality)."""
    ds = pydicom.dcmread(path)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out = path.with_name(path.stem + "_copy.dcm")
    ds.save_as(out, enforce_file_format=True)
    return out


def test_a_time_point_sent_twice_is_refused_as_duplicate_images(tmp_path: Path) -> None:
    ph = P.generate(SPEC, tmp_path / "in")
    copies = [_copy(p) for p in ph.paths[10:12]]  # time point 6, both slices
    r = assemble(tmp_path / "in")
    assert isinstance(r, Refusal)
    assert r.code == DUPLICATE_IMAGES, r.reason
    assert r.reason.startswith("duplicate images: 2 image(s) repeat"), r.reason
    assert "acquisition time" in r.reason and copies[0].name in r.reason
    assert "missing timing" not in r.reason

    # the CLI's refusal (result.json and its message) says the same
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "lucent.perfusion.cli", "analyse", str(tmp_path / "in"),
         "--out", str(out), "--quiet"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    result = json.loads((out / "result.json").read_text())
    assert result["code"] == DUPLICATE_IMAGES and result["reason"] == r.reason
    assert "duplicate images" in done.stderr


def test_one_extra_copy_is_not_called_a_missing_image(tmp_path: Path) -> None:
    """One copied image makes its slice one time point longer: not "incomplete"."""
    ph = P.generate(SPEC, tmp_path / "in")
    _copy(ph.paths[7])
    r = assemble(tmp_path / "in")
    assert isinstance(r, Refusal) and r.code == DUPLICATE_IMAGES, r
    assert r.reason.startswith("duplicate images: 1 image(s) repeat"), r.reason


def test_a_series_without_per_frame_timing_is_still_missing_timing(tmp_path: Path) -> None:
    P.generate(P.PhantomSpec(matrix=32, n_slices=2, n_times=12, timing_tag="none"), tmp_path)
    r = assemble(tmp_path)
    assert isinstance(r, Refusal) and r.code == RefusalCode.MISSING_TIMING, r
