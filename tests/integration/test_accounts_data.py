"""Quotas (A701 on store, 507 on STOW, nothing half-written), retention per pool, deletion
and per-user hidden studies/series (issue 4; FAQ storage space, automatic deletion, hidden
data)."""

from __future__ import annotations

from pathlib import Path

from server.accounts import clock
from tests.integration.test_accounts_support import ct_bytes, make_app

A701 = 0xA701


def _blobs(app) -> int:  # type: ignore[no-untyped-def]
    return len(list(app.ctx.storage.keys()))


def test_pool_quota_refuses_with_a701_and_writes_nothing(tmp_path: Path) -> None:
    with make_app(tmp_path) as app:
        one = ct_bytes(tmp_path)
        assert app.store(one) == 0
        limit_mb = (len(one) * 1.5) / 2**20
        r = app.http.put(
            "/api/v1/quotas",
            headers=app.admin(),
            json={"kind": "pool", "subject": "DEFAULT", "limit_mb": limit_mb},
        )
        assert r.status_code == 200 and r.json()[0]["used_bytes"] == len(one)
        blobs = _blobs(app)
        result = app.ctx.store(ct_bytes(tmp_path), pool="DEFAULT", source="TEST")
        assert result.status == A701 and "quota" in result.reason
        assert _blobs(app) == blobs
        with app.ctx.Session() as db:
            from sqlalchemy import func, select

            from server.index.models import Instance

            assert db.scalar(select(func.count(Instance.id))) == 1
        app.http.put(
            "/api/v1/quotas",
            headers=app.admin(),
            json={"kind": "pool", "subject": "DEFAULT", "limit_mb": None},
        )
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
        admin = app.admin()
        app.add_user("kim", "radiologist", {"DEFAULT": ["read", "import"]})
        h = app.token("kim")
        one = ct_bytes(tmp_path)
        assert _stow(app, h, one).status_code == 200
        limit_mb = (len(one) * 1.5) / 2**20
        app.http.put(
            "/api/v1/quotas", headers=admin,
            json={"kind": "user", "subject": "Kim", "limit_mb": limit_mb},
        )  # fmt: skip
        mine = app.http.get("/api/v1/quota", headers=h).json()
        assert mine[0]["subject"] == "kim" and mine[0]["used_bytes"] > 0
        blobs = _blobs(app)
        r = _stow(app, h, ct_bytes(tmp_path))
        assert r.status_code == 507
        assert _blobs(app) == blobs
        # admin stores are not the user's: only the user's own data counts
        assert app.store(ct_bytes(tmp_path)) == 0
        # group quota
        app.http.put("/api/v1/quotas", headers=admin,
                     json={"kind": "user", "subject": "kim", "limit_mb": None})  # fmt: skip
        app.http.post("/api/v1/groups", headers=admin, json={"name": "radiology"})
        app.http.put("/api/v1/groups/radiology/members", headers=admin, json=["kim"])
        group_quota = {"kind": "group", "subject": "radiology", "limit_mb": limit_mb}
        app.http.put("/api/v1/quotas", headers=admin, json=group_quota)
        assert _stow(app, h, ct_bytes(tmp_path)).status_code == 507


def test_retention_deletes_old_studies_with_their_blobs_and_audits(tmp_path: Path) -> None:
    pools = [
        {"name": "SHORT", "ae_title": "SHORT", "port": 0, "retention_days": 7},
        {"name": "KEEP", "ae_title": "KEEP", "port": 0},
    ]
    with make_app(tmp_path, pools=pools) as app:
        assert app.store(ct_bytes(tmp_path, study_uid="1.2.826.7.1"), pool="SHORT") == 0
        assert app.store(ct_bytes(tmp_path, study_uid="1.2.826.7.2"), pool="KEEP") == 0
        admin = app.admin()
        assert app.http.post("/api/v1/retention/run", headers=admin).json() == {
            "deleted_studies": []
        }
        clock.advance(8 * 86400)
        admin = app.admin()
        r = app.http.post("/api/v1/retention/run", headers=admin)
        assert r.json() == {"deleted_studies": ["1.2.826.7.1"]}
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
        events = app.http.get("/api/v1/audit", headers=admin, params={"event_id": "110105"}).json()
        assert events[-1]["user"] == "retention"
        assert {"type": "study", "id": "1.2.826.7.1"} in events[-1]["objects"]


def test_delete_needs_the_delete_right_and_is_audited(tmp_path: Path) -> None:
    with make_app(tmp_path) as app:
        app.store(ct_bytes(tmp_path, study_uid="1.2.826.8.1"))
        app.add_user("lea", "radiologist", {"DEFAULT": ["read", "delete"]})
        h = app.token("lea")  # radiologists may not delete, whatever the grant
        assert app.http.delete("/api/v1/studies/1.2.826.8.1", headers=h).status_code == 403
        admin = app.admin()
        assert app.http.delete("/api/v1/studies/1.2.826.8.1", headers=admin).status_code == 204
        assert list(app.ctx.storage.keys()) == []
        assert app.http.delete("/api/v1/studies/1.2.826.8.1", headers=admin).status_code == 404


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
        listed = app.http.get("/api/v1/hidden", headers=h).json()
        assert {(x["level"], x["uid"]) for x in listed} == {
            ("study", "1.2.826.9.2"),
            ("series", "1.2.826.9.1.2"),
        }
        app.http.delete("/api/v1/hidden", headers=h, params={"uid": "1.2.826.9.2"})
        assert studies(h) == ["1.2.826.9.1", "1.2.826.9.2"]
        app.http.delete("/api/v1/hidden", headers=h)  # restore all
        assert series(h) == ["1.2.826.9.1.1", "1.2.826.9.1.2"]
