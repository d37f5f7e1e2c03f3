"""Two admins saving one node's PACS options at once, on a real PostgreSQL index (outside
probe 31): the node row is locked as for the other node edits, so the final options equal
exactly one save (last write wins as a whole), never a mix of both."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support.postgres_races import admin_session, pair, postgres_server

pytestmark = pytest.mark.postgres

ROUNDS = 36  # a narrow window: both rows must be read at the same time


@pytest.fixture(scope="module")
def admins(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    with (
        postgres_server(tmp_path_factory.mktemp("s13-options")) as (_, srv),
        admin_session(srv) as a,
        admin_session(srv) as b,
    ):
        yield a, b


def test_concurrent_option_puts_keep_one_edit_whole(
    admins: tuple[httpx.Client, httpx.Client],
) -> None:
    """Each save changes a different set of columns from a common state: unlocked, each
    UPDATE wrote only its changed columns over the row both had read."""
    c1, c2 = admins
    node = c1.post(
        "/api/v1/nodes",
        json={"name": "s13-options", "ae_title": "S13O", "host": "127.0.0.1", "port": 104},
    )
    assert node.status_code == 201, node.text
    url = f"/api/v1/pacs/nodes/{node.json()['id']}/options"
    base = dict(propose_compressed=False, commitment_mode="same", commitment_wait=10.0,
                dimse_timeout=30.0, retries=3)  # fmt: skip
    edit_a = dict(base, propose_compressed=True, commitment_mode="incoming", commitment_wait=5.0)
    edit_b = dict(base, commitment_mode="reopen", commitment_wait=20.0, dimse_timeout=40.0,
                  retries=5)  # fmt: skip
    keys = tuple(base)
    expected = {tuple(edit_a[k] for k in keys), tuple(edit_b[k] for k in keys)}
    mixed = []
    for rnd in range(ROUNDS):
        assert c1.put(url, json=base).status_code == 200
        a, b = pair(lambda: c1.put(url, json=edit_a), lambda: c2.put(url, json=edit_b))
        assert (a.status_code, b.status_code) == (200, 200), (a.text, b.text)
        final = c1.get(url).json()
        if tuple(final[k] for k in keys) not in expected:
            mixed.append((rnd, final))
        for answer, edit in ((a, edit_a), (b, edit_b)):  # each answers its own save
            assert tuple(answer.json()[k] for k in keys) == tuple(edit[k] for k in keys)
    assert mixed == [], f"node options mixing two saves: {mixed}"


def test_first_concurrent_saves_of_a_node_without_options_answer_200(
    admins: tuple[httpx.Client, httpx.Client],
) -> None:
    """Two first saves both inserted an options row: one answered 409 or 500."""
    c1, c2 = admins
    wrong = []
    for rnd in range(12):
        node = c1.post(
            "/api/v1/nodes",
            json={"name": f"s13-first-{rnd}", "ae_title": "S13F", "host": "127.0.0.1", "port": 1},
        )
        url = f"/api/v1/pacs/nodes/{node.json()['id']}/options"
        a, b = pair(
            lambda u=url: c1.put(u, json={"retries": 1}),
            lambda u=url: c2.put(u, json={"retries": 2}),
        )
        if (a.status_code, b.status_code) != (200, 200):
            wrong.append((rnd, a.status_code, b.status_code, a.text, b.text))
    assert wrong == []
