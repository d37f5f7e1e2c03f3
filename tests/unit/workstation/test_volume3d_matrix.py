"""The 3D view's prop matrix puts voxels at their patient positions (no display needed)."""

from __future__ import annotations

import numpy as np

from workstation.model.volume import VolumeGrid
from workstation.render.volume3d import PRESETS, patient_matrix


def test_patient_matrix_maps_index_mm_to_patient_space() -> None:
    # A coronal stack: rows along −z, slices stepping along +y, origin off zero.
    grid = VolumeGrid(np.zeros((4, 5, 6), np.int16), np.array([-10.0, 3.0, 50.0]),
                      np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.0, -1.0]),
                      np.array([0.0, 1.0, 0.0]), (0.5, 0.8, 2.0))  # fmt: skip
    m = patient_matrix(grid)
    mat = np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])
    for i, j, k in ((0, 0, 0), (5, 4, 3), (2, 1, 3)):
        index_mm = np.array([i * 0.5, j * 0.8, k * 2.0, 1.0])
        assert np.allclose((mat @ index_mm)[:3], grid.to_world(i, j, k))


def test_presets_cover_bone_soft_tissue_and_mip() -> None:
    assert {"Bone", "Soft tissue", "MIP"} <= set(PRESETS)
    assert PRESETS["MIP"].blend == "mip" and PRESETS["Bone"].blend == "composite"
    # Air is transparent in the composite presets, so the background stays black.
    assert all(dict(p.opacity)[-1000] == 0.0 for p in PRESETS.values() if p.blend != "mip")
