"""Two administrators changing the same thing at the same moment, on a real PostgreSQL index
(probe 31, race 7). SQLite serialises writers (BEGIN IMMEDIATE); PostgreSQL under READ
COMMITTED lets two requests read the same rows and then both write, which mixed two node
edits, left the union of two grant sets and answered 500 (UniqueViolation) to concurrent
creates. The invariants: no 5xx, the final state equals exactly one of the two requests
(the last write wins as a whole), a name created twice at once gives one 201 and one 409.

Each check runs N request pairs released together by a barrier through the real HTTP API.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support.lucent import LucentServer
from tests.support.postgres_races import admin_session, pair, postgres_server

pytestmark = pytest.mark.postgres

ROUNDS = 12
PASSWORD = "Xx-very-long-pass-1234"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LucentServer]:
    with postgres_server(tmp_path_factory.mktemp("race-pg")) as (_, srv):
        yield srv


@pytest.fixture(scope="module")
def admins(server: LucentServer) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    a, b = admin_session(server), admin_session(server)
    yield a, b
    a.close()
    b.close()


def _codes(*responses: httpx.Response) -> list[int]:
    return sorted(r.status_code for r in responses)


def _no_5xx(*responses: httpx.Response) -> None:
    for r in responses:
        assert r.status_code < 500, f"{r.request.method} {r.request.url}: {r.status_code} {r.text}"


def _make_user(c: httpx.Client, name: str) -> None:
    r = c.post(
        "/api/v1/users", json={"username": name, "password": PASSWORD, "role": "radiologist"}
    )
    assert r.status_code == 201, r.text


def test_concurrent_node_edits_keep_one_edit_whole(
    admins: tuple[httpx.Client, httpx.Client],
) -> None:
    c1, c2 = admins
    base = {"name": "race-node-edit", "ae_title": "R7Z", "host": "127.0.0.1", "port": 104}
    node = c1.post("/api/v1/nodes", json=base)
    assert node.status_code == 201, node.text
    url = f"/api/v1/nodes/{node.json()['id']}"
    edit_a = dict(base, ae_title="R7A", host="127.0.0.1", port=1001)
    edit_b = dict(base, ae_title="R7B", host="127.0.0.2", port=1002)
    expected = {("R7A", "127.0.0.1", 1001), ("R7B", "127.0.0.2", 1002)}
    mixed = []
    for rnd in range(3 * ROUNDS):  # a narrow window: the rows must be read at the same time
        # from a third state, each edit changes a different set of columns
        assert c1.put(url, json=base).status_code == 200
        a, b = pair(lambda: c1.put(url, json=edit_a), lambda: c2.put(url, json=edit_b))
        _no_5xx(a, b)
        assert _codes(a, b) == [200, 200], (a.text, b.text)
        n = next(x for x in c1.get("/api/v1/nodes").json() if x["id"] == node.json()["id"])
        if (n["ae_title"], n["host"], n["port"]) not in expected:
            mixed.append((rnd, n["ae_title"], n["host"], n["port"]))
    assert mixed == [], f"node rows mixing two edits: {mixed}"


def _norm(grants: dict[str, list[str]]) -> dict[str, list[str]]:
    return {k: sorted(v) for k, v in grants.items()}


GRANTS_A = {"DEFAULT": ["read"]}
GRANTS_B = {"*": ["delete", "read", "send"]}


def test_concurrent_grant_puts_last_write_wins(
    admins: tuple[httpx.Client, httpx.Client],
) -> None:
    c1, c2 = admins
    _make_user(c1, "race-grants-user")
    r = c1.post("/api/v1/groups", json={"name": "race-grants-group", "description": ""})
    assert r.status_code == 201, r.text
    targets = {
        "user": ("/api/v1/users/race-grants-user/grants", "/api/v1/users/race-grants-user"),
        "group": ("/api/v1/groups/race-grants-group/grants", None),
    }
    unions = []
    for rnd in range(ROUNDS):
        for kind, (put_url, get_url) in targets.items():
            a, b = pair(
                lambda u=put_url: c1.put(u, json=GRANTS_A),
                lambda u=put_url: c2.put(u, json=GRANTS_B),
            )
            _no_5xx(a, b)
            if get_url:
                final = c1.get(get_url).json()["grants"]
            else:
                groups = c1.get("/api/v1/groups").json()
                final = next(g for g in groups if g["name"] == "race-grants-group")["grants"]
            if _norm(final) not in (_norm(GRANTS_A), _norm(GRANTS_B)):
                unions.append((rnd, kind, final))
    assert unions == [], f"grants after two concurrent PUTs are neither PUT: {unions}"


def test_concurrent_creates_answer_201_and_409(
    admins: tuple[httpx.Client, httpx.Client],
) -> None:
    c1, c2 = admins
    wrong: list[tuple[str, int, list[int]]] = []
    for rnd in range(ROUNDS):
        user = {"username": f"race-create-{rnd}", "password": PASSWORD, "role": "guest"}
        node = {"name": f"race-create-{rnd}", "ae_title": "R7C", "host": "127.0.0.1", "port": 1003}
        group = {"name": f"race-create-{rnd}", "description": ""}
        for what, path, body in (
            ("user", "/api/v1/users", user),
            ("node", "/api/v1/nodes", node),
            ("group", "/api/v1/groups", group),
        ):
            a, b = pair(
                lambda p=path, x=body: c1.post(p, json=x), lambda p=path, x=body: c2.post(p, json=x)
            )
            if _codes(a, b) != [201, 409]:
                wrong.append((what, rnd, _codes(a, b)))
            else:
                lost = a if a.status_code == 409 else b
                assert "exists" in lost.json()["detail"], lost.text
    assert wrong == [], f"concurrent creates of one name (expected 201 + 409): {wrong}"
    users = [u["username"] for u in c1.get("/api/v1/users").json()]
    nodes = [n["name"] for n in c1.get("/api/v1/nodes").json()]
    for rnd in range(ROUNDS):
        assert users.count(f"race-create-{rnd}") == 1
        assert nodes.count(f"race-create-{rnd}") == 1


def test_concurrent_member_and_quota_puts_answer_200(
    admins: tuple[httpx.Client, httpx.Client],
) -> None:
    c1, c2 = admins
    for i in range(3):
        _make_user(c1, f"race-member-{i}")
    r = c1.post("/api/v1/groups", json={"name": "race-members", "description": ""})
    assert r.status_code == 201, r.text
    members_a = ["race-member-0", "race-member-1"]
    members_b = ["race-member-1", "race-member-2"]
    bad = []
    for rnd in range(ROUNDS):
        a, b = pair(
            lambda: c1.put("/api/v1/groups/race-members/members", json=members_a),
            lambda: c2.put("/api/v1/groups/race-members/members", json=members_b),
        )
        if _codes(a, b) != [200, 200]:
            bad.append(("members", rnd, _codes(a, b), a.text[:120], b.text[:120]))
        groups = c1.get("/api/v1/groups").json()
        final = next(g for g in groups if g["name"] == "race-members")["members"]
        if sorted(final) not in (sorted(members_a), sorted(members_b)):
            bad.append(("members", rnd, final))

        subject = f"race-member-{rnd % 3}"
        gone = c1.put("/api/v1/quotas", json={"kind": "user", "subject": subject, "limit_mb": None})
        assert gone.status_code == 200, gone.text
        qa = {"kind": "user", "subject": subject, "limit_mb": 100 + rnd}
        qb = dict(qa, limit_mb=200 + rnd)
        a, b = pair(
            lambda q=qa: c1.put("/api/v1/quotas", json=q),  # type: ignore[misc]
            lambda q=qb: c2.put("/api/v1/quotas", json=q),  # type: ignore[misc]
        )
        if _codes(a, b) != [200, 200]:
            bad.append(("quota", rnd, _codes(a, b), a.text[:120], b.text[:120]))
        rows = [q for q in c1.get("/api/v1/quotas").json() if q["subject"] == subject]
        limits = {(100 + rnd) * 2**20, (200 + rnd) * 2**20}
        if len(rows) != 1 or rows[0]["limit_bytes"] not in limits:
            bad.append(("quota", rnd, rows))
    assert bad == [], f"concurrent PUTs of members / a new quota: {bad}"
