"""STOW-RS uploads are audited like C-STORE receipt (probe 34): 110104 DICOM Instances
Transferred, action C, the uploading user and address, patient and study."""

from __future__ import annotations

from pathlib import Path

from tests.integration.test_accounts_support import ct_bytes, make_app


def _stow(app, headers, *parts: bytes):  # type: ignore[no-untyped-def]
    boundary = "lucentboundary"
    body = (
        b"".join(
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p + b"\r\n"
            for p in parts
        )
        + f"--{boundary}--\r\n".encode()
    )
    ctype = f'multipart/related; type="application/dicom"; boundary={boundary}'
    return app.http.post(
        "/dicom-web/studies", content=body, headers={**headers, "Content-Type": ctype}
    )


def test_a_stow_upload_is_audited_as_instances_transferred(tmp_path: Path) -> None:
    with make_app(tmp_path) as app:
        app.add_user("kim", "radiologist", {"DEFAULT": ["read", "import"]})
        kim = app.token("kim")
        one = ct_bytes(tmp_path, study_uid="1.2.826.34.4.1", patient_id="STOW34")
        two = ct_bytes(tmp_path, study_uid="1.2.826.34.4.1", patient_id="STOW34")
        answer = _stow(app, kim, one, two)
        assert answer.status_code == 200, answer.text
        events = app.admin_client().audit(event_id="110104", object_id="1.2.826.34.4.1")
        assert len(events) == 1, events
        [event] = events
        assert event.action == "C" and event.outcome == 0
        assert event.user == "kim" and event.address
        assert {"type": "patient", "id": "STOW34"} in event.objects
        assert {"type": "study", "id": "1.2.826.34.4.1"} in event.objects
        assert "2 instance(s)" in event.detail
