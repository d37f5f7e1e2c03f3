"""Clinic IT sees every job to run the system, but not which studies and instances they
name (probe 21): /jobs, /jobs/{id}, /jobs/{id}/instances and /pacs/commitments showed the
study and SOP Instance UIDs of every pool, while /shares blanked them for clinic IT.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from server.index.pacs_models import CommitmentItem, CommitmentRequest, Job, SentInstance
from tests.integration.test_accounts_support import make_app

STUDY = "1.2.826.0.1.3680043.8.498.21.5"
SOP = "1.2.826.0.1.3680043.8.498.21.5.1.1"


def test_clinic_it_sees_jobs_without_their_uids(tmp_path: Path) -> None:
    with make_app(tmp_path) as app:
        app.add_user("it1", "clinic-it")
        app.add_user("rad", "radiologist", {"DEFAULT": ["read", "send"]})
        at = datetime(2026, 1, 1)
        with app.ctx.WriteSession() as db, db.begin():
            job = Job(
                kind="send",
                state="done",
                created_by="rad",
                params={"study_uid": STUDY, "sop_instance_uids": [SOP], "instances": 1},
                message=f"1 sent; study {STUDY} done",
                created_at=at,
            )
            db.add(job)
            db.flush()
            job_id = job.id
            db.add(SentInstance(job_pk=job_id, sop_instance_uid=SOP, sop_class_uid="1.2", at=at))
            request = CommitmentRequest(transaction_uid="2.25.21", job_pk=job_id, requested_at=at)
            request.items.append(
                CommitmentItem(sop_instance_uid=SOP, sop_class_uid="1.2", updated_at=at)
            )
            db.add(request)
        answers = {}
        for who, headers in (("it", app.token("it1")), ("rad", app.token("rad"))):
            answers[who] = [
                app.http.get(path, headers=headers)
                for path in (
                    "/api/v1/jobs",
                    f"/api/v1/jobs/{job_id}",
                    f"/api/v1/jobs/{job_id}/instances",
                    f"/api/v1/pacs/commitments?job_id={job_id}",
                )
            ]
        it = answers["it"]
        assert [r.status_code for r in it] == [200] * 4
        for r in it:
            assert STUDY not in r.text and SOP not in r.text, r.text
        [listed] = it[0].json()
        assert listed["id"] == job_id and listed["params"]["study_uid"] == ""
        assert listed["params"]["instances"] == 1 and listed["message"].startswith("1 sent")
        assert it[2].json()[0]["sop_instance_uid"] == ""
        assert it[3].json()[0]["transaction_uid"] == "2.25.21"
        # the job's creator and the administrator still see what it named
        for r in answers["rad"]:
            assert SOP in r.text or STUDY in r.text, r.text
        admin = app.admin()
        r = app.http.get(f"/api/v1/pacs/commitments?job_id={job_id}", headers=admin)
        assert r.json()[0]["sop_instance_uid"] == SOP
        r = app.http.get(f"/api/v1/jobs/{job_id}", headers=admin)
        assert r.json()["params"]["study_uid"] == STUDY
