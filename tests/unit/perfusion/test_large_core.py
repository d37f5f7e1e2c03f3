"""A large core at ordinary CT noise must not shrink below DEFUSE-3's 70 mL.

Outside probe: a 71 mL core at 25 % of normal CBF read 35-41 mL at 5 HU, so DEFUSE-3 said
"met" for a patient who is not eligible. The maximum of the regularised residue read normal
grey matter low and the low-flow core high, and the core's rCBF crossed 30 %; the core is
now decided on a model fit of the whole curve (``PerfusionConfig.ct_core_cbf``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lucent.perfusion import PerfusionConfig, analyse
from lucent.perfusion.pipeline import PerfusionResult
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
                "hypoperfusion 102.3 of 108.8: ratio 1.82 (truth 1.47), 'met'. It read "
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
                reason="seed 2: 55.8 mL of 74.3 (not met only by its ratio 1.67 < 1.8): the "
                "per-voxel spread of the fitted rCBF around 0.25-0.28 still leaves core "
                "voxels above 30 %",
            )
        )
    assert r.summary["core_ml"] == pytest.approx(ph.volumes_ml["core"], rel=0.10)


@pytest.mark.xfail(
    strict=True,
    reason="independent block phantom, white-matter core 80.9 mL at 25 % CBF, 5 HU: 54.5 mL "
    "(was 51.3), DEFUSE-3 met: fitted core CBF 6.75 vs 6.25 and normal white matter 24.4 "
    "(median rCBF 0.28), a third of the core's voxels read above 30 %",
)
def test_block_phantom_large_white_matter_core_defuse3_not_met(tmp_path: Path) -> None:
    ph = B.generate("ct_big_core", tmp_path)
    r = analyse(tmp_path, config=CONFIG)
    assert isinstance(r, PerfusionResult), r
    assert ph.volumes_ml["core"] > 70
    assert r.summary["defuse3"]["verdict"] == "not_met"
