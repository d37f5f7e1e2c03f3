"""The status bar's summary of an opened series (workstation.model.series.SeriesData)."""

from __future__ import annotations

from pydicom.dataset import Dataset

from lucent.api import schemas
from workstation.model.series import SeriesData


def _data(kind: str, documents: list[Dataset], slices: int = 0) -> SeriesData:
    series = schemas.SeriesOut.model_construct(series_uid="1.2.3", description="S")
    return SeriesData(series, None, [object()] * slices, kind=kind, documents=documents)  # type: ignore[list-item]


def _pdf() -> Dataset:
    ds = Dataset()
    ds.EncapsulatedDocument = b"%PDF-1.4"
    return ds


def test_images_are_counted() -> None:
    assert _data("image", [], slices=12).summary() == "12 images"
    assert _data("image", [], slices=1).summary() == "1 image"


def test_documents_are_named_not_counted_as_images() -> None:
    assert _data("pdf", [_pdf()]).summary(pages=3) == "1 PDF document, 3 pages"
    assert _data("sr", [Dataset(), Dataset()]).summary() == "2 reports"
    assert _data("sr", [_pdf(), Dataset()]).summary(pages=1) == "1 PDF document, 1 page, 1 report"
    assert _data("none", []).summary() == "nothing that can be shown"
