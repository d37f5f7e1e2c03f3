"""Tmax of a low-flow core and the HIR it feeds (issue 6: hypoperfusion Tmax > 6 s,
HIR = volume(Tmax > 10 s) / volume(Tmax > 6 s)).

An outside tester's phantom (undispersed exponential residues, a core at <= 30 % of normal
CBF) read its core's Tmax 9.5-12.5 s for ~8 s, inflating HIR. ``tests.data.phantom_blocks``
shows it: truth Tmax is the delay of an undispersed residue. Targets the engine does not
reach yet are strict xfails carrying the measured figures: when one passes, the xfail goes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from lucent.perfusion import PerfusionConfig, analyse
from lucent.perfusion.pipeline import PerfusionResult
from tests.data import phantom_blocks as B

CONFIG = PerfusionConfig(motion_correction=False, write_dicom=False)


@dataclass
class Case:
    ph: B.BlockPhantom
    r: PerfusionResult
    labels: np.ndarray
    """Phantom labels on the engine's slices (matched by z)."""
    tmax: np.ndarray
    """Truth Tmax on the engine's slices (0 outside tissue)."""


def _run(tmp: Path, variant: str, **overrides: object) -> Case:
    ph = B.generate(variant, tmp, **overrides)
    r = analyse(tmp, config=CONFIG)
    assert isinstance(r, PerfusionResult), r
    s = r.series
    idx = [int(np.argmin(np.abs(ph.zpos - s.slice_position(z)[2]))) for z in range(s.shape[1])]
    return Case(ph, r, ph.labels[idx], np.nan_to_num(ph.truth["tmax"][idx]))


def _core_tmax_error(case: Case) -> float:
    """Median engine Tmax minus truth (s) over the core's tissue voxels."""
    core = np.isin(case.labels, (B.CORE_GM, B.CORE_WM)) & case.r.tissue
    return float(np.median(case.r.maps["tmax"][core]) - np.median(case.tmax[core]))


def _true_ml(case: Case, above_s: float) -> float:
    """Truth volume (mL) of tissue with Tmax > ``above_s``: ``phantom_blocks.truth_volumes``
    counts the core as hypoperfused whatever its delay."""
    tissue = np.isin(case.labels, B.TISSUE)
    return float((tissue & (case.tmax > above_s)).sum() * case.ph.volumes_ml["voxel_ml"])


def _true_hir(case: Case) -> float:
    return _true_ml(case, 10.0) / max(_true_ml(case, 6.0), 1e-9)


@pytest.fixture(scope="module")
def nf_core8(tmp_path_factory: pytest.TempPathFactory) -> Case:
    """Noise-free (integer HU), core at 20 % CBF delayed 8 s, penumbra 9 s: truth HIR 0."""
    return _run(tmp_path_factory.mktemp("nf_core8"), "ct_nf_delay")


@pytest.fixture(scope="module")
def noisy_core2(tmp_path_factory: pytest.TempPathFactory) -> Case:
    """5 HU, core at 20 % CBF delayed only 2 s (not hypoperfused), penumbra 8 s."""
    return _run(tmp_path_factory.mktemp("noisy_core2"), "ct_noisy", core_delay=2.0, pen_delay=8.0)


@pytest.mark.xfail(
    strict=True,
    reason="core Tmax 10.65 s for 8 (raw oSVD 11.98, whole lag off 9.32, model-fit arrival "
    "8.25), penumbra 10.19 for 9: Tmax>10 s 84.4 mL, HIR 1.0 for 0. Half the truncation lag "
    "is left on delayed tissue (maps.TMAX_LAG_FRACTION) because a 1 s-dispersed residue "
    "(tests.data.phantom, truth Tmax 11.9 s) gives the same curves within noise",
)
def test_noise_free_low_flow_core_tmax_and_hir(nf_core8: Case) -> None:
    assert abs(_core_tmax_error(nf_core8)) <= 1.5
    hir = nf_core8.r.summary["hypoperfusion_intensity_ratio"]
    assert hir == pytest.approx(_true_hir(nf_core8), abs=0.1)


@pytest.mark.xfail(
    strict=True,
    reason="core Tmax 7.0 s for 2 (10-90 % 1.0-9.6; raw oSVD 8.6, whole lag off 5.4, fitted "
    "arrival 2.6 with 10-90 % -0.75..6.75 per voxel): hypoperfusion 77.1 mL for 67.8 "
    "(+14 %), HIR 0.12 for 0. Capping Tmax at the smoothed fitted arrival + a 1 s "
    "dispersion's peak gave 4.5-5.2 s and 71-72 mL, but took our own 5 HU phantom's "
    "dispersed penumbra to 45.7 of 60.8 mL (-25 %)",
)
def test_noisy_low_flow_core_tmax_and_hypoperfusion(noisy_core2: Case) -> None:
    assert abs(_core_tmax_error(noisy_core2)) <= 1.5
    true = _true_ml(noisy_core2, 6.0)
    assert noisy_core2.r.summary["hypoperfusion_ml"] == pytest.approx(true, rel=0.10)
