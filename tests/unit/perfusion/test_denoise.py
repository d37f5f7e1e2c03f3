"""Adaptive-weights denoising of curve coefficients (``lucent.perfusion.denoise``)."""

from __future__ import annotations

import numpy as np

from lucent.perfusion.denoise import adaptive_filter, noise_covariance

SHAPE = (4, 48, 48)


def _grid() -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    idx = np.nonzero(np.ones(SHAPE, bool))
    return idx, np.ones(len(idx[0]), bool)


def test_noise_covariance_from_neighbour_differences_ignores_edges() -> None:
    rng = np.random.default_rng(0)
    cov = np.array([[4.0, 1.0], [1.0, 2.0]])
    noise = rng.multivariate_normal([0, 0], cov, size=SHAPE).astype(np.float32)
    signal = np.zeros((*SHAPE, 2), np.float32)
    signal[:, :, 24:] = 20.0  # a strong edge: its pairs are trimmed
    grid = np.moveaxis(signal + noise, -1, 0)
    est = noise_covariance(grid, np.ones(SHAPE, bool))
    assert np.allclose(est, cov, rtol=0.1, atol=0.1)


def test_flat_region_averages_widely_and_a_low_contrast_edge_stays_sharp() -> None:
    """A step of 1.5 noise SDs per coefficient (one voxel cannot tell the sides apart):
    the interior's noise falls far below one voxel's and the voxels next to the edge keep
    their own side's value (a fixed-width average of the same width would mix them)."""
    rng = np.random.default_rng(1)
    idx, inside = _grid()
    truth = np.zeros((*SHAPE, 3), np.float32)
    truth[:, :, 24:] = 1.5
    noisy = truth + rng.normal(0, 1, truth.shape).astype(np.float32)
    out = adaptive_filter(noisy[idx], idx, SHAPE, inside, 1.0, 5.0, radius_mm=8.0)
    res = np.zeros_like(truth)
    res[idx] = out
    err = res - truth
    interior = np.concatenate([err[:, :, 4:18], err[:, :, 30:44]], axis=2)
    assert interior.std() < 0.2  # one voxel: 1.0
    for col, side in ((23, 0.0), (24, 1.5)):
        assert abs(float(res[:, 4:44, col].mean()) - side) < 0.3, (col, res[:, :, col].mean())


def test_outside_voxels_keep_their_values() -> None:
    rng = np.random.default_rng(2)
    idx, _ = _grid()
    values = rng.normal(0, 1, (len(idx[0]), 2)).astype(np.float32)
    inside = idx[2] < 24
    out = adaptive_filter(values, idx, SHAPE, inside, 1.0, None, radius_mm=4.0)
    assert np.array_equal(out[~inside], values[~inside])
    assert out[inside].std() < 0.5 * values[inside].std()
