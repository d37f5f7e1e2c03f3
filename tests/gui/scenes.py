"""Synthetic studies for the GUI tests, with pixel values and geometry we can predict.

* "Guitest^Anna": CT axial (8 slices, 64×64, 0.5 mm pixels, z = 0…7 mm) and a coronal series
  in the same Frame of Reference, plus a highdicom GSPS on axial slice 3.
  "Volume" (air with a bright box, for MPR/MIP/3D) and "Overlay" (3 slices, each with an
  overlay plane (60xx,3000) whose line sits on a row that depends on the slice), and an
  "Enhanced CT" multi-frame whose geometry lives only in its functional groups.
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
VOLUME_N, VOLUME_SLICES, VOLUME_Z0 = 48, 21, 30.0
BOX_I, BOX_J, BOX_K = (14, 20), (28, 34), (8, 12)  # inclusive voxel ranges of the box


@dataclass
class Scene:
    files: list[Path] = field(default_factory=list)
    axial: list[Dataset] = field(default_factory=list)
    coronal: list[Dataset] = field(default_factory=list)
    cr: list[Dataset] = field(default_factory=list)
    volume: list[Dataset] = field(default_factory=list)
    overlay: list[Dataset] = field(default_factory=list)
    enhanced: Dataset | None = None
    gsps: Dataset | None = None
    suffix: str = ""


def ct_pixels(k: int) -> np.ndarray:
    """HU = -1000 … +1000 ramp along columns, +k per slice; stored = HU + 1024."""
    hu = np.tile(np.linspace(-1000, 1000, N).round(), (N, 1)) + k
    return (hu + 1024).astype(np.int16)


def volume_pixels(k: int) -> np.ndarray:
    """Stored values of MPR volume slice k: air (HU -1000) with the bright box (HU 2000)."""
    arr = np.full((VOLUME_N, VOLUME_N), -1000 + 1024, np.int16)
    if BOX_K[0] <= k <= BOX_K[1]:
        arr[BOX_J[0] : BOX_J[1] + 1, BOX_I[0] : BOX_I[1] + 1] = 2000 + 1024
    return arr


OVERLAY_N, OVERLAY_SLICES = 32, 3


def overlay_line(k: int) -> tuple[int, tuple[int, int], tuple[int, int]]:
    """Where slice k's overlay draws: (image row of its line, its columns (first, last)
    inclusive, the (row, col) of the orientation dot below the line's left end)."""
    row = 10 + 3 * k
    return row, (4, 27), (row + 3, 4)


def add_overlay_plane(ds: Dataset, k: int) -> None:
    """Overlay Plane (PS3.3 C.9.2) in group 6000: 4 × 24 bits placed at (row+1, 5)."""
    from pydicom.pixels.utils import pack_bits

    row, (c0, c1), (dr, dc) = overlay_line(k)
    bits = np.zeros((4, c1 - c0 + 1), np.uint8)
    bits[0, :] = 1
    bits[dr - row, dc - c0] = 1
    ds.add_new(0x60000010, "US", bits.shape[0])
    ds.add_new(0x60000011, "US", bits.shape[1])
    ds.add_new(0x60000022, "LO", "GUI test overlay")
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [row + 1, c0 + 1])  # 1-based (row, column)
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    packed = pack_bits(bits.ravel())
    ds.add_new(0x60003000, "OW", packed + b"\0" * (len(packed) % 2))


ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"
ENH_ROWS, ENH_COLS, ENH_SPACING = 32, 40, (0.6, 0.8)  # Pixel Spacing: row, column (mm)
ENH_ORIGIN = (-16.0, -10.0)  # x, y of pixel (0, 0) in every frame
ENH_Z = [12.0, 8.0, 10.0, 14.0]  # per-frame z, out of order on purpose


def enhanced_hu(frame: int) -> int:
    """Each frame one HU value, so the pixels tell which file frame is on screen."""
    return -150 + 100 * frame


