"""The project's phantom at the issue's CT noise (5 HU), 60 and 40 time points.

Outside tester (probe 19), ``lucent-perfusion analyse`` on ``tests.data.phantom`` at
noise 5 HU: 60 frames gave hypoperfusion 34.7 of 60.75 mL (-43 %; mismatch ratio 1.48,
DEFUSE-3 "not met" for a patient who meets it) with no QC flag; 40 frames gave 0.63 mL of
everything and "bolus low" (AIF peak 53.5 HU) although the phantom's arteries peak at
~210 HU. Causes: the full exponential truncation lag was taken off the Tmax of the
1 s-dispersed penumbra (``maps.TMAX_LAG_FRACTION``), and the AIF's "early" test read
the first moment of low, noisy tissue curves before the arteries' (``aif.FM_LEVEL``).
Bands come from the phantom's truth, not from the engine's output.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lucent.perfusion import PerfusionConfig, analyse
from lucent.perfusion.pipeline import PerfusionResult
from tests.data import phantom as P

CONFIG = PerfusionConfig(motion_correction=False, write_dicom=False)


def _run(tmp: Path, spec: P.PhantomSpec) -> tuple[P.Phantom, PerfusionResult]:
    ph = P.generate(spec, tmp)
    r = analyse(tmp, config=CONFIG)
    assert isinstance(r, PerfusionResult), r
    return ph, r


@pytest.fixture(scope="module", params=[60, 40])
def ct5(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    spec = P.PhantomSpec(noise=5.0, n_times=request.param)
    return request.param, *_run(tmp_path_factory.mktemp(f"ct5_{request.param}"), spec)


def _truth_verdict(ph: P.Phantom) -> str:
    core, hypo = ph.volumes_ml["core"], ph.volumes_ml["hypoperfusion"]
    met = core < 70 and hypo / core >= 1.8 and hypo - core >= 15
    return "met" if met else "not_met"


def test_aif_is_the_artery_at_its_true_height(ct5) -> None:  # type: ignore[no-untyped-def]
    """40 frames: grey/white matter voxels were the AIF (peak 53.5 HU after a 4x capped
    partial-volume scale) and every volume was 0.63 mL."""
    _, ph, r = ct5
    labels = [int(ph.labels[tuple(v)]) for v in r.qc["curves"]["aif_voxels_zyx"]]
    assert labels == [P.ARTERY] * len(labels)
    # the artery voxel's truth: 70 % arterial blood (peak 300 HU) and 30 % grey matter
    true_peak = ph.spec.artery_fraction * ph.spec.aif_peak
    raw_peak = max(r.qc["curves"]["aif_uncorrected"])
    assert 0.85 * true_peak < raw_peak < 1.2 * true_peak, raw_peak
    assert "bolus_low" not in {f["code"] for f in r.qc["flags"]}


def test_hypoperfusion_and_defuse3_at_5_hu(ct5) -> None:  # type: ignore[no-untyped-def]
    """60 frames: 34.7 of 60.75 mL (-43 %), 40 frames: 0.63 mL; now within 20 % of the
    truth (seed 1: -17 % / -8 %) and the DEFUSE-3 verdict never wrong.

    At 5 HU the core reads 23.6 / 23.9 mL of 11.5 (penumbra voxels at 60 % of normal
    cross 30 %), so the ratio reads 2.11 / 2.59 for a true 5.3, and the core's noise range
    (9.5-41.3 / 6.4-42.9 mL) puts it on both sides of 1.8: "not decided", with that
    range, is the honest answer there; it must hold the true core."""
    _, ph, r = ct5
    truth = ph.volumes_ml["hypoperfusion"]
    assert abs(r.summary["hypoperfusion_ml"] / truth - 1) < 0.20, r.summary["hypoperfusion_ml"]
    d3 = r.summary["defuse3"]
    assert d3["verdict"] in (_truth_verdict(ph), "not_assessable"), d3
    if d3["verdict"] == "not_assessable":
        lo, hi = r.summary["core_ml_range"]
        assert lo <= ph.volumes_ml["core"] <= hi and d3["uncertain_criteria"], d3


def test_dispersed_penumbra_tmax_at_5_hu(ct5) -> None:  # type: ignore[no-untyped-def]
    """Median Tmax of the true penumbra (8.3 s, 1 s dispersion) within 1.5 s (was 6.0 s)
    and of healthy tissue (0-3 s) within 1.5 s."""
    _, ph, r = ct5
    for labels in ((P.PEN_GM, P.PEN_WM), tuple(range(P.GM0, P.WM0 + 4))):
        sel = np.isin(ph.labels, labels) & r.tissue
        err = np.median(r.maps["tmax"][sel]) - np.median(ph.truth["tmax"][sel])
        assert abs(err) < 1.5, (labels, err)


def test_tmax_uncertainty_of_delayed_tissue_is_flagged_at_5_hu(ct5) -> None:  # type: ignore[no-untyped-def]
    """60 frames: Tmax>10 s 3.8 of 11.5 mL (HIR 0.08 for 0.19) with no flag: delayed tissue
    keeps half the truncation lag (``maps.TMAX_LAG_FRACTION``), +-1.2 s here. QC now says so,
    with the range of the Tmax>10 s volume and HIR that this allows (truth inside)."""
    n, ph, r = ct5
    if n != 60:
        pytest.skip("40 frames: uncertainty 0.6 s, below the flag's 1 s")
    flag = next(f for f in r.qc["flags"] if f["code"] == "tmax_resolution")
    assert "HIR" in flag["reason"] and "+-" in flag["reason"]
    assert r.qc["tmax_uncertainty_s"] > 1.0
    true_hir = ph.volumes_ml["tmax10"] / ph.volumes_ml["hypoperfusion"]
    lo, hi = r.summary["hypoperfusion_intensity_ratio_range"]
    assert lo <= true_hir <= hi, (lo, true_hir, hi)


def test_noisy_core_is_flagged_with_a_range_that_holds_the_truth(ct5) -> None:  # type: ignore[no-untyped-def]
    """Core 23.7 (60 frames) / 24.1 (40) mL of 11.5 with no flag: the fitted CBF of a voxel
    spreads +-40 % at 5 HU and 60 % penumbra crosses 30 %. QC now flags the core as not
    reliable, with the range map noise allows (60 frames: 9.8-41.2 mL)."""
    _, ph, r = ct5
    flag = next(f for f in r.qc["flags"] if f["code"] == "core_noise")
    assert "not reliable" in flag["reason"]
    assert r.summary["core_reliable"] is False
    lo, hi = r.summary["core_ml_range"]
    assert lo <= ph.volumes_ml["core"] <= hi, (lo, hi)
