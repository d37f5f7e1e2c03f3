"""Issue 6 "Proof" on a second, independently built phantom (``tests.data.phantom_blocks``).

Our own phantom (``tests.data.phantom``) is the one the engine was tuned on; this one was
built like an outside tester's: bolus at 6 s (3-5 pre-bolus frames), integer-HU storage,
vessels inside the brain, a thin cortex, a block-shaped core and penumbra in white matter.
Targets the engine does not reach yet are strict xfails carrying the measured figures
(not weakened assertions): when one starts passing, the xfail must go.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

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
    truth: dict[str, np.ndarray]


def _run(tmp: Path, variant: str) -> Case:
    ph = B.generate(variant, tmp)
    r = analyse(tmp, config=CONFIG)
    assert isinstance(r, PerfusionResult), r
    s = r.series
    assert s.bin_factor == 1
    idx = [int(np.argmin(np.abs(ph.zpos - s.slice_position(z)[2]))) for z in range(s.shape[1])]
    truth = {k: np.nan_to_num(v[idx]) for k, v in ph.truth.items()}
    return Case(ph, r, ph.labels[idx], truth)


def _fixture(variant: str):  # type: ignore[no-untyped-def]
    @pytest.fixture(scope="module")
    def case(tmp_path_factory: pytest.TempPathFactory) -> Case:
        return _run(tmp_path_factory.mktemp(variant), variant)

    return case


nf_delay = _fixture("ct_nf_delay")
nf_1s = _fixture("ct_nf_1s")
noisy = _fixture("ct_noisy")
small = _fixture("ct_small")
mr_nf = _fixture("mr_nf")

_ERODE = np.ones((1, 3, 3), bool)


def _inner(case: Case, labels: tuple[int, ...]) -> np.ndarray:
    """Voxels of ``labels`` one pixel away from any other label, in the engine's tissue."""
    return ndimage.binary_erosion(np.isin(case.labels, labels), structure=_ERODE) & case.r.tissue


def _bands(case: Case) -> dict[tuple[float, str], dict[str, float]]:
    """Per healthy-tissue delay band and tissue: median map / median truth, Tmax error (s)."""
    out: dict[tuple[float, str], dict[str, float]] = {}
    for label, name in ((B.GM, "gm"), (B.WM, "wm")):
        inner = _inner(case, (label,))
        for d in np.unique(case.truth["tmax"][inner]):
            sel = inner & (case.truth["tmax"] == d)
            if sel.sum() < 20:
                continue
            row = {
                k: float(np.median(case.r.maps[k][sel]) / np.median(case.truth[k][sel]))
                for k in ("cbf", "cbv", "mtt")
            }
            row["tmax_err"] = float(np.median(case.r.maps["tmax"][sel]) - d)
            out[(float(d), name)] = row
    assert out, "no tissue inside the phantom labels"
    return out


def _pearson(case: Case, name: str) -> float:
    sel = _inner(case, B.TISSUE)
    return float(np.corrcoef(case.r.maps[name][sel], case.truth[name][sel])[0, 1])


def _within(value: float, true: float, rel: float = 0.10) -> bool:
    return abs(value / true - 1) < rel


NF = ["nf_delay", "nf_1s"]
NOISY = ["noisy", "small"]


@pytest.mark.parametrize("name", NF)
def test_noise_free_ct_cbv_within_10_percent_for_every_delay(
    name: str, request: pytest.FixtureRequest
) -> None:
    case: Case = request.getfixturevalue(name)
    bands = _bands(case)
    assert {d for d, _ in bands} == {0.0, 1.0, 2.0, 3.0}
    bad = {k: round(v["cbv"], 3) for k, v in bands.items() if not _within(v["cbv"], 1.0)}
    assert not bad, bad
    assert case.r.qc["curves"]["pve_scale"] == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(
            "nf_delay",
            marks=pytest.mark.xfail(
                strict=True,
                reason="integer-HU curves, 1.5 s: every band within 10 % but white matter "
                "delayed 2 s (half a frame off the grid): CBF 1.098, MTT 0.892 of truth, "
                "the same at OI 0.035/0.03/0.025 (0.912 at 0.02), with or without the "
                "residue-shape choice or the spatial filter: the rounding of its 6 HU curve",
            ),
        ),
        "nf_1s",
    ],
)
def test_noise_free_ct_cbf_mtt_within_10_percent_for_every_delay(
    name: str, request: pytest.FixtureRequest
) -> None:
    """nf_1s was white matter CBF 0.86, MTT 1.16x: integer-HU curves of a block are identical,
    so the noise read ~0 and oSVD ran at the threshold of a CNR of 10^9; the storage step
    is now the noise floor (``pipeline.storage_noise_sd``): 0.97, 1.02x."""
    case: Case = request.getfixturevalue(name)
    bad = {
        (k, m): round(v[m], 3)
        for k, v in _bands(case).items()
        for m in ("cbf", "mtt")
        if not _within(v[m], 1.0)
    }
    assert not bad, bad