def _enhanced_ct(study: str, frame_uid: str, name: str, pid: str) -> Dataset:
    """Enhanced CT (PS3.3 A.38): geometry, rescale and window only in the functional groups."""
    from pydicom.sequence import Sequence

    def item(**kw: object) -> Dataset:
        d = Dataset()
        for k, v in kw.items():
            setattr(d, k, v)
        return d

    ds = make_instance(ENHANCED_CT, patient_id=pid, patient_name=name, study_uid=study,
                       series_uid=generate_uid(), frame_of_reference_uid=frame_uid,
                       series_number=5, instance_number=1, rows=ENH_ROWS,
                       cols=ENH_COLS)  # fmt: skip
    ds.NumberOfFrames = len(ENH_Z)
    px = np.stack([np.full((ENH_ROWS, ENH_COLS), enhanced_hu(f) + 1024, np.int16)
                   for f in range(len(ENH_Z))])  # fmt: skip
    set_pixels(ds, px, bits_allocated=16, bits_stored=16, signed=True)
    for kw in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing",
               "SliceThickness", "RescaleIntercept", "RescaleSlope", "WindowCenter",
               "WindowWidth", "SliceLocation"):  # fmt: skip
        if kw in ds:
            del ds[kw]
    ds.SharedFunctionalGroupsSequence = Sequence([item(
        PixelMeasuresSequence=Sequence([item(PixelSpacing=list(ENH_SPACING), SliceThickness=2.0)]),
        PlaneOrientationSequence=Sequence([item(ImageOrientationPatient=[1, 0, 0, 0, 1, 0])]),
        PixelValueTransformationSequence=Sequence([item(RescaleSlope=1, RescaleIntercept=-1024,
                                                        RescaleType="HU")]),
        FrameVOILUTSequence=Sequence([item(WindowCenter=40, WindowWidth=400)]),
    )])  # fmt: skip
    ds.PerFrameFunctionalGroupsSequence = Sequence([
        item(PlanePositionSequence=Sequence([item(
            ImagePositionPatient=[ENH_ORIGIN[0], ENH_ORIGIN[1], z])]))
        for z in ENH_Z
    ])  # fmt: skip
    ds.SeriesDescription = "Enhanced CT"
    ds.StudyDescription = "GUI test CT"
    ds.file_meta = file_meta_for(ds)
    return ds


def _ct(study: str, series: str, frame: str, k: int, iop: list[float], ipp: list[float],
        desc: str, number: int, name: str, pid: str,
        pixels: np.ndarray | None = None) -> Dataset:  # fmt: skip
    px = ct_pixels(k) if pixels is None else pixels
    ds = make_instance(CT, patient_id=pid, patient_name=name, study_uid=study,
                       series_uid=series, frame_of_reference_uid=frame, series_number=number,
                       instance_number=k + 1, rows=px.shape[0], cols=px.shape[1])  # fmt: skip
    set_pixels(ds, px, bits_allocated=16, bits_stored=16, signed=True)
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
    # MPR volume: 21 axial slices z = 30…50 mm, 48×48 pixels of 0.5 mm from (0, 0); air with
    # a bone-bright box at x 7…10, y 14…17, z 38…42 mm (voxels i 14–20, j 28–34, k 8–12).
    vol_uid, vol_frame = generate_uid(), generate_uid()
    for k in range(VOLUME_SLICES):
        sc.volume.append(_ct(study, vol_uid, vol_frame, k, [1, 0, 0, 0, 1, 0],
                             [0.0, 0.0, VOLUME_Z0 + k], "Volume", 3, anna, f"GA{suffix}",
                             pixels=volume_pixels(k)))  # fmt: skip
    ov_uid, ov_frame = generate_uid(), generate_uid()
    for k in range(OVERLAY_SLICES):
        px = np.full((OVERLAY_N, OVERLAY_N), 1024, np.int16)  # HU 0 everywhere
        ds = _ct(study, ov_uid, ov_frame, k, [1, 0, 0, 0, 1, 0], [0.0, 0.0, 100.0 + k],
                 "Overlay", 4, anna, f"GA{suffix}", pixels=px)  # fmt: skip
        add_overlay_plane(ds, k)
        sc.overlay.append(ds)
    # Enhanced CT in the axial series' Frame of Reference: the coronal planes cut its frames.
    sc.enhanced = _enhanced_ct(study, frame, anna, f"GA{suffix}")
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
    for i, ds in enumerate(
        [*sc.axial, *sc.coronal, *sc.volume, *sc.overlay, sc.enhanced, *sc.cr, sc.gsps]
    ):
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
