"""Perfusion engine on the digital phantom (issue 6, "Proof")."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest

from lucent.perfusion import PerfusionConfig, Refusal, RefusalCode, analyse
from lucent.perfusion.aif import fill_saturated, gamma_variate
from lucent.perfusion.cli import main
from lucent.perfusion.deconvolution import (
    _peaks,
    correct_truncation,
    osvd,
    osvd_reference,
    ssvd,
)
from lucent.perfusion.pipeline import PerfusionResult
from lucent.perfusion.residue_shape import box_weight
from lucent.perfusion.segmentation import find_midline, segment
from lucent.perfusion.series import assemble
from lucent.perfusion.signal import leakage_correct
from lucent.perfusion.sr import summary_content
from tests.data import phantom as P

FAST = PerfusionConfig(motion_correction=False)


def _run(
    tmp: Path, spec: P.PhantomSpec, config: PerfusionConfig = FAST, **kw: object
) -> tuple[P.Phantom, PerfusionResult]:
    ph = P.generate(spec, tmp)
    result = analyse(tmp, config=config, **kw)  # type: ignore[arg-type]
    assert isinstance(result, PerfusionResult), result
    return ph, result


@pytest.fixture(scope="module")
def noise_free(tmp_path_factory: pytest.TempPathFactory) -> tuple[P.Phantom, PerfusionResult]:
    return _run(tmp_path_factory.mktemp("nf"), P.PhantomSpec(), PerfusionConfig())


@pytest.fixture(scope="module")
def noisy(tmp_path_factory: pytest.TempPathFactory) -> tuple[P.Phantom, PerfusionResult]:
    return _run(tmp_path_factory.mktemp("noisy"), P.PhantomSpec(noise=1.0, seed=3))


def _assert_noise_free_accuracy(ph: P.Phantom, r: PerfusionResult) -> None:
    """Issue 6 "Proof", noise-free: CBF/CBV/MTT medians within 10 %, Tmax within 1 s, for
    grey and white matter at every delay 0-3 s."""
    for sector in range(4):
        for label in (P.GM0 + sector, P.WM0 + sector):
            sel = (ph.labels == label) & r.tissue
            assert sel.sum() > 50
            for name in ("cbf", "cbv", "mtt"):
                est, true = np.median(r.maps[name][sel]), np.median(ph.truth[name][sel])
                assert abs(est / true - 1) < 0.10, (name, label, est, true)
            tmax_err = abs(np.median(r.maps["tmax"][sel]) - np.median(ph.truth["tmax"][sel]))
            assert tmax_err <= 1.0, (label, tmax_err)


def test_noise_free_maps_within_10_percent_for_every_delay(
    noise_free: tuple[P.Phantom, PerfusionResult],
) -> None:
    _assert_noise_free_accuracy(*noise_free)


def test_noise_free_box_residue_within_10_percent_for_every_delay(tmp_path: Path) -> None:
    """Plug flow: a flat residue's arg-max and max sit anywhere on its rippled plateau (was
    CBF +47 %, Tmax +3 s); the plateau reading of ``deconvolution._peaks`` fixes both. The
    truncation correction reads it on the box tables (``residue_shape``): on the
    exponential ones it was 1.73-1.79x truth."""
    ph, r = _run(tmp_path, P.PhantomSpec(residue="box"), PerfusionConfig())
    _assert_noise_free_accuracy(ph, r)
    assert r.summary["core_ml"] == pytest.approx(ph.volumes_ml["core"], rel=0.10)


def test_residue_plateau_reads_its_start_and_level() -> None:
    """A flat top much wider than the deconvolution's resolution is a plateau: Tmax at its
    start, CBF its mean level; a sharp (exponential) or heavily truncated residue keeps the
    arg-max and the max."""
    length, dt = 120, 1.0
    i = np.arange(length)
    # plateau 3..8 with ripple growing towards its far edge (largest peak last, 1.15 at 8)
    ripple = 0.03 * (i - 3) * (-1.0) ** (8 - i)
    box = np.where((i >= 3) & (i <= 8), 1.0 + ripple, 0.0)
    expo = np.where(i >= 3, np.exp(-(i - 3) / 4.0), 0.0)
    r = np.stack([box, expo])
    peak, tmax = _peaks(r, dt, circular=True, bandwidth=length // 2 + 1)
    assert tmax[0] == pytest.approx(3.0, abs=0.7) and peak[0] == pytest.approx(1.0, abs=0.03)
    assert tmax[1] == pytest.approx(3.0, abs=0.3) and peak[1] == pytest.approx(1.0)
    # a heavily truncated deconvolution (wide point spread function): plain arg-max and max
    peak, tmax = _peaks(r, dt, circular=True, bandwidth=8)
    assert tmax[0] == pytest.approx(8.0) and peak[0] == pytest.approx(1.15)


def test_noise_free_volumes_and_defuse3(noise_free: tuple[P.Phantom, PerfusionResult]) -> None:
    ph, r = noise_free
    v = r.summary
    assert v["core_ml"] == pytest.approx(ph.volumes_ml["core"], rel=0.10)
    assert v["hypoperfusion_ml"] == pytest.approx(ph.volumes_ml["hypoperfusion"], rel=0.10)
    assert v["hypoperfusion_intensity_ratio"] == pytest.approx(
        ph.volumes_ml["tmax10"] / ph.volumes_ml["hypoperfusion"], abs=0.05
    )
    assert v["defuse3"] == {"verdict": "met", "failed_criteria": [], "uncertain_criteria": []}
    assert v["affected_side"] == "right"  # lesion at -x: patient right in LPS
    assert r.motion is not None and not r.motion.severe
    # AIF found in the artery, VOF in the sinus, PVE scale ~ 1/0.7
    labels = ph.labels
    assert all(labels[tuple(v)] == P.ARTERY for v in r.qc["curves"]["aif_voxels_zyx"])
    assert all(labels[tuple(v)] == P.VEIN for v in r.qc["curves"]["vof_voxels_zyx"])
    assert r.qc["curves"]["pve_scale"] == pytest.approx(1 / 0.7, rel=0.05)
    assert r.qc["flags"] == []


def test_realistic_noise_correlation_and_volumes(noisy: tuple[P.Phantom, PerfusionResult]) -> None:
    ph, r = noisy
    sel = ph.tissue & r.tissue
    rs = {n: np.corrcoef(r.maps[n][sel], ph.truth[n][sel])[0, 1] for n in ("cbf", "cbv", "tmax")}
    # issue 6 "Proof": r > 0.9 for CBF, CBV and Tmax at realistic noise (1 HU); MP-PCA and
    # the TIPS filter denoise the curves, the oSVD OI threshold follows the CNR of what they
    # leave (maps.adaptive_oi)
    assert rs["cbv"] > 0.9, rs
    assert rs["cbf"] > 0.9, rs
    assert rs["tmax"] > 0.9, rs
    assert r.qc["noise_sd"] == pytest.approx(1.0, rel=0.1)  # MP-PCA noise estimate
    assert r.summary["core_reliable"] and "core_noise" not in {f["code"] for f in r.qc["flags"]}
    assert r.qc["pca_components"] < r.series.shape[0]
    v = r.summary
    assert v["core_ml"] == pytest.approx(ph.volumes_ml["core"], rel=0.10)
    assert v["hypoperfusion_ml"] == pytest.approx(ph.volumes_ml["hypoperfusion"], rel=0.10)
    assert v["defuse3"]["verdict"] == "met"
    assert v["islands_removed"]["hypoperfusion"]["count"] >= 0


@pytest.mark.parametrize("noise", [0.0, 1.0])
def test_grey_matter_majority_core_against_its_own_tissue(tmp_path: Path, noise: float) -> None:
    """Grey matter 63 % of healthy tissue, core in grey and white matter at 15 % of its own
    tissue's CBF: a single healthy median sits on grey matter and counts penumbral white
    matter as core (+173 % noise-free), a white-matter one would miss grey-matter core; the
    homologous (mirror) reference gets both (issue 6 CT core/hypoperfusion within 10 %)."""
    spec = P.PhantomSpec(noise=noise, seed=3, **P.GM_MAJORITY)  # type: ignore[arg-type]
    ph, r = _run(tmp_path, spec)
    gm = np.isin(ph.labels, range(P.GM0, P.GM0 + 4)).sum()
    wm = np.isin(ph.labels, range(P.WM0, P.WM0 + 4)).sum()
    assert gm / (gm + wm) > 0.5
    assert (ph.labels == P.CORE_GM).sum() > 50 and (ph.labels == P.CORE_WM).sum() > 50
    v = r.summary
    assert v["core_ml"] == pytest.approx(ph.volumes_ml["core"], rel=0.10)
    assert v["hypoperfusion_ml"] == pytest.approx(ph.volumes_ml["hypoperfusion"], rel=0.10)
    assert v["defuse3"]["verdict"] == "met"
    ref = v["reference"]
    assert ref["method"] == "homologous" and ref["midline"]["detected"]
    assert ref["hypoperfused_voxels_by_source"]["mirror"] > 0.95
    # the former single median would have over-called the core
    old = segment(
        r.maps,
        r.tissue,
        r.brain,
        r.series.row_dir,
        r.series.voxel_ml,
        replace(FAST, reference="contralateral_median"),
    )
    assert old.core.sum() * r.series.voxel_ml > 1.2 * ph.volumes_ml["core"]


def test_midline_found_on_a_shifted_and_tilted_head() -> None:
    """Mid-sagittal line of a head moved 6 px and turned 8 degrees in-plane."""
    ny = nx = 96
    yy, xx = np.mgrid[0:ny, 0:nx].astype(float)
    t = np.radians(8.0)
    u = (xx - 53.5) * np.cos(t) - (yy - 47.5) * np.sin(t)  # across the midline
    w = (xx - 53.5) * np.sin(t) + (yy - 47.5) * np.cos(t)  # along it
    head = (u / 30) ** 2 + (w / 40) ** 2 <= 1
    img = np.where(head, 30.0 + 10.0 * ((u / 30) ** 2 + (w / 40) ** 2 > 0.6), 0.0)
    img = img + 8.0 * head * (np.abs(np.abs(u) - 12) < 3) * (w > 0)  # paired structures
    vol = np.stack([img] * 4).astype(np.float32)
    m = find_midline(vol, np.stack([head] * 4))
    assert m.detected and m.symmetry > 0.95
    my, mx = m.mirror((ny, nx))
    # the mirror image of (u, w) is (-u, w): check a few points
    for uu, ww in ((10.0, 5.0), (-20.0, -15.0), (15.0, 25.0)):
        y = 47.5 - uu * np.sin(t) + ww * np.cos(t)
        x = 53.5 + uu * np.cos(t) + ww * np.sin(t)
        iy, ix = int(round(y)), int(round(x))
        ey = 47.5 + uu * np.sin(t) + ww * np.cos(t) + (iy - y)
        ex = 53.5 - uu * np.cos(t) + ww * np.sin(t) + (ix - x)
        assert abs(my[iy, ix] - ey) < 1.5 and abs(mx[iy, ix] - ex) < 1.5


def test_midline_falls_back_on_an_asymmetric_image() -> None:
    brain = np.zeros((2, 40, 40), bool)
    brain[:, 5:35, 5:35] = True
    img = np.where(brain, 1.0, 0.0)
    img[:, 5:35, 5:12] = 3.0  # one side much brighter, and a notch
    brain[:, 5:20, 25:35] = False
    m = find_midline(img.astype(np.float32), brain, min_symmetry=0.97)
    assert not m.detected and "symmetr" in m.reason


def test_large_core_fails_defuse3(tmp_path: Path) -> None:
    spec = P.PhantomSpec(core_radii_mm=(25, 38, 40), penumbra_radii_mm=(26, 40, 40), n_slices=16)
    ph, r = _run(tmp_path, spec)
    v = r.summary
    assert ph.volumes_ml["core"] > 70
    assert v["defuse3"]["verdict"] == "not_met"
    failed = " ".join(v["defuse3"]["failed_criteria"])
    assert "core" in failed and "mismatch ratio" in failed
    items = _sr_items(summary_content(r))
    assert items["DEFUSE-3 verdict"] == ["not met"]
    assert items["DEFUSE-3 criterion failed"] == v["defuse3"]["failed_criteria"]


def test_fft_osvd_equals_textbook_svd_loop() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(40.0)
    s = np.clip(t - 8, 0, None)
    aif = (s**3 * np.exp(-s / 1.5)).astype(np.float32)
    conc = np.stack([np.convolve(aif, np.exp(-t / m))[:40] * 0.01 for m in (3, 4, 6, 8)])
    conc = (conc[rng.integers(0, 4, 60)] + rng.normal(0, 0.02, (60, 40))).astype(np.float32)
    fast, slow = osvd(conc, aif, 1.0), osvd_reference(conc, aif, 1.0)
    np.testing.assert_allclose(fast.rmax, slow.rmax, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(fast.tmax, slow.tmax, atol=1e-3)
    np.testing.assert_allclose(fast.threshold, slow.threshold)


def _fine_grid_curves(
    cases: list[tuple[float, float]], model: str = "exponential"
) -> tuple[np.ndarray, np.ndarray, float]:
    """(AIF, tissue curves with CBF 0.01 /s, dt): gamma AIF (peak 300 at 12 s), residues of
    ``model`` with (MTT, delay) ``cases``, convolved on a 0.02 s grid, 45 frames of 1.5 s."""
    h, dt, k = 0.02, 1.5, 45
    tf = np.arange(0, k * dt + 10, h)
    s = np.clip(tf - 12, 0, None)
    ca = s**3 * np.exp(-s / 1.5)
    ca *= 300 / ca.max()
    t = np.arange(k) * dt
    curves = []
    for m, d in cases:
        residue = np.exp(-tf / m) if model == "exponential" else (tf < m) * 1.0
        tissue = np.convolve(np.interp(tf - d, tf, ca, left=0), residue)[: len(tf)] * h
        curves.append(np.interp(t, tf, tissue) * 0.01)
    return np.interp(t, tf, ca).astype(np.float32), np.asarray(curves, np.float32), dt


def test_truncation_correction_restores_peak_and_tmax_of_a_truncated_residue() -> None:
    """A residue deconvolved at the default OI (0.035) reads low and late, more for a short
    MTT; the correction (exponential model, MTT from CBF and CBV) brings CBF within 7 % and
    Tmax within 0.3 s for MTT 4-12 s and sub-frame delays."""
    cases = [(m, d) for m in (4.0, 6.0, 12.0) for d in (0.0, 0.7, 2.0)]
    aif, conc, dt = _fine_grid_curves(cases)
    dec = osvd(conc, aif, dt, oi_threshold=0.035)
    cbf = dec.rmax.astype(np.float64) * 60  # per minute, so that MTT = 60 CBV / CBF (s)
    cbv = conc.sum(axis=1) / aif.sum()  # CBF * MTT: the area ratio
    true_tmax = np.array([d for _, d in cases])
    assert (cbf / 0.6).max() < 0.95, cbf / 0.6  # the truncation this test is about
    assert (dec.tmax - true_tmax).max() > 0.9
    fixed_cbf, fixed_tmax = correct_truncation(cbf, cbv, dec)
    np.testing.assert_allclose(fixed_cbf / 0.6, 1.0, atol=0.07)
    np.testing.assert_allclose(fixed_tmax, true_tmax, atol=0.3)


@pytest.mark.parametrize("model", ["exponential", "box"])
def test_residue_shape_picks_the_model_whose_tissue_curve_fits(model: str) -> None:
    """Curves made with box residues get box weight 1, exponential ones 0, and the blended
    correction lands within 15 % of the true CBF on single curves either way (OI 0.035,
    MTT 4-8 s; the phantoms, with their spatial smoothing, are within 10 %)."""
    cases = [(m, d) for m in (4.0, 6.0, 8.0) for d in (0.0, 1.0, 2.5)]
    aif, conc, dt = _fine_grid_curves(cases, model)
    dec = osvd(conc, aif, dt, oi_threshold=0.035)
    cbf = dec.rmax.astype(np.float64) * 60
    cbv = conc.sum(axis=1) / aif.sum()
    readings = {
        name: correct_truncation(cbf, cbv, dec, model=name) for name in ("exponential", "box")
    }
    w = box_weight(conc, dec.bank, readings, cbv)
    np.testing.assert_array_equal(w, 1.0 if model == "box" else 0.0)
    fixed = (1 - w) * readings["exponential"][0] + w * readings["box"][0]
    np.testing.assert_allclose(fixed / 0.6, 1.0, atol=0.15)


def test_osvd_is_delay_insensitive_ssvd_is_not() -> None:
    h = 0.1
    tf = np.arange(0, 100, h)
    s = np.clip(tf - 20, 0, None)
    a = s**3 * np.exp(-s / 1.5)
    tk = np.arange(60.0)
    aif = np.interp(tk, tf, a)
    cbf_o, cbf_s = [], []
    for delay in (0, 1, 2, 3, 4):
        r = np.where(tf >= delay, np.exp(-(tf - delay) / 4), 0)
        c = np.interp(tk, tf, np.convolve(a, r)[: len(tf)] * h)[None].astype(np.float32)
        cbf_o.append(osvd(c, aif, 1.0).rmax[0])
        cbf_s.append(ssvd(c, aif, 1.0, 0.2).rmax[0])
    assert np.ptp(cbf_o) / np.mean(cbf_o) < 0.10
    assert cbf_s[-1] < 0.9 * cbf_s[0]


# ---------- inputs: documented behaviour ----------


def test_head_ct_that_is_not_perfusion_is_refused(tmp_path: Path) -> None:
    P.generate(P.PhantomSpec(n_times=1, n_slices=8), tmp_path)
    r = analyse(tmp_path)
    assert isinstance(r, Refusal) and r.code == RefusalCode.NOT_PERFUSION
    assert "single image" not in r.reason or "once" in r.reason


def test_missing_instance_is_refused_as_incomplete(tmp_path: Path) -> None:
    P.generate(P.PhantomSpec(n_slices=4, drop_instance=(30, 2)), tmp_path)
    r = analyse(tmp_path)
    assert isinstance(r, Refusal) and r.code == RefusalCode.INCOMPLETE
    assert "missing" in r.reason


def test_missing_time_point_is_interpolated_with_warning(tmp_path: Path) -> None:
    _ph, r = _run(tmp_path, P.PhantomSpec(drop_time_point=40))
    assert any("gap" in w for w in r.warnings)
    assert r.summary["defuse3"]["verdict"] == "met"


def _blank(folder: Path, images: list[tuple[int, int]]) -> None:
    """Overwrite the stored pixels of the (time point, slice) images with 0 (-1024 HU)."""
    heads = [(pydicom.dcmread(f, stop_before_pixels=True), f) for f in sorted(folder.iterdir())]
    zs = sorted({float(h.ImagePositionPatient[2]) for h, _ in heads})
    by_slice: dict[int, list[tuple[str, Path]]] = {}
    for h, f in heads:
        by_slice.setdefault(zs.index(float(h.ImagePositionPatient[2])), []).append(
            (str(h.AcquisitionTime), f)
        )
    for t, z in images:
        path = sorted(by_slice[z])[t][1]
        ds = pydicom.dcmread(path)
        ds.PixelData = bytes(len(ds.PixelData))
        ds.save_as(path)


def test_a_blank_image_is_repaired_and_flagged_not_read_as_no_lesion(tmp_path: Path) -> None:
    """One blank image among 45 time points gave core 0 and hypoperfusion 0 mL with no flag
    (outside probe): it is now interpolated from its neighbours in time and named."""
    spec = P.PhantomSpec(n_slices=4, noise=1.0, seed=5)
    ph = P.generate(spec, tmp_path)
    _blank(tmp_path, [(20, 2)])
    r = analyse(tmp_path, config=FAST)
    assert isinstance(r, PerfusionResult), r
    codes = {f["code"] for f in r.qc["flags"]}
    assert "corrupt_images" in codes and any("time point 21 slice 3" in w for w in r.warnings)
    assert r.summary["hypoperfusion_ml"] == pytest.approx(ph.volumes_ml["hypoperfusion"], rel=0.15)
    assert r.summary["core_ml"] > 0.5 * ph.volumes_ml["core"]


def test_many_blank_images_are_refused_naming_them(tmp_path: Path) -> None:
    P.generate(P.PhantomSpec(n_slices=2, noise=1.0), tmp_path)
    _blank(tmp_path, [(t, 0) for t in range(0, 40, 2)])  # 20 of 60: over MAX_FRACTION
    r = analyse(tmp_path, config=FAST)
    assert isinstance(r, Refusal) and r.code == RefusalCode.CORRUPT_IMAGES
    assert "time point 1 slice 1" in r.reason


def test_too_few_time_points_and_missing_timing(tmp_path: Path) -> None:
    P.generate(P.PhantomSpec(n_times=6, n_slices=2), tmp_path / "few")
    r = analyse(tmp_path / "few")
    assert isinstance(r, Refusal) and r.code == RefusalCode.TOO_FEW_TIME_POINTS
    P.generate(P.PhantomSpec(n_times=12, n_slices=2, timing_tag="none"), tmp_path / "none")
    r = analyse(tmp_path / "none")
    assert isinstance(r, Refusal) and r.code == RefusalCode.MISSING_TIMING


def test_empty_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not dicom")
    r = analyse(tmp_path)
    assert isinstance(r, Refusal) and r.code == RefusalCode.NO_IMAGES


@pytest.mark.parametrize("tag", ["content", "ge_mid_scan", "trigger", "temporal_position"])
def test_timing_sources(tmp_path: Path, tag: str) -> None:
    P.generate(P.PhantomSpec(n_times=12, n_slices=2, timing_tag=tag, dt=1.5), tmp_path)
    s = assemble(tmp_path)
    assert not isinstance(s, Refusal), s
    expected = {"content": "content_time", "ge_mid_scan": "ge_mid_scan_time"}.get(
        tag, tag + "_time" if tag == "trigger" else tag
    )
    assert s.timing_source == expected
    np.testing.assert_allclose(s.times[:, 0], np.arange(12) * 1.5, atol=1e-3)


def test_shuffled_files_give_identical_results(tmp_path: Path) -> None:
    spec = P.PhantomSpec(
        n_slices=4, noise=1.0, seed=5, penumbra_radii_mm=(26, 40, 8), core_radii_mm=(15, 20, 5)
    )
    _, a = _run(tmp_path / "a", spec)
    _, b = _run(tmp_path / "b", replace(spec, shuffle=True))
    for name in a.maps:
        np.testing.assert_array_equal(a.maps[name], b.maps[name])
    assert a.summary == b.summary


def test_motion_of_5_mm_is_corrected_and_flagged(tmp_path: Path) -> None:
    spec = P.PhantomSpec(motion_mm=(5.0, 0.0, 0.0), motion_from=35)
    ph, r = _run(tmp_path, spec, PerfusionConfig())
    m = r.motion
    assert m is not None and m.severe
    assert any(f["code"] == "severe_motion" for f in r.qc["flags"])
    # the moving-image shift is recovered, with no spurious rotation (was ~0.9 degrees with
    # point-sampled phantom frames and a soft-tissue window; the phantom now renders a moving
    # head with partial volume, motion.py registers air/scalp/bone edges on every voxel)
    shifts = np.array(m.translation_mm[spec.motion_from :])
    np.testing.assert_allclose(shifts, [[5.0, 0.0, 0.0]] * len(shifts), atol=0.25)
    assert np.abs(m.rotation_deg).max() < 0.25
    assert r.summary["hypoperfusion_ml"] == pytest.approx(ph.volumes_ml["hypoperfusion"], rel=0.10)


def test_small_coverage_marks_volumes_not_reliable(tmp_path: Path) -> None:
    _ph, r = _run(tmp_path, P.PhantomSpec(n_slices=4))
    v = r.summary
    assert not v["volumes_reliable"] and v["defuse3"]["verdict"] == "not_assessable"
    assert "4 slices" in v["reliability_reason"]
    assert r.maps["cbf"].shape[0] == 4  # maps still produced
    items = _sr_items(summary_content(r))
    assert items["Volumes reliable"] == ["no"]
    assert items["Reason volumes not reliable"] == [v["reliability_reason"]]
    assert any(f.startswith("coverage:") for f in items["Quality control flag"])  # type: ignore[union-attr]


def test_low_bolus_and_truncation_flags(tmp_path: Path) -> None:
    _ph, r = _run(tmp_path / "low", P.PhantomSpec(aif_peak=60.0, n_slices=4))
    assert any(f["code"] == "bolus_low" for f in r.qc["flags"])
    _ph, r = _run(tmp_path / "trunc", P.PhantomSpec(n_times=30, n_slices=4))
    flag = next(f for f in r.qc["flags"] if f["code"] == "bolus_truncated")
    # it said "CBV and CBF are underestimated" while an outside phantom's penumbra CBF read
    # 2x, and left the volumes, HIR and DEFUSE-3 verdict standing
    assert "either way" in flag["reason"]
    assert r.summary["volumes_reliable"] is False
    assert flag["reason"] in r.summary["reliability_reason"]
    assert r.summary["defuse3"]["verdict"] == "not_assessable"


DSC_SPEC = P.PhantomSpec(
    modality="MR", aif_peak=150.0, te_ms=40.0, noise=20.0, slice_timing=True, dt=1.5, n_times=45
)
"""DSC at 1.5 T: TE 40 ms, Rician SNR 20 (issue 6); the AIF dose gives a grey-matter peak
signal drop of ~20 % (checked below): the low, conservative end of clinical DSC; the classic
simulations at SNR 20 use 40 % (Østergaard et al. 1996, Wu et al. 2003)."""


@pytest.fixture(scope="module")
def dsc(tmp_path_factory: pytest.TempPathFactory) -> tuple[P.Phantom, PerfusionResult]:
    return _run(tmp_path_factory.mktemp("dsc"), DSC_SPEC)


def test_dsc_phantom_contrast_is_clinical() -> None:
    curves, _ = P._curves(DSC_SPEC)
    drop = 1 - np.exp(-DSC_SPEC.te_ms / 1000 * curves[P.GM0].max())
    assert 0.15 < drop < 0.45, drop


def test_dsc_mr_with_slice_timing_and_leakage(dsc: tuple[P.Phantom, PerfusionResult]) -> None:
    """DSC with per-slice timing and leakage correction: AIF, brain mask, volumes."""
    ph, r = dsc
    s = r.series
    assert s.modality == "MR" and s.echo_time_s == pytest.approx(0.040)
    assert all(ph.labels[tuple(v)] == P.ARTERY for v in r.qc["curves"]["aif_voxels_zyx"])
    sel = ph.tissue & r.tissue
    assert sel.sum() > 0.95 * ph.tissue.sum()  # scalp and skull out of the DSC brain mask
    rs = {n: np.corrcoef(r.maps[n][sel], ph.truth[n][sel])[0, 1] for n in ("cbf", "cbv", "tmax")}
    assert min(rs.values()) > 0.8, rs
    assert r.summary["hypoperfusion_ml"] == pytest.approx(ph.volumes_ml["hypoperfusion"], rel=0.10)
    assert r.summary["defuse3"]["verdict"] == "met"
    assert r.qc["leakage_k2_median"] is not None
    # no DWI given: the rCBF core is flagged as an estimate (the MR reference core is ADC)
    assert [f for f in r.qc["flags"] if f["code"] == "core_without_dwi"]


def test_dsc_mr_meets_issue_accuracy_target(dsc: tuple[P.Phantom, PerfusionResult]) -> None:
    """Issue 6 at DSC SNR 20: r > 0.9 for CBF, CBV and Tmax (was 0.88/0.81/0.88 with a
    Gaussian blur; the curve-similarity filter keeps the cortical ribbon and the lesion
    apart: measured 0.96/0.93/0.91 here, >= 0.91 on seeds 1-6)."""
    ph, r = dsc
    sel = ph.tissue & r.tissue
    rs = {n: np.corrcoef(r.maps[n][sel], ph.truth[n][sel])[0, 1] for n in ("cbf", "cbv", "tmax")}
    assert min(rs.values()) > 0.9, rs
    assert r.summary["hypoperfusion_ml"] == pytest.approx(ph.volumes_ml["hypoperfusion"], rel=0.10)


def test_dsc_tmax_truncation_lag_is_corrected_and_flagged(
    dsc: tuple[P.Phantom, PerfusionResult],
) -> None:
    """DSC Tmax was not truncation-corrected: healthy tissue read +1.4/+1.5 s late here
    (an outside phantom: Tmax>10 s volume 3.7x, HIR 0.83 for 0.22, no flag). Healthy
    tissue is now corrected (-0.4 s); delayed tissue keeps the lag (a dispersed residue
    lags far less and the data cannot tell them apart), so QC says how late it may read
    and the range of the Tmax>10 s volume and HIR that allows, which holds the truth."""
    ph, r = dsc
    flag = next(f for f in r.qc["flags"] if f["code"] == "tmax_resolution")
    assert "HIR" in flag["reason"] and "late" in flag["reason"]
    assert r.qc["tmax_uncertainty_s"] > 1.0
    for first in (P.GM0, P.WM0):
        for sector in (1, 2, 3):  # delay 0 is clipped at 0 s
            sel = (ph.labels == first + sector) & r.tissue
            err = float(np.median(r.maps["tmax"][sel] - ph.truth["tmax"][sel]))
            assert abs(err) < 1.0, (first + sector, err)
    lo, hi = r.summary["tmax_severe_ml_range"]
    assert lo <= ph.volumes_ml["tmax10"] <= hi
    true_hir = ph.volumes_ml["tmax10"] / ph.volumes_ml["hypoperfusion"]
    lo, hi = r.summary["hypoperfusion_intensity_ratio_range"]
    assert lo <= true_hir <= hi + 0.02


def test_dsc_mr_rcbf_core_within_10_percent(dsc: tuple[P.Phantom, PerfusionResult]) -> None:
    """Issue 6 target at DSC SNR 20: rCBF core within 10 %.

    The similarity filter averages the core's edge with its rim (6x the core's CBF) and a
    core voxel's peak ΔR2* is below one frame's noise, so edge voxels of the core read above
    30 %: core error -12 % (seed 1), -5/-18/-14/-27/-23 % on seeds 2-6 (engine at 15470cf).
    segmentation.refine_core_boundary re-reads the edge from the unfiltered curves (matched
    filter between the interior's and the rim's mean curves over all frames; the edge's
    mean curve gives how many edge voxels are core). Measured core / hypoperfusion error,
    true-core hits / false positives (of 164), r CBF/CBV/Tmax, seeds 1-6:
    +5.5/-5 % 153/20 0.95/0.93/0.91; +7.4/-3 % 155/21 0.95/0.93/0.92;
    -3.0/-5 % 152/7 0.95/0.93/0.91; +8.0/-4 % 153/24 0.95/0.93/0.91;
    -11.5/-3 % 133/12 0.96/0.94/0.94; -2.4/0 % 143/17 0.95/0.94/0.95
    (before: hits/false positives 135/9, 142/14, 131/3, 133/9, 118/2, 122/4). Seed 5 stays
    short: its edge slice's whole core (24 voxels) reads 30-50 %, out of reach of a
    one-voxel edge. Tried before (same cause, no success):
    - bias correction of the residue maximum (exponential residue through each voxel's oSVD
      filter, MTT from CBV): normal CBF 1.1-1.4x, but the core's noise-lifted peak reads
      as a short MTT and gets the same correction: -8..-25 %;
    - similarity distance on a single pixel, a 3-pixel line across the shift, the largest
      of 4 lines, or the larger of box and line: -4..-27 %. A single-pixel distance tells
      core from rim apart better (median 3.8 vs 1.5 x floor) but is too noisy;
    - two-pass filter (weights from the pass-1 estimate): -5..-21 %, Tmax r 0.87;
    - local MP-PCA with 6/8 kept components or 48-pixel blocks: -2..-32 %, hypo to -15 %;
    - the filter averaging slice-wide PCA curves instead of the local ones: -18..+1 %, CBV
      r 0.86-0.89; averaging raw curves: -21..+3 %, CBV r 0.64-0.72;
    - least-squares fit of the truncated residue to an exponential template with F = CBV / MTT:
      -9..+14 %, but through false positives (seed 1: 38 vs 9) with the same true-core hits,
      and CBF r 0.85-0.88; rejected.
    Edge variants tried with the matched filter: each edge voxel alone against the rim and
    core templates (no region-level count): -21..+2 %, false positives 2-3x; counts from
    separate inner/outer edges (biased: membership follows the voxel's own noise): -12..+8 %;
    an edge dilated through slices: +5..+21 %; local rim templates (Gaussian, 2 voxels):
    -7..+10 %, more false positives; ranking by a voxel's own evidence alone: the same
    volumes, ~1.3x the false positives.
    """
    ph, r = dsc
    assert r.summary["reference"]["core_edge"]["applied"]
    assert r.summary["core_ml"] == pytest.approx(ph.volumes_ml["core"], rel=0.10)


def test_dsc_normal_tissue_absolute_cbf_with_saturated_aif(
    dsc: tuple[P.Phantom, PerfusionResult],
) -> None:
    """At SNR 20 the arterial peak frames lie in the Rician floor. Read from the denoised,
    clipped curves they made a flat spike the AIF score preferred: normal CBF 0.50 (GM) /
    0.58 (WM) of truth. Read from the acquired signal, saturated frames out of the score:
    0.67 / 0.78 measured while oSVD's truncation went uncorrected on DSC; with the DSC
    truncation correction 1.19 / 1.30, and CBV (an area, no truncation) 1.36 / 1.45: what is
    left is the AIF's area (its reconstructed saturated peak), which scales CBF and CBV
    alike; CBF stays within 20 % of CBV's scale."""
    ph, r = dsc
    for first in (P.GM0, P.WM0):
        sel = np.isin(ph.labels, range(first, first + 4)) & r.tissue
        ratio = np.median(r.maps["cbf"][sel]) / np.median(ph.truth["cbf"][sel])
        cbv = np.median(r.maps["cbv"][sel]) / np.median(ph.truth["cbv"][sel])
        assert 0.6 < ratio < 1.35, (first, ratio)
        assert 0.8 < ratio / cbv < 1.2, (first, ratio, cbv)
    assert "saturated_frames_reconstructed" in r.qc["curves"]


def test_saturated_aif_frames_are_reconstructed_only_when_both_edges_are_sampled() -> None:
    """DSC AIF peak frames in the noise floor: a gamma-variate fit to the unsaturated first
    pass restores the peak when the rise and the fall are sampled; with no measured rise it
    leaves the frames alone instead of inventing a peak."""
    t = np.arange(60.0)
    true = gamma_variate(t, 1.0, 10.0, 3.0, 2.0)
    true *= 100.0 / true.max()
    valid = true < 60.0  # the top of the bolus is saturated
    measured = np.where(valid, true, 25.0).astype(np.float32)  # floor-level readings
    filled, frames = fill_saturated(measured, valid)
    assert frames == np.nonzero(~valid)[0].tolist()
    np.testing.assert_allclose(filled[~valid], true[~valid], rtol=0.05)
    no_rise = valid & (t > 15)
    same, frames = fill_saturated(measured, no_rise | (t < 12))
    assert frames == [] and np.array_equal(same, measured)


def test_dsc_noise_free_leakage_correction_keeps_delayed_cbv(tmp_path: Path) -> None:
    """Classic Boxerman-Weisskoff fitting halves the CBV of delayed, dispersed tissue."""
    config = replace(FAST, dsc_smoothing_mm=0.0)  # no partial volume of a thin GM ribbon
    ph, r = _run(tmp_path, replace(DSC_SPEC, noise=0.0), config)
    for label in (P.PEN_GM, P.PEN_WM, P.GM0 + 3, P.WM0):
        sel = (ph.labels == label) & r.tissue
        est, true = np.median(r.maps["cbv"][sel]), np.median(ph.truth["cbv"][sel])
        assert abs(est / true - 1) < 0.10, (label, est, true)
    assert abs(r.qc["leakage_k2_median"]) < 1e-4


def test_leakage_correction_recovers_known_k2() -> None:
    t = np.arange(60.0)
    s = np.clip(t - 10, 0, None)
    ref = (s**3 * np.exp(-s / 1.5)).astype(np.float32)
    ref /= ref.max() / 10
    integral = np.cumsum(ref)
    delayed = np.interp(t - 4, t, ref)  # a delayed, intact-BBB voxel
    leaky = ref - 0.02 * integral  # T1-dominant leakage (K2 = 0.02)
    curves = np.stack([ref, delayed, leaky]).astype(np.float32)
    corrected, k2 = leakage_correct(curves, 1.0, reference=ref)
    assert k2[0] == pytest.approx(0.0, abs=2e-3) and k2[1] == pytest.approx(0.0, abs=2e-3)
    assert k2[2] == pytest.approx(0.02, rel=0.15)
    assert corrected[2].sum() == pytest.approx(ref.sum(), rel=0.10)


def test_dwi_core_from_adc(tmp_path: Path) -> None:
    spec = P.PhantomSpec()
    ph = P.generate(spec, tmp_path / "ctp")
    P.write_adc(ph, tmp_path / "adc")
    r = analyse(tmp_path / "ctp", config=FAST, dwi=tmp_path / "adc")
    assert isinstance(r, PerfusionResult)
    assert r.summary["core_source"].startswith("ADC")
    assert r.summary["core_ml"] == pytest.approx(ph.volumes_ml["core"], rel=0.2)
    assert r.coregistration is not None


@pytest.mark.parametrize(
    ("shift", "rotation"), [((3.0, -2.0, 4.0), 5.0), ((-6.0, 4.0, -2.5), -12.0)]
)
def test_flair_coregistration_recovers_known_transform(
    tmp_path: Path, shift: tuple[float, float, float], rotation: float
) -> None:
    """FLAIR on its own finer grid, moved by a known rigid transform, through ``--flair``."""
    ph = P.generate(P.PhantomSpec(), tmp_path / "ctp")
    P.write_flair(ph, tmp_path / "flair", shift, rotation)
    argv = ["analyse", str(tmp_path / "ctp"), "--out", str(tmp_path / "out"), "--quiet"]
    rc = main([*argv, "--no-motion-correction", "--flair", str(tmp_path / "flair")])
    assert rc == 0
    doc = json.loads((tmp_path / "out" / "result.json").read_text())
    assert doc["input"]["flair"] is True and doc["input"]["dwi"] is False
    reg = doc["coregistration"]["flair"]
    np.testing.assert_allclose(reg["translation_mm"], shift, atol=1.0)
    np.testing.assert_allclose(reg["rotation_deg"], [0.0, 0.0, rotation], atol=1.0)
    heads = [
        pydicom.dcmread(tmp_path / "out" / p, stop_before_pixels=True)
        for p in doc["outputs"]
        if p.endswith(".dcm")
    ]
    overlay = [d for d in heads if d.SeriesDescription == "Perfusion on FLAIR (coregistered)"]
    assert len(overlay) == ph.spec.n_slices
    sr = next(d for d in heads if d.Modality == "SR")
    assert any(
        t.startswith("FLAIR: translation")
        for t in _sr_items(sr)["Rigid coregistration to perfusion"]
    )  # type: ignore[union-attr]


# ---------- command line and DICOM output ----------


@pytest.fixture(scope="module")
def cli_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One CLI run shared by the output tests (a full analysis takes seconds)."""
    tmp = tmp_path_factory.mktemp("cli")
    P.generate(P.PhantomSpec(n_slices=8, noise=1.0), tmp / "in")
    rc = main(
        [
            "analyse",
            str(tmp / "in"),
            "--out",
            str(tmp / "out"),
            "--quiet",
            "--threshold-core",
            "0.3",
            "--no-motion-correction",
        ]
    )
    assert rc == 0
    return tmp


def test_cli_writes_result_json_and_secondary_captures(cli_out: Path) -> None:
    tmp_path = cli_out
    doc = json.loads((tmp_path / "out" / "result.json").read_text())
    assert doc["status"] == "ok"
    for key in (
        "core_ml",
        "hypoperfusion_ml",
        "mismatch_ml",
        "mismatch_ratio",
        "hypoperfusion_intensity_ratio",
        "defuse3",
    ):
        assert key in doc["volumes"]
    assert set(doc["timings_s"]) >= {"load", "deconvolution", "output"}
    assert doc["qc"]["curves"]["aif"] and doc["qc"]["curves"]["aif_voxels_zyx"]
    files = [pydicom.dcmread(tmp_path / "out" / p) for p in doc["outputs"] if p.endswith(".dcm")]
    sc = [d for d in files if d.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"]
    pm = [d for d in files if d.SOPClassUID == "1.2.840.10008.5.1.4.1.1.30"]
    assert len(pm) == 5 and len(sc) >= 5 * 8 + 8 + 3
    src = pydicom.dcmread(next((tmp_path / "in").iterdir()))
    for d in sc[:3]:  # Conformance 8.1.3 / 8.1.1
        assert d.Modality == "CT" and d.ConversionType == "SYN"
        assert d.PhotometricInterpretation == "RGB" and d.SamplesPerPixel == 3
        assert d.BitsAllocated == 8 and d.PlanarConfiguration == 0
        assert [float(v) for v in d.PixelSpacing] == [1.0, 1.0]
        assert d.PatientID == src.PatientID and d.StudyInstanceUID == src.StudyInstanceUID
        assert d.SeriesDate == d.ContentDate and d.Manufacturer
        assert d.pixel_array.shape[2] == 3
    cbf = next(d for d in pm if d.ContentLabel == "CBF")
    assert cbf.pixel_array.dtype == np.float32 and cbf.NumberOfFrames == 8


def _sr_items(ds: pydicom.Dataset) -> dict[str, list[object]]:
    """Concept meaning -> values (NUM, TEXT) of every item in an SR content tree."""
    found: dict[str, list[object]] = {}

    def walk(items: pydicom.Sequence) -> None:
        for item in items:
            name = item.ConceptNameCodeSequence[0].CodeMeaning
            if item.ValueType == "NUM":
                value: object = float(item.MeasuredValueSequence[0].NumericValue)
            elif item.ValueType == "TEXT":
                value = str(item.TextValue)
            else:
                value = item.ValueType
            found.setdefault(name, []).append(value)
            if "ContentSequence" in item:
                walk(item.ContentSequence)

    walk(ds.ContentSequence)
    return found


def test_cli_writes_enhanced_sr_summary(cli_out: Path) -> None:
    doc = json.loads((cli_out / "out" / "result.json").read_text())
    v = doc["volumes"]
    paths = [cli_out / "out" / p for p in doc["outputs"] if p.endswith(".dcm")]
    srs = [p for p in paths if pydicom.dcmread(p).Modality == "SR"]
    assert len(srs) == 1
    ds = pydicom.dcmread(srs[0])
    src = pydicom.dcmread(next((cli_out / "in").iterdir()), stop_before_pixels=True)
    others = {pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID for p in paths}
    # SR Document General module: same study, own series, flags, content date/time, evidence
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.22"
    assert ds.StudyInstanceUID == src.StudyInstanceUID and ds.PatientID == src.PatientID
    assert ds.SeriesInstanceUID != src.SeriesInstanceUID
    assert sum(u == ds.SeriesInstanceUID for u in others) == 1  # no other output in its series
    assert (ds.CompletionFlag, ds.VerificationFlag) == ("COMPLETE", "UNVERIFIED")
    assert len(ds.ContentDate) == 8 and ds.ContentTime
    evidence = ds.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == src.StudyInstanceUID
    ref = evidence.ReferencedSeriesSequence[0]
    assert ref.SeriesInstanceUID == src.SeriesInstanceUID and len(ref.ReferencedSOPSequence) == 8
    items = _sr_items(ds)
    assert items["Ischemic core volume"] == [pytest.approx(v["core_ml"])]
    assert items["Hypoperfusion volume"] == [pytest.approx(v["hypoperfusion_ml"])]
    assert items["Mismatch volume"] == [pytest.approx(v["mismatch_ml"])]
    assert items["Mismatch ratio"] == [pytest.approx(v["mismatch_ratio"])]
    assert items["Hypoperfusion intensity ratio"] == [
        pytest.approx(v["hypoperfusion_intensity_ratio"])
    ]
    assert items["DEFUSE-3 verdict"] == [v["defuse3"]["verdict"]] == ["met"]
    assert items["Volumes reliable"] == ["yes"]
    assert items["Quality control flag"] == ["none"]
    aif = doc["qc"]["curves"]["aif_voxels_zyx"]
    assert items["Selected voxels (z, y, x) on the perfusion grid"][0].startswith(
        "({},{},{})".format(*aif[0])
    )
    assert "SCOORD" in items["Selected voxel location"]
    # DCMTK parses it without errors and prints the volumes
    dsrdump = shutil.which("dsrdump")
    if dsrdump is None:
        pytest.skip("DCMTK dsrdump not installed")
    out = subprocess.run([dsrdump, str(srs[0])], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert not [line for line in out.stderr.splitlines() if line.startswith(("E:", "F:"))]
    assert "Enhanced SR Document" in out.stdout and "Completion Flag     : COMPLETE" in out.stdout
    assert f'"Ischemic core volume")="{v["core_ml"]:g}" (mL,UCUM' in out.stdout
    assert f'"Hypoperfusion volume")="{v["hypoperfusion_ml"]:g}" (mL,UCUM' in out.stdout
    assert f'"Mismatch volume")="{v["mismatch_ml"]:g}" (mL,UCUM' in out.stdout
    assert '"DEFUSE-3 verdict")="met"' in out.stdout


def test_cli_non_perfusion_exits_non_zero_with_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    P.generate(P.PhantomSpec(n_times=1), tmp_path / "in")
    rc = main(["analyse", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--quiet"])
    assert rc == 2
    doc = json.loads((tmp_path / "out" / "result.json").read_text())
    assert doc["status"] == "refused" and doc["code"] == "not_perfusion"
    assert "not a perfusion series" in capsys.readouterr().err


def test_config_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError, match="unknown"):
        PerfusionConfig.from_dict({"threshold_cor": 0.3})