@pytest.mark.parametrize("name", NF)
def test_noise_free_ct_tmax_within_1_s_for_every_delay(
    name: str, request: pytest.FixtureRequest
) -> None:
    """Was +0.5..+2.95 s (a truncated residue peaks late), before the truncation lag
    correction (``deconvolution.correct_truncation``)."""
    case: Case = request.getfixturevalue(name)
    bad = {k: round(v["tmax_err"], 2) for k, v in _bands(case).items() if abs(v["tmax_err"]) > 1}
    assert not bad, bad


@pytest.mark.parametrize("name", NOISY)
def test_noisy_ct_aif_partial_volume_factor_is_one(
    name: str, request: pytest.FixtureRequest
) -> None:
    """The sinus carries the AIF's area: factor 1. Selecting the AIF/VOF voxels and reading
    their areas from the same noisy curves gave 1.31 (1.9 on a 256² grid)."""
    case: Case = request.getfixturevalue(name)
    assert case.r.qc["curves"]["pve_scale"] == pytest.approx(1.0, abs=0.08)
    labels = case.labels
    assert all(labels[tuple(v)] == B.ARTERY for v in case.r.qc["curves"]["aif_voxels_zyx"])
    assert all(labels[tuple(v)] == B.VEIN for v in case.r.qc["curves"]["vof_voxels_zyx"])


@pytest.mark.parametrize("name", NF + NOISY)
def test_hypoperfusion_volume_within_10_percent(name: str, request: pytest.FixtureRequest) -> None:
    """Tmax > 6 s: was 2x too large at realistic noise (the OI threshold sat at its floor)."""
    case: Case = request.getfixturevalue(name)
    true = case.ph.volumes_ml["hypoperfusion"]
    assert case.r.summary["hypoperfusion_ml"] == pytest.approx(true, rel=0.10)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(
            "noisy",
            marks=pytest.mark.xfail(
                strict=True,
                reason="core 8.9 mL vs 16.6 (7.9 when decided on the CBF map): a 2-3 HU "
                "white-matter core curve (CBF 5, MTT 15 s, delay 8 s) at 5 HU; its fitted "
                "rCBF spreads across 30 %",
            ),
        ),
        "nf_delay",
        "nf_1s",
        "small",
    ],
)
def test_ct_core_volume_within_10_percent(name: str, request: pytest.FixtureRequest) -> None:
    """nf_delay was 8.4 mL vs 16.6 before the truncation correction. With the core decided
    on the CBF map: nf_1s 0.0 mL (the white-matter core curve rounds to 0-2 HU steps, its
    CBF read 1.34x), small 7.5 mL (core CBF 1.44x); on the model fit
    (``PerfusionConfig.ct_core_cbf``) within 10 % (small 15.6 mL)."""
    case: Case = request.getfixturevalue(name)
    assert case.r.summary["core_ml"] == pytest.approx(case.ph.volumes_ml["core"], rel=0.10)


@pytest.mark.parametrize("name", NOISY)
def test_noisy_ct_tmax_correlation(name: str, request: pytest.FixtureRequest) -> None:
    """Was 0.67 (ct_noisy) / 0.41 (ct_small) before MP-PCA noise and CT TIPS filtering;
    ct_small 0.88 with a per-voxel truncation lag (each voxel's lag follows its noisy filter
    choice), 0.90 with the lag smoothed like the MTT guide."""
    case: Case = request.getfixturevalue(name)
    assert _pearson(case, "tmax") > 0.9


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(
            "noisy",
            marks=pytest.mark.xfail(
                strict=True,
                reason="r CBF 0.84, CBV 0.55 (was 0.45/0.19, 0.83/0.47 integrating CBV "
                "over the whole acquisition)",
            ),
        ),
        pytest.param(
            "small",
            marks=pytest.mark.xfail(strict=True, reason="r CBF 0.73, CBV 0.39 (was 0.29/0.18)"),
        ),
    ],
)
def test_noisy_ct_cbf_cbv_correlation(name: str, request: pytest.FixtureRequest) -> None:
    """CBV: each voxel's 3-5-frame baseline leaves an error of sigma/2 on all 45 frames
    (~5 ml/100g per voxel at 5 HU); CBF: MTT-dependent oSVD truncation."""
    case: Case = request.getfixturevalue(name)
    rs = {k: round(_pearson(case, k), 3) for k in ("cbf", "cbv")}
    assert min(rs.values()) > 0.9, rs


def test_dsc_noise_free_within_10_percent_and_1_s(mr_nf: Case) -> None:
    """Was CBF 0.81/0.82 of truth, MTT 1.24x, Tmax +1.7 s (no DSC truncation correction);
    now CBF 1.05/1.00, MTT 0.96/1.01, Tmax 0.0/+0.16 s (``config.dsc_truncation_correction``)."""
    bands = _bands(mr_nf)
    bad = {
        (k, m): round(v[m], 3)
        for k, v in bands.items()
        for m in ("cbf", "cbv", "mtt")
        if not _within(v[m], 1.0)
    }
    assert not bad, bad
    assert all(abs(v["tmax_err"]) <= 1 for v in bands.values()), bands
    assert _pearson(mr_nf, "cbf") > 0.95
