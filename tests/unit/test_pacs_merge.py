"""Merging C-FIND answers of several PACS (issue 3): one row per study, and what each node
answered kept beside it: a study split over two PACS (4 instances on one, 1 on the other)
showed whichever node answered first (outside probe)."""

from __future__ import annotations

from lucent.net.scu import FindResult
from server.pacs.service import NodeView, merge


def _node(pk: int, name: str) -> NodeView:
    return NodeView(pk, name, name.upper(), "127.0.0.1", 104, True, True, False, False, 5.0)


def test_merged_rows_keep_each_nodes_answer_in_node_order() -> None:
    study = {"StudyInstanceUID": "1.2.3", "PatientID": "P", "PatientName": "A^B"}
    small = FindResult(rows=[study | {"NumberOfStudyRelatedInstances": "1"}])
    full = FindResult(rows=[study | {"NumberOfStudyRelatedInstances": "4"}])
    out = merge("STUDY", [(_node(2, "ortB"), small), (_node(1, "ortA"), full)])
    [patient] = out["patients"]
    [row] = patient["studies"]
    assert row["nodes"] == ["ortB", "ortA"] and row["node_ids"] == [2, 1]
    counts = [a["NumberOfStudyRelatedInstances"] for a in row["node_attrs"]]
    assert counts == ["1", "4"]
