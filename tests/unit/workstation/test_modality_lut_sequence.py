"""Modality LUT Sequence (0028,3000) in the viewer (PS3.3 C.11.1, PS3.4 N.2.1.1).

Outside probe 47: a CR whose Modality LUT Sequence maps stored x to 4095 - x rendered
inverted, since only Rescale Slope/Intercept were read. The LUT replaces rescale.
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from tests.data.samples import make_instance, set_pixels
from workstation.model.pipeline import frames_from_dataset

CR = "1.2.840.10008.5.1.4.1.1.1"
STORED = np.array([[0, 1, 2048, 4000, 4095]], np.uint16)


def inverted_cr() -> Dataset:
    ds = make_instance(CR, rows=1, cols=STORED.shape[1])
    set_pixels(ds, STORED, bits_allocated=16, bits_stored=12)
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    item.ModalityLUTType = "US"
    item.add_new(0x00283006, "US", [4095 - v for v in range(4096)])
    ds.ModalityLUTSequence = Sequence([item])
    for keyword in ("RescaleSlope", "RescaleIntercept"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    return ds


def test_modality_lut_sequence_gives_the_modality_values() -> None:
    (frame,) = frames_from_dataset(inverted_cr())
    assert frame.modality_values()[0].tolist() == [4095, 4094, 2047, 95, 0]


def test_rescale_still_applies_without_a_lut() -> None:
    ds = inverted_cr()
    del ds.ModalityLUTSequence
    ds.RescaleSlope, ds.RescaleIntercept = 2, -10
    (frame,) = frames_from_dataset(ds)
    assert frame.modality_values()[0].tolist() == [-10, -8, 4086, 7990, 8180]
