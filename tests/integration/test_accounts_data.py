"""Quotas (A701 on store, 507 on STOW, nothing half-written), retention per pool, deletion
and per-user hidden studies/series (issue 4; FAQ storage space, automatic deletion, hidden
data)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lucent.api.client import ApiError
from server.accounts import clock
from tests.integration.test_accounts_support import ct_bytes, make_app

A701 = 0xA701


def _image(tmp_path: Path) -> bytes:
    """A 512 x 640 CT (~0.66 MB): two exceed a 1 MB quota, the smallest there is (whole MB)."""
    return ct_bytes(tmp_path, rows=512, cols=640)


def _blobs(app) -> int:  # type: ignore[no-untyped-def]
    return len(list(app.ctx.storage.keys()))


def test_pool_quota_refuses_with_a701_and_writes_nothing(tmp_path: Path) -> None:
    with make_app(tmp_path) as app:
        one = _image(tmp_path)
        assert app.store(one) == 0
        admin = app.admin_client()
        [quota] = admin.set_quota("pool", "DEFAULT", 1)
        assert quota.used_bytes == len(one) and quota.limit_bytes == 2**20
        assert admin.quotas() == [quota]
        blobs = _blobs(app)
        result = app.ctx.store(_image(tmp_path), pool="DEFAULT", source="TEST")
        assert result.status == A701 and "quota" in result.reason
        assert _blobs(app) == blobs
        with app.ctx.Session() as db:
            from sqlalchemy import func, select

            from server.index.models import Instance

            assert db.scalar(select(func.count(Instance.id))) == 1
        assert admin.set_quota("pool", "DEFAULT", None) == []
        assert app.store(ct_bytes(tmp_path)) == 0


def _stow(app, headers, data: bytes):  # type: ignore[no-untyped-def]
    boundary = "lucentboundary"
    body = (
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    ctype = f'multipart/related; type="application/dicom"; boundary={boundary}'
    return app.http.post(
        "/dicom-web/studies", content=body, headers={**headers, "Content-Type": ctype}
    )


def test_user_and_group_quota_on_stow_gives_507(tmp_path: Path) -> None:
    with make_app(tmp_path) as app:
        admin = app.admin_client()
        app.add_user("kim", "radiologist", {"DEFAULT": ["read", "import"]})
        h = app.token("kim")
        one = _image(tmp_path)
        assert _stow(app, h, one).status_code == 200
        limit_mb = 1
        admin.set_quota("user", "Kim", limit_mb)
        [mine] = app.client("kim").my_quota()
        assert mine.subject == "kim" and mine.used_bytes > 0
        blobs = _blobs(app)
        r = _stow(app, h, _image(tmp_path))
        assert r.status_code == 507
        assert _blobs(app) == blobs
        # admin stores are not the user's: only the user's own data counts
        assert app.store(ct_bytes(tmp_path)) == 0
        # group quota
        admin.set_quota("user", "kim", None)
        assert admin.create_group("radiology").members == []
        assert admin.set_group_members("radiology", ["Kim"]).members == ["kim"]
        admin.set_quota("group", "radiology", limit_mb)
        assert [q.kind for q in app.client("kim").my_quota()] == ["group"]
        assert _stow(app, h, _image(tmp_path)).status_code == 507
        admin.delete_group("radiology")  # its quota goes with it
        assert admin.groups() == [] and admin.quotas() == []
        assert _stow(app, h, ct_bytes(tmp_path)).status_code == 200


def test_retention_deletes_old_studies_with_their_blobs_and_audits(tmp_path: Path) -> None:
    pools = [
        {"name": "SHORT", "ae_title": "SHORT", "port": 0, "retention_days": 7},
        {"name": "KEEP", "ae_title": "KEEP", "port": 0},
    ]
    with make_app(tmp_path, pools=pools) as app:
        assert app.store(ct_bytes(tmp_path, study_uid="1.2.826.7.1"), pool="SHORT") == 0
        assert app.store(ct_bytes(tmp_path, study_uid="1.2.826.7.2"), pool="KEEP") == 0
        assert app.admin_client().run_retention().deleted_studies == []
        clock.advance(8 * 86400)
        admin = app.admin()
        assert app.admin_client().run_retention().deleted_studies == ["1.2.826.7.1"]
        uids = [
            s["study_uid"] for s in app.http.get("/api/v1/studies", headers=admin).json()["items"]
        ]
        assert uids == ["1.2.826.7.2"]
        with app.ctx.Session() as db:
            from sqlalchemy import select

            from server.index.models import Instance

            referenced = {
                k for i in db.scalars(select(Instance)) for k in (i.meta_key, i.pixel_key) if k
            }
        assert set(app.ctx.storage.keys()) == referenced  # no blob left behind
        events = app.admin_client().audit(event_id="110105")
        assert events[-1].user == "retention"
        assert {"type": "study", "id": "1.2.826.7.1"} in events[-1].objects


def test_delete_needs_the_delete_right_and_is_audited(tmp_path: Path) -> None:
    with make_app(tmp_path) as app:
        app.store(ct_bytes(tmp_path, study_uid="1.2.826.8.1"))
        app.add_user("lea", "radiologist", {"DEFAULT": ["read", "delete"]})
        with pytest.raises(ApiError) as refused:  # radiologists may not delete, whatever the grant
            app.client("lea").delete_study("1.2.826.8.1")
        assert refused.value.status == 403
        admin = app.admin_client()
        admin.delete_study("1.2.826.8.1")
        assert list(app.ctx.storage.keys()) == []
        with pytest.raises(ApiError) as gone:
            admin.delete_study("1.2.826.8.1")
        assert gone.value.status == 404
        [event] = admin.audit(event_id="110105", object_id="1.2.826.8.1")
        assert event.user == "admin" and event.action == "D"


def test_hidden_studies_and_series_per_user(tmp_path: Path) -> None:
    with make_app(tmp_path) as app:
        app.store(ct_bytes(tmp_path, study_uid="1.2.826.9.1", series_uid="1.2.826.9.1.1"))
        app.store(ct_bytes(tmp_path, study_uid="1.2.826.9.1", series_uid="1.2.826.9.1.2"))
        app.store(ct_bytes(tmp_path, study_uid="1.2.826.9.2"))
        app.add_user("max", "radiologist", {"*": ["read"]})
        app.add_user("ned", "radiologist", {"*": ["read"]})
        h, other = app.token("max"), app.token("ned")

        def studies(headers, **params):  # type: ignore[no-untyped-def]
            items = app.http.get("/api/v1/studies", headers=headers, params=params).json()
            return sorted(i["study_uid"] for i in items["items"])

        def series(headers, **params):  # type: ignore[no-untyped-def]
            url = "/api/v1/studies/1.2.826.9.1/series"
            return sorted(
                s["series_uid"] for s in app.http.get(url, headers=headers, params=params).json()
            )

        app.http.post("/api/v1/hidden", headers=h, json={"level": "study", "uid": "1.2.826.9.2"})
        app.http.post("/api/v1/hidden", headers=h, json={"level": "series", "uid": "1.2.826.9.1.2"})
        assert studies(h) == ["1.2.826.9.1"]
        assert series(h) == ["1.2.826.9.1.1"]
        assert studies(other) == ["1.2.826.9.1", "1.2.826.9.2"]  # only for that user
        assert studies(h, show_hidden="true") == ["1.2.826.9.1", "1.2.826.9.2"]
        assert series(h, show_hidden="true") == ["1.2.826.9.1.1", "1.2.826.9.1.2"]
        paths = app.http.get("/openapi.json").json()["paths"]  # the typed client sends it
        for route in ("/api/v1/studies", "/api/v1/studies/{study_uid}/series"):
            names = {p["name"] for p in paths[route]["get"]["parameters"]}
            assert "show_hidden" in names, route
        listed = app.http.get("/api/v1/hidden", headers=h).json()
        assert {(x["level"], x["uid"]) for x in listed} == {
            ("study", "1.2.826.9.2"),
            ("series", "1.2.826.9.1.2"),
        }
        app.http.delete("/api/v1/hidden", headers=h, params={"uid": "1.2.826.9.2"})
        assert studies(h) == ["1.2.826.9.1", "1.2.826.9.2"]
        app.http.delete("/api/v1/hidden", headers=h)  # restore all
        assert series(h) == ["1.2.826.9.1.1", "1.2.826.9.1.2"]
