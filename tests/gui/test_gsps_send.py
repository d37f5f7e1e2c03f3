"""GSPS to PACS (issue 5, Conformance 8.1.4): a saved presentation state also goes to the
configured store node through the server's send job; DCMTK storescp is the PACS."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydicom
from PySide6.QtCore import QPoint, Qt

from lucent.api import schemas
from tests.gui import scenes
from tests.gui.helpers import open_series
from tests.support.peers import StoreScp

GSPS_CLASS = "1.2.840.10008.5.1.4.1.1.11.1"


def test_saved_gsps_is_sent_to_the_configured_pacs(
    qtbot, window: Any, api: Any, scene: scenes.Scene, tmp_path: Path
) -> None:  # noqa: ANN001
    with StoreScp(tmp_path / "pacs", aet="GSPSPACS", workdir=tmp_path / "peer") as pacs:
        peer = schemas.RemoteNodeIn(
            name="gsps-pacs",
            ae_title="GSPSPACS",
            host="127.0.0.1",
            port=pacs.port,
            query_retrieve=False,
            store_target=True,
        )
        node = api.add_node(peer)
        try:
            win = window
            win.gsps_send_node = "gsps-pacs"  # the setting "[gsps] send_node"
            vp = open_series(qtbot, win, api, scene, "Axial")
            vp.set_index(1)
            widget = win.viewer.widgets[0]
            win.viewer.set_tool("distance")
            tr = vp.transform(widget.width(), widget.height())
            for x, y in ((12, 12), (40, 30)):
                u, v = tr.to_widget(x, y)
                qtbot.mouseClick(widget, Qt.MouseButton.LeftButton, pos=QPoint(round(u), round(v)))
            sop = win.save_gsps()
            assert sop and len(win.send_jobs) == 1
            job = win.send_jobs[0]
            assert job.kind == "send" and job.node_id == node.id
            done = api.wait_job(job.id, timeout=60)
            assert done.state == "done", done
            assert [i.sop_instance_uid for i in api.job_instances(job.id)] == [sop]
            received = [pydicom.dcmread(p) for p in pacs.files()]
            assert [(d.SOPClassUID, d.SOPInstanceUID) for d in received] == [(GSPS_CLASS, sop)]
            qtbot.waitUntil(lambda: "sent to gsps-pacs" in win.status_label.text(), timeout=10000)
        finally:
            api.delete_node(node.id)


def test_no_send_without_the_setting(qtbot, window: Any, api: Any, scene: scenes.Scene) -> None:  # noqa: ANN001
    win = window
    vp = open_series(qtbot, win, api, scene, "Axial")
    widget = win.viewer.widgets[0]
    win.viewer.set_tool("distance")
    tr = vp.transform(widget.width(), widget.height())
    for x, y in ((5, 5), (20, 5)):
        u, v = tr.to_widget(x, y)
        qtbot.mouseClick(widget, Qt.MouseButton.LeftButton, pos=QPoint(round(u), round(v)))
    before = {j.id for j in api.jobs(kind="send")}
    assert win.save_gsps()
    assert win.send_jobs == [] and {j.id for j in api.jobs(kind="send")} == before
