"""Which storage classes need pixel data (Conformance 4.1.3.2: an image without the Image
Pixel module does not match its SOP class, PS3.4 B.2.3 A900)."""

from __future__ import annotations

from highdicom._standard_utils import get_iod_module_map, get_sop_class_iod_map

from lucent.dicom import sop_classes

PIXEL_MODULES = (
    "image-pixel",
    "floating-point-image-pixel",
    "double-floating-point-image-pixel",
)


def _iod_needs_pixels(uid: str) -> bool | None:
    """From highdicom's copy of PS3.3 A: a pixel module is mandatory, or the IOD offers the
    integer and float ones as alternatives (all conditional: Parametric Map). None when
    highdicom does not know the class."""
    iod = get_sop_class_iod_map().get(uid)
    if iod is None:
        return None
    usage = {m["key"]: m["usage"] for m in get_iod_module_map()[iod]}
    pixel = [usage[key] for key in PIXEL_MODULES if key in usage]
    return "M" in pixel or len(pixel) == len(PIXEL_MODULES)


def test_images_beyond_table1_are_the_standards_image_iods() -> None:
    """Breast Projection X-Ray without Pixel Data was stored with 0000: only Table 1 said
    which classes need pixels (probe 28). The list must follow the standard as pynetdicom
    and highdicom learn new classes."""
    beyond = [uid for uid in sop_classes.ACCEPTED_STORAGE if uid not in sop_classes.BY_UID]
    images = {uid for uid in beyond if _iod_needs_pixels(uid)}
    assert images == set(sop_classes.IMAGES_BEYOND_TABLE_1)
    assert "1.2.840.10008.5.1.4.1.1.13.1.4" in images  # Breast Projection, For Presentation


def test_table1_pixel_flags_agree_with_the_standard() -> None:
    """RT Dose's pixel module is conditional (a dose object may carry only DVHs)."""
    for sop in sop_classes.TABLE_1:
        assert _iod_needs_pixels(sop.uid) is sop.has_pixels, sop.name
        assert sop_classes.requires_pixels(sop.uid) is sop.has_pixels
