"""DSC-MR: tissue whose CBV reads high is not taken for vessels (outside probe 44).

DSC CBV has no fixed absolute scale: an AIF that saturated or is partial-volumed, and not
corrected, scales every CBV. An outside phantom read grey matter at 10-16 ml/100 g; the
fixed 8 ml/100 g vessel threshold removed it from the tissue, and hypoperfusion read 20.6 of
84.8 mL (core 0, DEFUSE-3 "met") with no QC flag. On DSC a vessel's CBV must now also be
``dsc_vessel_cbv_ratio`` times the tissue's median; whatever the threshold, losing more
than a tenth of the tissue to it raises the QC flag ``vessels_excluded``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lucent.perfusion import PerfusionConfig, analyse
from lucent.perfusion.pipeline import PerfusionResult
from tests.data import phantom as P


def _run(
    tmp: Path, spec: P.PhantomSpec, config: PerfusionConfig
) -> tuple[P.Phantom, PerfusionResult]:
    ph = P.generate(spec, tmp)
    r = analyse(tmp, config=config)
    assert isinstance(r, PerfusionResult), r
    return ph, r


def test_dsc_tissue_with_cbv_read_high_keeps_its_volumes(tmp_path: Path) -> None:
    """A partial-volumed AIF left uncorrected: grey matter reads ~5x its CBV (~20)."""
    config = PerfusionConfig(motion_correction=False, write_dicom=False, pve_correction=False)
    ph, r = _run(tmp_path, P.PhantomSpec(modality="MR", artery_fraction=0.2), config)
    grey = (ph.labels == P.GM0) & (r.maps["cbv"] > 0)
    assert np.median(r.maps["cbv"][grey]) > 2 * config.vessel_cbv  # the case: read high
    assert r.summary["hypoperfusion_ml"] == pytest.approx(ph.volumes_ml["hypoperfusion"], rel=0.1)
    assert r.summary["core_ml"] == pytest.approx(ph.volumes_ml["core"], rel=0.15)
    assert "vessels_excluded" not in {f["code"] for f in r.qc["flags"]}


def test_losing_much_tissue_to_the_vessel_threshold_is_flagged(tmp_path: Path) -> None:
    """CT keeps the absolute threshold; set where grey matter lies (4 ml/100 g), it takes a
    large share of the tissue, and QC says so."""
    config = PerfusionConfig(motion_correction=False, write_dicom=False, vessel_cbv=3.0)
    _, r = _run(tmp_path, P.PhantomSpec(), config)
    flags = {f["code"]: f["reason"] for f in r.qc["flags"]}
    assert "vessels_excluded" in flags
    assert "left out as vessels" in flags["vessels_excluded"]
