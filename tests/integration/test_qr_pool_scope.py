"""Query/Retrieve on a data pool's AE sees that pool (``[dimse] query_scope = "pool"``).

The studies of every pool answered whichever pool AE a remote node called: data kept apart
in pools (and from users without rights on them) was open to every Q/R node. DCMTK
findscu/getscu against a real server with two pools."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from lucent.api import schemas
from server import config
from tests.data import samples
from tests.integration.dicom_io import storescu
from tests.support.lucent import LucentServer
from tests.support.peers import dcmtk_tool, dicom_env, free_port

CT = "1.2.840.10008.5.1.4.1.1.2"


@pytest.fixture(scope="module")
def two_pools(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LucentServer, dict]]:
    work = tmp_path_factory.mktemp("qrscope")
    pools = [
        {"name": "DEFAULT", "ae_title": "LUCENT", "port": free_port()},
        {"name": "ONCO", "ae_title": "LUCONCO", "port": free_port()},
    ]
    srv = LucentServer(work / "srv", workers=1, pools=pools)
    with srv:
        api = srv.client()
        api.add_node(
            schemas.RemoteNodeIn(name="viewer", ae_title="GETSCU", host="127.0.0.1", port=104)
        )
        api.add_node(
            schemas.RemoteNodeIn(name="finder", ae_title="FINDSCU", host="127.0.0.1", port=104)
        )
        studies = {}
        for pool in pools:
            uid = generate_uid()
            ds = samples.make_instance(CT, patient_id=f"SCOPE-{pool['name']}", study_uid=uid)
            path = samples.write(ds, work / f"{pool['name']}.dcm")
            done = storescu("127.0.0.1", pool["port"], pool["ae_title"], [path])
            assert done.returncode == 0, done.stderr
            studies[pool["name"]] = (pool, uid)
        yield srv, studies


def _tool(name: str, pool: dict, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [dcmtk_tool(name), "-v", "-aet", name.upper(), "-aec", pool["ae_title"], *args,
         "127.0.0.1", str(pool["port"])],
        capture_output=True, text=True, env=dicom_env(True), timeout=120,
    )  # fmt: skip


def test_find_on_a_pool_ae_answers_that_pool_only(two_pools: tuple[LucentServer, dict]) -> None:
    _, studies = two_pools
    for name, (pool, uid) in studies.items():
        done = _tool(
            "findscu", pool, "-S", "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID",
            "-k", "StudyInstanceUID",
        )  # fmt: skip
        out = done.stdout + done.stderr
        assert done.returncode == 0, out
        assert uid in out and f"SCOPE-{name}" in out
        others = [u for n, (_, u) in studies.items() if n != name]
        assert not any(u in out for u in others), out[-3000:]


def test_get_on_a_pool_ae_retrieves_nothing_of_another_pool(
    two_pools: tuple[LucentServer, dict], tmp_path: Path
) -> None:
    _, studies = two_pools
    (onco, _), (_, default_study) = studies["ONCO"], studies["DEFAULT"]
    for pool, uid, expected in (
        (onco, default_study, 0),
        (studies["DEFAULT"][0], default_study, 1),
    ):
        out_dir = tmp_path / pool["ae_title"]
        out_dir.mkdir()
        done = _tool(
            "getscu", pool, "-S", "-od", str(out_dir), "-k", "QueryRetrieveLevel=STUDY",
            "-k", f"StudyInstanceUID={uid}",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        assert len(list(out_dir.iterdir())) == expected, pool


def test_query_scope_is_pool_or_all() -> None:
    assert config.parse({}).dimse.query_scope == "pool"
    assert config.parse({"dimse": {"query_scope": "all"}}).dimse.query_scope == "all"
    with pytest.raises(config.ConfigError, match="query_scope"):
        config.parse({"dimse": {"query_scope": "everything"}})
