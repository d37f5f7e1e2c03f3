"""Motion correction on small in-code phantoms (issue 6: "motion of 5 mm" gives the
documented behaviour; a motion-free series with a bolus must not be "corrected").

The phantom is a head of nested ellipses (scalp, skull, brain, ventricles) with two arteries
and a sinus that fill with contrast, rendered with partial volume (4x supersampled) so that a
rigid move of the head is a rigid move of the image. The bolus is strong (arteries +400 HU,
tissue +40 HU on one side only) and arrives within a few frames: the condition in which a
correlation metric chased the contrast and reported 5-15 degree rotations.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from lucent.perfusion.motion import correct_motion

N, PX, NZ, DZ, NT = 112, 2.0, 4, 5.0, 16
SPACING = (DZ, PX, PX)
SUPER = 4
# classes: air, scalp, skull, brain (left), brain (right), csf, artery, sinus
CT_BASE = np.array([-1000.0, 40.0, 1100.0, 35.0, 35.0, 5.0, 40.0, 40.0])
CT_PEAK = np.array([0.0, 5.0, 0.0, 40.0, 12.0, 2.0, 420.0, 300.0])
MR_BASE = np.array([5.0, 600.0, 40.0, 700.0, 700.0, 1400.0, 800.0, 800.0])
MR_DROP = np.array([0.0, 0.05, 0.0, 0.35, 0.15, 0.02, 0.95, 0.85])


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, a: float, b: float) -> np.ndarray:
    return ((x - cx) / a) ** 2 + ((y - cy) / b) ** 2 <= 1.0


def _fractions(
    rot_deg: float = 0.0, shift_mm: tuple[float, float] = (0.0, 0.0), nz: int = NZ
) -> np.ndarray:
    """Partial-volume fraction of each class, (classes, Z, Y, X), head rotated about the
    image centre by ``rot_deg`` and then shifted by ``shift_mm`` (x, y)."""
    n = N * SUPER
    c = (np.arange(n) - (n - 1) / 2) * PX / SUPER
    yy, xx = np.meshgrid(c, c, indexing="ij")
    # anatomy at p in the moved head sits at R^-1 (p - d) in the head's own frame
    th = math.radians(rot_deg)
    px, py = xx - shift_mm[0], yy - shift_mm[1]
    x = math.cos(th) * px + math.sin(th) * py
    y = -math.sin(th) * px + math.cos(th) * py
    out = np.zeros((len(CT_BASE), nz, N, N), dtype=np.float32)
    for z in range(nz):
        s = 1.0 - 0.04 * z  # the head narrows a little towards the vertex
        lab = np.zeros((n, n), dtype=np.int8)
        lab[_ellipse(x, y, 0, 0, 78 * s, 94 * s)] = 1
        lab[_ellipse(x, y, 0, 0, 72 * s, 88 * s)] = 2
        lab[_ellipse(x, y, 0, 0, 66 * s, 82 * s)] = 3
        lab[_ellipse(x, y, 0, 0, 66 * s, 82 * s) & (x > 0)] = 4
        lab[_ellipse(x, y, -9, 5, 5, 22) | _ellipse(x, y, 9, 5, 5, 22)] = 5
        lab[_ellipse(x, y, -14, -58, 3, 3) | _ellipse(x, y, 16, -56, 3, 3)] = 6
        lab[_ellipse(x, y, 0, 78 * s, 5, 4)] = 7
        for k in range(len(CT_BASE)):
            m = (lab == k).reshape(N, SUPER, N, SUPER).mean(axis=(1, 3))
            out[k, z] = m
    return out


def _bolus(n_t: int = NT, arrival: int = 3) -> np.ndarray:
    """Gamma-variate-like curve, 0 before ``arrival``, peak 1 two to three frames later."""
    t = np.arange(n_t) - arrival + 1.0
    g = np.where(t > 0, (np.clip(t, 0, None) / 3.0) ** 3 * np.exp(-(t - 3.0)), 0.0)
    return g / g.max()


def _series(
    modality: str,
    moves: dict[int, tuple[float, tuple[float, float]]] | None = None,
    noise: float = 10.0,
    seed: int = 0,
    nz: int = NZ,
) -> np.ndarray:
    """(T, Z, Y, X) float32 frames; ``moves`` maps a first frame to (rotation, shift) that
    holds from that frame on."""
    rng = np.random.default_rng(seed)
    poses = sorted((moves or {}).items())
    still = _fractions(nz=nz)
    cache: dict[tuple[float, tuple[float, float]], np.ndarray] = {}
    curve = _bolus()
    frames = np.empty((NT, nz, N, N), dtype=np.float32)
    for t in range(NT):
        pose = (0.0, (0.0, 0.0))
        for start, p in poses:
            if t >= start:
                pose = p
        if pose not in cache:
            cache[pose] = still if pose == (0.0, (0.0, 0.0)) else _fractions(*pose, nz=nz)
        frac = cache[pose]
        if modality == "CT":
            values = CT_BASE + CT_PEAK * curve[t]
            img = np.tensordot(values, frac, axes=1)
            frames[t] = img + rng.normal(0, noise, img.shape)
        else:
            values = MR_BASE * (1.0 - MR_DROP * curve[t])
            img = np.tensordot(values, frac, axes=1)
            frames[t] = np.hypot(
                img + rng.normal(0, noise, img.shape), rng.normal(0, noise, img.shape)
            )
    return frames


@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_no_motion_is_invented_in_a_motion_free_bolus_series(modality: str) -> None:
    frames = _series(modality, noise=10.0 if modality == "CT" else 25.0)
    before = frames.copy()
    r = correct_motion(frames, SPACING, modality, apply_min_mm=0.5)
    assert r.max_displacement_mm < 0.3, r.displacement_mm
    assert np.abs(r.rotation_deg).max() < 0.2
    assert r.corrected_frames == [] and not r.severe
    np.testing.assert_array_equal(frames, before)  # no frame resampled


@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_injected_translation_and_rotation_are_recovered_and_flagged(modality: str) -> None:
    # the head turns 3 degrees and moves (5, -2) mm during the bolus, then moves back partly
    moves = {5: (3.0, (5.0, -2.0)), 11: (-1.5, (2.0, 1.0))}
    frames = _series(modality, moves, noise=10.0 if modality == "CT" else 25.0)
    r = correct_motion(frames, SPACING, modality, apply_min_mm=0.5)
    tr, rot = np.array(r.translation_mm), np.array(r.rotation_deg)
    for t in range(NT):
        angle, (dx, dy) = (0.0, (0.0, 0.0))
        for start, pose in sorted(moves.items()):
            if t >= start:
                angle, (dx, dy) = pose
        assert tr[t, :2] == pytest.approx([dx, dy], abs=0.5), (t, tr[t])
        assert rot[t, 2] == pytest.approx(angle, abs=0.5), (t, rot[t])
    assert r.corrected_frames == list(range(5, NT))
    assert r.severe and "severe motion" in r.reason
    assert r.rejected_frames == []


def test_corrected_frames_line_up_with_the_reference() -> None:
    moves = {4: (2.0, (-4.0, 3.0))}
    frames = _series("CT", moves, noise=0.0)
    still = _series("CT", noise=0.0)
    # skull and scalp carry no contrast: after correction they are back where they were, up
    # to the blur of linear interpolation on a 1100 HU edge
    rigid = np.broadcast_to(_fractions()[[1, 2]].sum(axis=0) > 0.05, frames.shape)
    before = np.abs(frames - still)[rigid].mean()
    correct_motion(frames, SPACING, "CT", apply_min_mm=0.5)
    after = np.abs(frames - still)[rigid].mean()
    assert after < 0.2 * before, (before, after)


def test_small_motion_is_corrected_but_not_severe() -> None:
    frames = _series("CT", {6: (0.0, (1.5, 0.0))})
    r = correct_motion(frames, SPACING, "CT", apply_min_mm=0.5)
    assert np.array(r.translation_mm)[6:, 0] == pytest.approx(1.5, abs=0.3)
    assert r.corrected_frames == list(range(6, NT))
    assert not r.severe


def test_thick_slab_ct_registers_all_six_parameters_without_inventing_tilt() -> None:
    # 12 slices x 5 mm: through-plane rotation and z-shift are estimated too; the bolus
    # arrives at frame 3, the head moves at frame 5
    frames = _series("CT", {5: (2.0, (-3.0, 2.0))}, nz=12)
    r = correct_motion(frames, SPACING, "CT", apply_min_mm=0.5)
    tr, rot = np.array(r.translation_mm), np.array(r.rotation_deg)
    assert r.displacement_mm[:5] == pytest.approx([0.0] * 5, abs=0.3)
    np.testing.assert_allclose(tr[5:], [[-3.0, 2.0, 0.0]] * (NT - 5), atol=0.3)
    np.testing.assert_allclose(rot[5:], [[0.0, 0.0, 2.0]] * (NT - 5), atol=0.3)
    assert r.corrected_frames == list(range(5, NT))


def test_motion_through_a_thin_slab_is_flagged_not_reported_as_none() -> None:
    """From frame 6 the head sits 3 mm further along y and one slice (5 mm) along z: a
    4-slice slab is registered in-plane only, no transform aligns those frames, and they
    were reported as 'not moved' with no flag while the volumes came out wrong (outside
    probe: 3 mm in y, 4 mm in z). A pure z-shift of this phantom goes unseen (its slices
    differ by 4 % in size): a limit of in-plane registration, named in the closing note."""
    still = _series("CT", noise=10.0, nz=NZ + 1)
    moved = _series("CT", {0: (0.0, (0.0, 3.0))}, noise=10.0, nz=NZ + 1)
    frames = np.concatenate([still[:6, :NZ], moved[6:, 1:]])
    r = correct_motion(frames, SPACING, "CT", apply_min_mm=0.5)
    assert r.rejected_frames == list(range(6, NT))
    assert r.severe and "motion not corrected: 10 frame(s) (7, 8" in r.reason
