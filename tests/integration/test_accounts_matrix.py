"""Issue 4 proof: every API route against every role, asserting the allowed/forbidden matrix.

The expected answer comes from ``server.accounts.rights`` (role ceiling and pool grants);
the observed answer from the real app. "Allowed" means the rights check let the request
through (any status but 401/403 — a 404 or 422 from the handler is fine); "forbidden" means
403. A route without a policy entry fails the test, so new routes cannot skip the check.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.accounts import rights
from tests.integration.test_accounts_support import AppUnderTest, ct_bytes, make_app


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppUnderTest]:
    tmp = tmp_path_factory.mktemp("matrix")
    pools = [
        {"name": "DEFAULT", "ae_title": "LUCENT", "port": 0},
        {"name": "OTHER", "ae_title": "LUCENT_OTHER", "port": 0},  # grants elsewhere
    ]
    with make_app(tmp, pools=pools) as app:
        assert app.store(ct_bytes(tmp, study_uid="1.2.3.4.100", series_uid="1.2.3.4.100.1")) == 0
        for role in rights.ROLES:
            app.add_user(f"u-{role}", role, {"*": list(rights.POOL_RIGHTS)})
        yield app


def _routes(app: AppUnderTest) -> list[tuple[str, str]]:
    """Every (method, path) the app serves, from its OpenAPI document."""
    paths = app.app.openapi()["paths"]
    return sorted((m.upper(), p) for p, ops in paths.items() for m in ops)


def _url(app: AppUnderTest, method: str, path: str) -> str:
    """Real objects for reads (exercises the pool lookup), harmless dummies for writes."""
    with app.ctx.Session() as db:
        from sqlalchemy import select

        from server.index.models import Instance

        sop = db.scalars(select(Instance.sop_instance_uid)).first()
    real = method == "GET"
    values = {
        "study_uid": "1.2.3.4.100" if real else "9.9.9",
        "study": "1.2.3.4.100" if real else "9.9.9",
        "series_uid": "1.2.3.4.100.1",
        "series": "1.2.3.4.100.1",
        "sop_uid": sop or "9.9",
        "sop": sop or "9.9",
        "number": "1",
        "frames": "1",
        "index": "0",
        "token": "not-a-token",
        "username": "nobody",
        "name": "nogroup",
    }
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), "999999"), path)


def _expected(role: str, rule: rights.Rule) -> bool:
    if rule.kind in ("public", "user"):
        return True
    return rights.role_allows(role, rule.right)


def test_every_route_has_a_rule(app: AppUnderTest) -> None:
    assert len(_routes(app)) > 60
    missing = [f"{m} {p}" for m, p in _routes(app) if rights.rule_for(m, p) is None]
    assert missing == []


def test_unauthenticated_requests_are_refused_except_public_routes(app: AppUnderTest) -> None:
    for method, path in _routes(app):
        rule = rights.rule_for(method, path)
        assert rule is not None
        r = app.http.request(method, _url(app, method, path), json={})
        if rule.kind == "public":  # refused, if at all, by the route itself, not the login
            assert "www-authenticate" not in r.headers, (method, path, r.status_code)
        else:
            assert r.status_code == 401, (method, path, r.status_code, r.text)


@pytest.mark.parametrize("role", rights.ROLES)
def test_role_matrix(app: AppUnderTest, role: str) -> None:
    headers = app.token(f"u-{role}")
    observed: dict[str, str] = {}
    wrong: list[str] = []
    last = [("POST", "/api/v1/auth/logout")]  # ends the session: run it last
    routes = [r for r in _routes(app) if r not in last] + last
    for method, path in routes:
        rule = rights.rule_for(method, path)
        assert rule is not None
        r = app.http.request(method, _url(app, method, path), json={}, headers=headers)
        allowed = r.status_code not in (401, 403) or (
            rule.kind == "public" and "www-authenticate" not in r.headers
        )
        observed[f"{method} {path}"] = "allowed" if allowed else "forbidden"
        if (r.status_code == 401 and rule.kind != "public") or allowed != _expected(role, rule):
            wrong.append(f"{method} {path}: {r.status_code} {r.text[:120]}")
    assert wrong == [], "\n".join(wrong)
    # Sanity: the matrix is not trivial for anybody but the administrator.
    forbidden = [k for k, v in observed.items() if v == "forbidden"]
    assert (forbidden == []) == (role == "administrator")


def test_pool_grants_narrow_what_a_role_may_do(app: AppUnderTest, tmp_path: Path) -> None:
    """A radiologist without grants sees nothing; a grant on another pool shows nothing here."""
    app.add_user("rad-nogrant", "radiologist")
    h = app.token("rad-nogrant")
    assert app.http.get("/api/v1/studies", headers=h).status_code == 403
    assert app.http.get("/api/v1/studies/1.2.3.4.100/series", headers=h).status_code == 404
    app.add_user("rad-other", "radiologist", {"OTHER": ["read"]})
    h = app.token("rad-other")
    assert app.http.get("/api/v1/studies/1.2.3.4.100/series", headers=h).status_code == 404
    app.add_user("rad-default", "radiologist", {"DEFAULT": ["read"]})
    h = app.token("rad-default")
    items = app.http.get("/api/v1/studies", headers=h).json()["items"]
    assert [i["study_uid"] for i in items] == ["1.2.3.4.100"]
    # read but not share: creating a share link is refused
    r = app.http.post("/api/v1/shares", headers=h, json={"study_uid": "1.2.3.4.100"})
    assert r.status_code in (403, 404)


def test_group_grants_apply_to_members(app: AppUnderTest) -> None:
    admin = app.admin()
    app.add_user("ref-grouped", "referring-physician")
    h = app.token("ref-grouped")
    assert app.http.get("/api/v1/studies", headers=h).status_code == 403
    assert (
        app.http.post("/api/v1/groups", headers=admin, json={"name": "ward-7"}).status_code == 201
    )
    r = app.http.put("/api/v1/groups/ward-7/members", headers=admin, json=["REF-Grouped"])
    assert r.json()["members"] == ["ref-grouped"]
    r = app.http.put("/api/v1/groups/ward-7/grants", headers=admin, json={"DEFAULT": ["read"]})
    assert r.status_code == 200
    assert app.http.get("/api/v1/studies", headers=h).status_code == 200
    # the role ceiling still holds: a referring physician cannot delete even when granted
    app.http.put("/api/v1/groups/ward-7/grants", headers=admin, json={"DEFAULT": ["delete"]})
    r = app.http.delete("/api/v1/studies/1.2.3.4.100", headers=h)
    assert r.status_code == 403


def test_jobs_are_seen_and_cancelled_by_their_creator_and_administrators_only(
    app: AppUnderTest,
) -> None:
    """A job names studies, instances and a node: any logged-in user could list, read and
    cancel everybody's (an outside tester cancelled an administrator's retrieve as guest)."""
    from datetime import datetime

    from server.index.pacs_models import CommitmentItem, CommitmentRequest, Job

    with app.ctx.WriteSession() as db, db.begin():
        job = Job(kind="retrieve", state="running", created_by="u-radiologist",
                  params={"study_uid": "1.2.3.4.100"}, created_at=datetime(2026, 1, 1))  # fmt: skip
        db.add(job)
        db.flush()
        job_id = job.id
        at = datetime(2026, 1, 1)
        request = CommitmentRequest(transaction_uid="2.25.77", job_pk=job_id, requested_at=at)
        item = CommitmentItem(sop_instance_uid="1.2.3.4.1", sop_class_uid="1.2", updated_at=at)
        request.items.append(item)
        db.add(request)
    owner, other = app.token("u-radiologist"), app.token("u-guest")
    for h in (owner, app.admin(), app.token("u-clinic-it")):
        assert app.http.get(f"/api/v1/jobs/{job_id}", headers=h).status_code == 200
        assert job_id in [j["id"] for j in app.http.get("/api/v1/jobs", headers=h).json()]
    assert app.http.get(f"/api/v1/jobs/{job_id}", headers=other).status_code == 404
    assert job_id not in [j["id"] for j in app.http.get("/api/v1/jobs", headers=other).json()]
    assert app.http.get(f"/api/v1/jobs/{job_id}/instances", headers=other).status_code == 404
    assert app.http.post(f"/api/v1/jobs/{job_id}/cancel", headers=other).status_code == 404
    # its creator may cancel it (409 here: no worker of this process runs the row we made)
    assert app.http.post(f"/api/v1/jobs/{job_id}/cancel", headers=owner).status_code == 409
    assert app.http.get("/api/v1/jobs?limit=0", headers=owner).status_code == 422
    # the job's storage commitment states follow the job (they named its instances to all)
    url = f"/api/v1/pacs/commitments?job_id={job_id}"
    assert [c["transaction_uid"] for c in app.http.get(url, headers=owner).json()] == ["2.25.77"]
    assert app.http.get(url, headers=app.admin()).json()
    assert app.http.get(url, headers=other).json() == []
