"""Mismatch volume and ratio (issue 6; outside probe 8: a core larger than the
hypoperfusion gave a mismatch of -530 mL in result.json, the SR and the DEFUSE-3 text, and
no hypoperfusion gave a mismatch ratio of 0.0)."""

from __future__ import annotations

import numpy as np

from lucent.perfusion import PerfusionConfig
from lucent.perfusion.segmentation import IslandReport, Segmentation, ratio_text, summarise


def _seg(core_voxels: int, hypo_voxels: int, core_outside: bool = False) -> Segmentation:
    core = np.zeros((10, 40, 40), bool)
    hypo = np.zeros_like(core)
    hypo.reshape(-1)[:hypo_voxels] = True
    start = hypo_voxels if core_outside else 0
    core.reshape(-1)[start : start + core_voxels] = True
    return Segmentation(
        core=core,
        hypo=hypo,
        severe=np.zeros_like(core),
        core_source="ADC",
        reference_cbf=50.0,
        affected_side="left",
        islands={"core": IslandReport(), "hypoperfusion": IslandReport()},
    )


def _summary(seg: Segmentation) -> dict[str, object]:
    return summarise(seg, 0.1, 10, 50.0, PerfusionConfig())


def test_a_core_larger_than_the_hypoperfusion_has_no_negative_mismatch() -> None:
    v = _summary(_seg(core_voxels=800, hypo_voxels=300, core_outside=True))
    assert v["core_ml"] == 80.0 and v["hypoperfusion_ml"] == 30.0
    assert v["mismatch_ml"] == 0.0
    assert v["defuse3"]["verdict"] == "not_met"  # type: ignore[index]
    assert "mismatch volume 0.0 mL < 15 mL" in v["defuse3"]["failed_criteria"]  # type: ignore[index]


def test_no_hypoperfusion_has_no_mismatch_ratio() -> None:
    v = _summary(_seg(core_voxels=100, hypo_voxels=0))
    assert v["mismatch_ratio"] is None and v["mismatch_ratio_infinite"] is False
    assert ratio_text(v) == "not assessable (no hypoperfusion)"
    failed = v["defuse3"]["failed_criteria"]  # type: ignore[index]
    assert any("mismatch ratio not assessable" in f for f in failed)


def test_ratio_infinite_without_core_and_plain_difference_otherwise() -> None:
    v = _summary(_seg(core_voxels=0, hypo_voxels=300))
    assert v["mismatch_ratio"] is None and v["mismatch_ratio_infinite"] is True
    assert ratio_text(v) == "infinite (no core)" and v["defuse3"]["verdict"] == "met"  # type: ignore[index]
    v = _summary(_seg(core_voxels=100, hypo_voxels=400))
    assert v["mismatch_ml"] == 30.0 and v["mismatch_ratio"] == 4.0


def _noisy(core_voxels: int, hypo_voxels: int, span: list[float]) -> dict[str, object]:
    seg = _seg(core_voxels, hypo_voxels)
    seg.reference = {"core_noise": {"relative_sd": 0.4, "core_ml_range": span}}
    return _summary(seg)


def test_a_core_whose_noise_range_straddles_70_ml_does_not_read_met() -> None:
    """Outside probe: a 74-81 mL core read 54-56 mL at 5 HU and DEFUSE-3 said "met" for an
    ineligible patient; the core's noise range (50-80 mL) crossed the 70 mL limit."""
    v = _noisy(core_voxels=560, hypo_voxels=1500, span=[50.0, 80.0])
    d3 = v["defuse3"]  # type: ignore[index]
    assert v["core_ml"] == 56.0 and d3["failed_criteria"] == []  # type: ignore[index]
    assert d3["verdict"] == "not_assessable"  # type: ignore[index]
    assert d3["uncertain_criteria"] == [  # type: ignore[index]
        "core 56.0 mL: map noise allows 50.0-80.0 mL, on both sides of the 70 mL limit"
    ]
    # "not met" only by its core, the core could be under 70 mL: not decided either
    v = _noisy(core_voxels=750, hypo_voxels=2000, span=[60.0, 90.0])
    assert v["defuse3"]["verdict"] == "not_assessable"  # type: ignore[index]


def test_a_core_range_on_one_side_of_70_ml_keeps_the_verdict() -> None:
    v = _noisy(core_voxels=200, hypo_voxels=1500, span=[10.0, 40.0])
    assert v["defuse3"]["verdict"] == "met"  # type: ignore[index]
    assert v["defuse3"]["uncertain_criteria"] == []  # type: ignore[index]
    v = _noisy(core_voxels=900, hypo_voxels=2000, span=[75.0, 110.0])
    assert v["defuse3"]["verdict"] == "not_met"  # type: ignore[index]
    # failed by its ratio whatever the core: a range across 70 mL does not change "not met"
    v = _noisy(core_voxels=560, hypo_voxels=700, span=[50.0, 80.0])
    d3 = v["defuse3"]  # type: ignore[index]
    assert d3["verdict"] == "not_met" and d3["uncertain_criteria"]  # type: ignore[index]


def test_a_mismatch_whose_core_range_crosses_15_ml_does_not_read_met() -> None:
    """Outside probe 53: a patient with core 5.5 mL and mismatch 14.3 mL (DEFUSE-3 not met)
    read core 3.5 mL at 3 HU, mismatch 16.2 mL, and "met": the core's noise range allowed
    a mismatch on both sides of 15 mL, so the images do not decide it."""
    v = _noisy(core_voxels=35, hypo_voxels=197, span=[2.0, 7.0])
    d3 = v["defuse3"]  # type: ignore[index]
    assert v["mismatch_ml"] == 16.2 and d3["failed_criteria"] == []  # type: ignore[index]
    assert d3["verdict"] == "not_assessable"  # type: ignore[index]
    assert d3["uncertain_criteria"] == [  # type: ignore[index]
        "mismatch volume 16.2 mL: the core's map noise allows 12.7-17.7 mL, on both sides "
        "of the 15 mL minimum"
    ]
    # far from 15 mL either way the verdict stands
    assert _noisy(35, 400, [2.0, 7.0])["defuse3"]["verdict"] == "met"  # type: ignore[index]
    assert _noisy(35, 120, [2.0, 7.0])["defuse3"]["verdict"] == "not_met"  # type: ignore[index]


def test_a_ratio_whose_core_range_crosses_1_8_does_not_read_met() -> None:
    v = _noisy(core_voxels=300, hypo_voxels=600, span=[25.0, 40.0])
    d3 = v["defuse3"]  # type: ignore[index]
    assert v["mismatch_ratio"] == 2.0 and d3["failed_criteria"] == []  # type: ignore[index]
    assert d3["verdict"] == "not_assessable"  # type: ignore[index]
    assert d3["uncertain_criteria"] == [  # type: ignore[index]
        "mismatch ratio 2.00: the core's map noise allows 1.50-2.40, on both sides of 1.8"
    ]
    # no noise range (an ADC core, or noise-free maps): the verdict is the volumes'
    assert _summary(_seg(300, 600))["defuse3"]["verdict"] == "met"  # type: ignore[index]
