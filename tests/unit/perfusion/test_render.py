"""Secondary-capture rendering: each overlay layer's legend entry is drawn in that layer's
colour (the core/hypoperfusion legend once named the core green and Tmax > 6 s magenta,
the reverse of the image: outside probe)."""

from __future__ import annotations

import numpy as np

from lucent.perfusion.dicom_out import CORE_COLOUR, HYPO_COLOUR
from lucent.perfusion.render import render_overlay


def test_each_legend_swatch_has_its_layers_colour() -> None:
    base = np.full((64, 64), 40.0, np.float32)
    hypo = np.zeros((64, 64), bool)
    hypo[10:40, 10:40] = True
    core = np.zeros((64, 64), bool)
    core[20:30, 20:30] = True
    img = render_overlay(
        base, (0.0, 80.0), [(hypo & ~core, HYPO_COLOUR, "Tmax"), (core, CORE_COLOUR, "core")],
        "title", min_size=64,
    )  # fmt: skip
    h = 64  # the image is drawn 40 px below the top, at its own size (min_size)
    for i, colour in enumerate((HYPO_COLOUR, CORE_COLOUR)):
        swatch = img[h + 44 + 22 * i + 9, 16]
        assert tuple(int(v) for v in swatch) == colour
    # and the image's own tint under each mask leans to that colour
    core_px, hypo_px = img[40 + 25, 25].astype(int), img[40 + 12, 12].astype(int)
    assert core_px[0] > core_px[1] and core_px[2] > core_px[1]  # magenta
    assert hypo_px[1] > hypo_px[0] and hypo_px[1] > hypo_px[2]  # green
