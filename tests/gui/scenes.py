"""Synthetic studies for the GUI tests, with pixel values and geometry we can predict.

* "Guitest^Anna": CT axial (8 slices, 64×64, 0.5 mm pixels, z = 0…7 mm) and a coronal series
  in the same Frame of Reference, plus a highdicom GSPS on axial slice 3.
* "Guitest^Bernd": CR MONOCHROME1, one image lossy ("01", 10:1), one not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from tests.data.samples import file_meta_for, make_instance, set_pixels, write

CT = "1.2.840.10008.5.1.4.1.1.2"
CR = "1.2.840.10008.5.1.4.1.1.1"
N = 64
SPACING = 0.5


@dataclass
class Scene:
    files: list[Path] = field(default_factory=list)
    axial: list[Dataset] = field(default_factory=list)
    coronal: list[Dataset] = field(default_factory=list)
    cr: list[Dataset] = field(default_factory=list)
    gsps: Dataset | None = None
    suffix: str = ""


def ct_pixels(k: int) -> np.ndarray:
    """HU = -1000 … +1000 ramp along columns, +k per slice; stored = HU + 1024."""
    hu = np.tile(np.linspace(-1000, 1000, N).round(), (N, 1)) + k
    return (hu + 1024).astype(np.int16)


def _ct(study: str, series: str, frame: str, k: int, iop: list[float], ipp: list[float],
        desc: str, number: int, name: str, pid: str) -> Dataset:  # fmt: skip
    ds = make_instance(CT, patient_id=pid, patient_name=name, study_uid=study,
                       series_uid=series, frame_of_reference_uid=frame, series_number=number,
                       instance_number=k + 1, rows=N, cols=N)  # fmt: skip
    set_pixels(ds, ct_pixels(k), bits_allocated=16, bits_stored=16, signed=True)
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
    ds.WindowCenter, ds.WindowWidth = 40, 400
    ds.ImageOrientationPatient = iop
    ds.ImagePositionPatient = ipp
    ds.PixelSpacing = [SPACING, SPACING]
    ds.SliceThickness = 1.0
    ds.SeriesDescription = desc
    ds.StudyDescription = "GUI test CT"
    for kw in ("SliceLocation",):
        if kw in ds:
            del ds[kw]
    ds.file_meta = file_meta_for(ds)
    return ds


def build(directory: Path, suffix: str) -> Scene:
    sc = Scene(suffix=suffix)
    anna, bernd = f"Guitest{suffix}^Anna", f"Guitest{suffix}^Bernd"
    study, frame = generate_uid(), generate_uid()
    ax_uid, co_uid = generate_uid(), generate_uid()
    half = (N - 1) * SPACING / 2  # image centred on x = 0
    for k in range(8):
        sc.axial.append(_ct(study, ax_uid, frame, k, [1, 0, 0, 0, 1, 0],
                            [-half, -half, float(k)], "Axial", 1, anna, f"GA{suffix}"))  # fmt: skip
    # Coronal planes at y = -4 … +4 mm, 64 columns along x, rows going down in z from z=20.
    for k in range(4):
        sc.coronal.append(_ct(study, co_uid, frame, k, [1, 0, 0, 0, 0, -1],
                              [-half, -4.0 + 2.5 * k, 20.0], "Coronal", 2, anna,
                              f"GA{suffix}"))  # fmt: skip
    cr_study, cr_series = generate_uid(), generate_uid()
    for k, lossy in enumerate((False, True)):
        ds = make_instance(CR, patient_id=f"GB{suffix}", patient_name=bernd, study_uid=cr_study,
                           series_uid=cr_series if not lossy else generate_uid(),
                           instance_number=k + 1, rows=N, cols=N, series_number=k + 1)  # fmt: skip
        arr = np.tile(np.linspace(0, 4095, N).round(), (N, 1)).astype(np.uint16)
        set_pixels(ds, arr, bits_allocated=16, bits_stored=12,
                   photometric="MONOCHROME1")  # fmt: skip
        ds.WindowCenter, ds.WindowWidth = 2048, 4096
        for kw in ("RescaleSlope", "RescaleIntercept", "PresentationLUTShape"):
            if kw in ds:
                del ds[kw]
        ds.PresentationLUTShape = "INVERSE"
        ds.StudyDescription = "GUI test CR"
        ds.SeriesDescription = "CR lossy" if lossy else "CR"
        ds.LossyImageCompression = "01" if lossy else "00"
        if lossy:
            ds.LossyImageCompressionRatio = [10]
            ds.LossyImageCompressionMethod = ["ISO_10918_1"]
        ds.file_meta = file_meta_for(ds)
        sc.cr.append(ds)
    sc.gsps = _highdicom_gsps(sc.axial[3])
    for i, ds in enumerate([*sc.axial, *sc.coronal, *sc.cr, sc.gsps]):
        sc.files.append(write(ds, directory / f"{i:03d}.dcm"))
    return sc


def _highdicom_gsps(image: Dataset) -> Dataset:
    """A GSPS made by another tool (highdicom): a horizontal line across row 10."""
    from highdicom import pr

    layer = pr.GraphicLayer(layer_name="EXT", order=1)
    ann = pr.GraphicAnnotation(
        referenced_images=[image],
        graphic_layer=layer,
        graphic_objects=[pr.GraphicObject(
            graphic_type=pr.GraphicTypeValues.POLYLINE,
            graphic_data=np.array([[5.5, 10.5], [58.5, 10.5]]),
            units=pr.AnnotationUnitsValues.PIXEL,
        )],
    )  # fmt: skip
    return pr.GrayscaleSoftcopyPresentationState(
        referenced_images=[image], series_instance_uid=generate_uid(), series_number=50,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer="highdicom",
        manufacturer_model_name="test", software_versions="1", device_serial_number="1",
        content_label="EXTERNAL", graphic_annotations=[ann], graphic_layers=[layer],
    )  # fmt: skip
