"""Browser order (probe 32): newest study first by default; Series number and Images sort
as numbers (1, 2, 10), not as text (1, 10, 2)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from pydicom.uid import generate_uid
from PySide6.QtCore import Qt

from tests.data.samples import make_instance, write
from tests.gui.helpers import save
from tests.integration.dicom_io import storescu

SC = "1.2.840.10008.5.1.4.1.1.7"


def _files(directory: Path, suffix: str) -> list[Path]:
    out = []
    # patient A: an old study; patient B: the newest study, series 1/2/10 with 1/12/3 images
    old = generate_uid()
    ds = make_instance(SC, patient_id=f"SA{suffix}", patient_name=f"Sorta{suffix}^A",
                       study_uid=old, series_uid=generate_uid())  # fmt: skip
    ds.StudyDate = "20200105"
    out.append(write(ds, directory / "a.dcm"))
    mid, new = generate_uid(), generate_uid()
    for study, date in ((mid, "20220301"), (new, "20240601")):
        ds = make_instance(SC, patient_id=f"SB{suffix}", patient_name=f"Sortb{suffix}^B",
                           study_uid=study, series_uid=generate_uid())  # fmt: skip
        ds.StudyDate = date
        ds.StudyDescription = date
        out.append(write(ds, directory / f"b{date}.dcm"))
    c_study = generate_uid()
    for number, count in ((10, 3), (2, 12), (1, 1)):
        series = generate_uid()
        for k in range(count):
            ds = make_instance(SC, patient_id=f"SC{suffix}", patient_name=f"Sortc{suffix}^C",
                               study_uid=c_study, series_uid=series, series_number=number,
                               instance_number=k + 1)  # fmt: skip
            ds.StudyDate = "20230101"
            ds.SeriesDescription = f"series {number}"
            out.append(write(ds, directory / f"c{number}_{k}.dcm"))
    return out


def test_newest_first_and_numeric_columns(
    qtbot: Any, api: Any, server: Any, tmp_path: Path, artifacts: Path
) -> None:
    from workstation.qt.browser import BrowserPanel

    suffix = uuid.uuid4().hex[:6].upper()
    done = storescu("127.0.0.1", server.port, server.ae_title, _files(tmp_path, suffix))
    assert done.returncode == 0, done.stderr
    panel = BrowserPanel(api)
    qtbot.addWidget(panel)
    panel.resize(700, 700)
    panel.show()
    qtbot.waitExposed(panel)
    panel.search.setText(f"Sort*{suffix}*")
    panel.refresh()
    tree = panel.tree
    tops = [tree.topLevelItem(i).text(0) for i in range(tree.topLevelItemCount())]
    # newest study first: B (2024) before C (2023) before A (2020)
    assert tops == [f"Sortb{suffix}, B", f"Sortc{suffix}, C", f"Sorta{suffix}, A"], tops
    b = tree.topLevelItem(0)
    assert [b.child(j).text(0) for j in range(b.childCount())] == ["20240601", "20220301"]
    # series of C, in series-number order: 1, 2, 10 (text order was 1, 10, 2)
    c = tree.topLevelItem(1)
    study = c.child(0)
    study.setExpanded(True)
    qtbot.waitUntil(lambda: study.childCount() == 3, timeout=10000)
    names = lambda: [study.child(j).text(0) for j in range(study.childCount())]  # noqa: E731
    assert names() == ["1 series 1", "2 series 2", "10 series 10"], names()
    tree.sortByColumn(0, Qt.SortOrder.AscendingOrder)
    assert names() == ["1 series 1", "2 series 2", "10 series 10"], names()
    tree.sortByColumn(4, Qt.SortOrder.AscendingOrder)  # Images: 1, 3, 12
    assert [study.child(j).text(4) for j in range(3)] == ["1", "3", "12"]
    tree.sortByColumn(4, Qt.SortOrder.DescendingOrder)
    assert [study.child(j).text(4) for j in range(3)] == ["12", "3", "1"]
    save(panel, artifacts, "s13_browser_sort.png")
