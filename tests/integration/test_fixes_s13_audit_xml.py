"""The DICOM audit XML export meets PS3.15 A.5.3 (probe 34): the Patient participant of
110103-110106, Source/Destination role IDs for 110104 and 110112, and the Query message's
SOP Class participant with its base64 query and transfer syntax. Checked with xml.etree
(lxml, which the tester's RELAX NG check uses, is not in the project's environment)."""

from __future__ import annotations

import base64
from pathlib import Path
from xml.etree import ElementTree as ET

from tests.integration.test_accounts_support import ct_bytes, make_app
from tests.integration.test_fixes_s13_audit_stow import _stow

STUDY = "1.2.826.34.5.1"


def _by_event(root: ET.Element) -> dict[str, list[ET.Element]]:
    out: dict[str, list[ET.Element]] = {}
    for msg in root.findall("AuditMessage"):
        event = msg.find("EventIdentification/EventID")
        assert event is not None
        out.setdefault(event.get("csd-code", ""), []).append(msg)
    return out


def _schema_order(msg: ET.Element) -> None:
    """A.5.1: EventIdentification, ActiveParticipant+, AuditSourceIdentification, objects."""
    tags = [child.tag for child in msg]
    assert tags[0] == "EventIdentification"
    n = tags.count("ActiveParticipant")
    assert n >= 1 and tags[1 : 1 + n] == ["ActiveParticipant"] * n
    assert tags[1 + n] == "AuditSourceIdentification"
    assert set(tags[2 + n :]) <= {"ParticipantObjectIdentification"}
    for po in msg.findall("ParticipantObjectIdentification"):
        kids = [c.tag for c in po]
        assert kids[0] == "ParticipantObjectIDTypeCode", kids
        order = ["ParticipantObjectIDTypeCode", "ParticipantObjectQuery", "ParticipantObjectDetail"]
        assert kids == sorted(kids, key=order.index), kids


def _roles(msg: ET.Element) -> set[str]:
    return {r.get("csd-code", "") for r in msg.iter("RoleIDCode")}


def _has_patient(msg: ET.Element, patient_id: str | None = None) -> bool:
    return any(
        po.get("ParticipantObjectTypeCode") == "1"
        and po.get("ParticipantObjectTypeCodeRole") == "1"
        and (patient_id is None or po.get("ParticipantObjectID") == patient_id)
        for po in msg.findall("ParticipantObjectIdentification")
    )


def test_the_export_has_what_ps3_15_a_5_3_requires(tmp_path: Path) -> None:
    with make_app(tmp_path) as app:
        admin = app.admin()
        data = ct_bytes(tmp_path, study_uid=STUDY, patient_id="XML34")
        assert _stow(app, admin, data).status_code == 200  # 110104 C
        assert app.http.get("/api/v1/studies", headers=admin).status_code == 200  # 110112
        listing = app.http.get(f"/api/v1/studies/{STUDY}/series", headers=admin)
        assert listing.status_code == 200  # 110112 within one study
        meta = app.http.get(f"/dicom-web/studies/{STUDY}/metadata", headers=admin)
        assert meta.status_code == 200  # 110103 view
        # the view record names the study only: the export finds its patient in the index
        viewed = _by_event(ET.fromstring(app.admin_client().audit_export()))["110103"]
        assert any(_has_patient(m, "XML34") for m in viewed)
        assert app.http.delete(f"/api/v1/studies/{STUDY}", headers=admin).status_code in (
            200,
            204,
        )  # 110105
        root = ET.fromstring(app.admin_client().audit_export())
        events = _by_event(root)
        for msgs in events.values():
            for msg in msgs:
                _schema_order(msg)
        for event_id in ("110103", "110104", "110105"):
            assert events.get(event_id), f"no {event_id} message"
            for msg in events[event_id]:
                assert _has_patient(msg), (event_id, ET.tostring(msg))
        assert any(_has_patient(m, "XML34") for m in events["110104"])
        assert any(_has_patient(m, "XML34") for m in events["110105"])
        for msg in events["110104"] + events["110112"]:
            assert _roles(msg) == {"110153", "110152"}, ET.tostring(msg)
        assert len(events["110112"]) >= 2
        for msg in events["110112"]:
            [po] = [
                p
                for p in msg.findall("ParticipantObjectIdentification")
                if p.find("ParticipantObjectQuery") is not None
            ]
            code = po.find("ParticipantObjectIDTypeCode")
            assert code is not None
            assert (code.get("csd-code"), code.get("codeSystemName")) == ("110181", "DCM")
            assert code.get("originalText") == "SOP Class UID"
            assert po.get("ParticipantObjectID") == "1.2.840.10008.5.1.4.1.2.2.1"
            query = po.find("ParticipantObjectQuery")
            assert query is not None and query.text is not None
            base64.b64decode(query.text, validate=True)
            detail = po.find("ParticipantObjectDetail")
            assert detail is not None and detail.get("type") == "TransferSyntax"
            assert base64.b64decode(detail.get("value", ""), validate=True).startswith(
                b"1.2.840.10008.1.2"
            )
