"""A large core at ordinary CT noise must not shrink below DEFUSE-3's 70 mL.

Outside probe: a 71 mL core at 25 % of normal CBF read 35-41 mL at 5 HU, so DEFUSE-3 said
"met" for a patient who is not eligible. The maximum of the regularised residue read normal
grey matter low and the low-flow core high, and the core's rCBF crossed 30 %; the core is
now decided on a model fit of the whole curve (``PerfusionConfig.ct_core_cbf``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lucent.perfusion import PerfusionConfig, analyse
from lucent.perfusion.pipeline import PerfusionResult
from lucent.perfusion.sr import summary_content
from tests.data import phantom as P
from tests.data import phantom_blocks as B

CONFIG = PerfusionConfig(motion_correction=False, write_dicom=False)


def big_core_spec(seed: int) -> P.PhantomSpec:
    """Core 74 mL at 25 % CBF, hypoperfusion 109 mL (ratio 1.47): DEFUSE-3 not met."""
    return P.PhantomSpec(
        noise=5.0,
        core_cbf=0.25,
        core_cbv=0.5,
        lesion_centre_mm=(-40.0, 0.0, 0.0),
        core_radii_mm=(30.0, 40.0, 16.0),
        penumbra_radii_mm=(36.0, 48.0, 18.0),
        seed=seed,
    )


def _run(tmp: Path, seed: int) -> tuple[P.Phantom, PerfusionResult]:
    ph = P.generate(big_core_spec(seed), tmp)
    r = analyse(tmp, config=CONFIG)
    assert isinstance(r, PerfusionResult), r
    return ph, r


@pytest.fixture(scope="module", params=[1, 2])
def big(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return request.param, *_run(tmp_path_factory.mktemp(f"big{request.param}"), request.param)


def test_large_core_at_5_hu_defuse3_not_met(big, request: pytest.FixtureRequest) -> None:  # type: ignore[no-untyped-def]
    """Was "met" with the core read 51 mL of 74 (seed 1) on the CBF map's rCBF."""
    seed, ph, r = big
    if seed == 2:
        request.applymarker(
            pytest.mark.xfail(
                strict=True,
                reason="seed 2: core 56.3 mL of 74.3 (the volume xfail below) against "
                "hypoperfusion 102.3 of 108.8: ratio 1.82 (truth 1.47), 'met' until the "
                "core's noise range (19.2-85.2 mL) made it 'not assessable'. It read "
                "'not met' (1.67) only while the Tmax of the 1 s-dispersed lesion was "
                "over-corrected (hypoperfusion 93.4 mL; maps.TMAX_LAG_FRACTION)",
            )
        )
    assert ph.volumes_ml["core"] > 70
    assert r.summary["defuse3"]["verdict"] == "not_met"


def test_large_core_at_5_hu_volume(big, request: pytest.FixtureRequest) -> None:  # type: ignore[no-untyped-def]
    """Seed 1: 69.7 mL of 74.3 (was 51.1)."""
    seed, ph, r = big
    if seed == 2:
        request.applymarker(
            pytest.mark.xfail(
                strict=True,
                reason="seed 2: 56.3 mL of 74.3. Measured on the truth masks: 362 missed "
                "voxels (291 white, 71 grey matter; 327 within 2 voxels of the core's edge "
                "in 3D, the core is 6 slices thick), 107 false positives; the reference is "
                "right (mirror tissue; a per-class oracle reference gives 54.1 mL); the fitted "
                "core CBF is high (white matter 6.78 of 6.25, the 1 s-dispersed mean core "
                "curve fits 7.49) and spreads p10-p90 0.13-0.42 of normal",
            )
        )
    assert r.summary["core_ml"] == pytest.approx(ph.volumes_ml["core"], rel=0.10)


@pytest.fixture(scope="module")
def block(tmp_path_factory: pytest.TempPathFactory) -> tuple[B.BlockPhantom, PerfusionResult]:
    tmp = tmp_path_factory.mktemp("block")
    ph = B.generate("ct_big_core", tmp)
    r = analyse(tmp, config=CONFIG)
    assert isinstance(r, PerfusionResult), r
    return ph, r


@pytest.mark.xfail(
    strict=True,
    reason="independent block phantom, white-matter core 80.9 mL at 25 % CBF, 5 HU: 54.5 mL "
    "(was 51.3), DEFUSE-3 not assessable (range 32.5-75.2 mL). Measured on the truth masks: "
    "all 1645 missed voxels are tissue, 1632 white matter, spread over the whole block; "
    "their homologous reference is right (mirror white matter, 25.0; a per-class oracle "
    "reference 51.6 mL); the fitted core CBF is 6.76 (truth 6.25), its mean curve fits 6.85, "
    "and per voxel it spreads p10-p90 0.19-0.38 of normal in patches of the TIPS filter's "
    "size (3x3 median: 55.0 mL, shape parameters smoothed: 54.8 mL)",
)
def test_block_phantom_large_white_matter_core_defuse3_not_met(block) -> None:  # type: ignore[no-untyped-def]
    ph, r = block
    assert ph.volumes_ml["core"] > 70
    assert r.summary["defuse3"]["verdict"] == "not_met"


def test_large_core_under_read_by_noise_does_not_read_met(big, block) -> None:  # type: ignore[no-untyped-def]
    """Seed 2 and the block phantom read 56.3 / 54.5 mL of 74.3 / 80.9 and DEFUSE-3 said
    "met"; their cores' noise ranges cross 70 mL, so the verdict now says it is not
    decided, with the range (``segmentation.core_limit_uncertain``)."""
    for ph, r in (big[1:], block):
        assert ph.volumes_ml["core"] > 70
        d3 = r.summary["defuse3"]
        assert d3["verdict"] != "met", d3
        if d3["verdict"] == "not_assessable":
            lo, hi = r.summary["core_ml_range"]
            assert lo < 70 <= hi and "70 mL limit" in d3["uncertain_criteria"][0]
            # the reader sees why in the SR (and on the summary page, same list)
            assert _texts(summary_content(r))["DEFUSE-3 criterion not decided"] == [
                d3["uncertain_criteria"][0]
            ]


def _texts(item: Any) -> dict[str, list[str]]:
    """Concept meaning -> TEXT values in an SR content tree."""
    found: dict[str, list[str]] = {}
    for child in getattr(item, "ContentSequence", []):
        if child.ValueType == "TEXT":
            found.setdefault(child.ConceptNameCodeSequence[0].CodeMeaning, []).append(
                str(child.TextValue)
            )
        for k, v in _texts(child).items():
            found.setdefault(k, []).extend(v)
    return found
