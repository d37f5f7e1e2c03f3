"""A frame moved beyond what motion correction can undo is left out of the analysis.

Motion correction rejects an implausible estimate (``MotionReport.implausible_frames``:
over 20 mm, 15 degrees or half the slab) and leaves that frame unmoved. Kept in the time
curves, a head 25 mm off lends every edge voxel a one-frame step of ~1000 HU and puts
tissue where the artery was at the bolus peak; the frame is now left out and the curves
are interpolated across it, as across a missing time point (outside probe 36).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.unit.perfusion.test_motion_probe36 import _analyse, _head, _move, _volume

FRAME = 16  # on the AIF's upslope, 24 s (bolus at 20 s, peak at 24.5 s)


def test_a_frame_moved_beyond_correction_is_left_out_and_interpolated(tmp_path: Path) -> None:
    frames, truth, art = _head(noise=0.0)
    frames[FRAME] = _move(frames[FRAME], 25.0, 0.0)
    r = _analyse(tmp_path, frames)
    assert r.motion is not None and r.motion.implausible_frames == [FRAME]
    assert any(f"time point(s) {FRAME + 1} left out" in w for w in r.warnings), r.warnings
    d = r.to_dict()
    curves = d["qc"]["curves"]
    assert all(art[tuple(v)] for v in curves["aif_voxels_zyx"]), curves["aif_voxels_zyx"]
    # the artery's curve at the moved frame lies between its neighbours (the moved frame
    # put tissue there: ~40 HU in place of ~270)
    aif = np.asarray(curves["aif"])
    k = int(np.argmin(np.abs(np.asarray(curves["time_s"]) - curves["time_s"][0] - FRAME * 1.5)))
    assert min(aif[k - 1], aif[k + 1]) - 1 <= aif[k] <= max(aif[k - 1], aif[k + 1]) + 1, aif[
        k - 2 : k + 3
    ]
    assert _volume(r, "core") == pytest.approx(truth["core"], rel=0.1)
    assert _volume(r, "hypoperfusion") == pytest.approx(truth["hypo"], rel=0.1)
