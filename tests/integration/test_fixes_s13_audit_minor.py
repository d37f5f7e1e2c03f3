"""Quota bodies, hiding and manual retention runs (probe 34): ``limit_mb: true`` and 1e-9
were stored (as 1 MB and as a 0-byte quota); an empty or unknown UID was hidden; a manual
POST /retention/run left no record of who started it."""

from __future__ import annotations

from pathlib import Path

from tests.integration.test_accounts_support import ct_bytes, make_app


def test_quota_bodies_that_are_not_a_size_are_refused(tmp_path: Path) -> None:
    with make_app(tmp_path) as app:
        admin = app.admin()
        for limit in (True, False, 1e-9):
            body = {"kind": "pool", "subject": "DEFAULT", "limit_mb": limit}
            r = app.http.put("/api/v1/quotas", headers=admin, json=body)
            assert r.status_code == 422 and "limit_mb" in r.json()["detail"], (limit, r.text)
        assert app.http.get("/api/v1/quotas", headers=admin).json() == []
        body = {"kind": "pool", "subject": "DEFAULT", "limit_mb": 2}
        [quota] = app.http.put("/api/v1/quotas", headers=admin, json=body).json()
        assert quota["limit_bytes"] == 2 * 2**20


def test_hiding_needs_an_existing_uid(tmp_path: Path) -> None:
    with make_app(tmp_path) as app:
        admin = app.admin()
        assert app.store(ct_bytes(tmp_path, study_uid="1.2.826.34.6.1")) == 0
        empty = app.http.post("/api/v1/hidden", headers=admin, json={"level": "study", "uid": ""})
        assert empty.status_code == 422
        unknown = {"level": "study", "uid": "1.2.826.34.6.999"}
        assert app.http.post("/api/v1/hidden", headers=admin, json=unknown).status_code == 404
        series = {"level": "series", "uid": "1.2.826.34.6.1"}  # a study UID is no series
        assert app.http.post("/api/v1/hidden", headers=admin, json=series).status_code == 404
        assert app.http.get("/api/v1/hidden", headers=admin).json() == []
        known = {"level": "study", "uid": "1.2.826.34.6.1"}
        assert app.http.post("/api/v1/hidden", headers=admin, json=known).status_code == 204
        assert [h["uid"] for h in app.http.get("/api/v1/hidden", headers=admin).json()] == [
            "1.2.826.34.6.1"
        ]


def test_a_manual_retention_run_is_audited_with_who_started_it(tmp_path: Path) -> None:
    with make_app(tmp_path) as app:
        client = app.admin_client()
        assert client.run_retention().deleted_studies == []
        runs = [r for r in client.audit(user="admin") if "retention sweep" in r.detail]
        assert len(runs) == 2, runs
        assert {r.event_type for r in runs} == {"110141", "110142"}
        assert all(r.address for r in runs)
