"""Behaviour chosen in the config: pools, duplicate policies, implementation identity."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
from pydicom import dcmread

from tests.data import samples
from tests.integration.dicom_io import storescu
from tests.support.lucent import LucentServer
from tests.support.peers import dcmtk_tool, dicom_echo_ok, dicom_env, free_port

SC = "1.2.840.10008.5.1.4.1.1.7"


def test_each_pool_has_its_own_ae_and_port(tmp_path: Path) -> None:
    pools = [
        {"name": "DEFAULT", "ae_title": "LUCENT", "port": free_port()},
        {"name": "STROKE", "ae_title": "LUCENT_STROKE", "port": free_port()},
    ]
    with LucentServer(tmp_path / "srv", pools=pools) as srv:
        api = srv.client()
        assert [(p.name, p.ae_title) for p in api.pools()] == [
            ("DEFAULT", "LUCENT"), ("STROKE", "LUCENT_STROKE"),
        ]  # fmt: skip
        for pool in pools:
            assert dicom_echo_ok("127.0.0.1", int(pool["port"]), str(pool["ae_title"]))
        ds = samples.make_instance(SC, patient_id="POOL-2")
        path = samples.write(ds, tmp_path / "p.dcm")
        assert storescu("127.0.0.1", int(pools[1]["port"]), "LUCENT_STROKE", [path]).returncode == 0
        study = api.studies(patient_id="POOL-2")[0]
        assert study.pool == "STROKE"
        assert [s.study_uid for s in api.studies(pool="DEFAULT", patient_id="POOL-2")] == []


@pytest.mark.parametrize("policy", ["keep", "reject"])
def test_duplicate_policies(tmp_path: Path, policy: str) -> None:
    settings = {"archive": {"duplicate_policy": policy}}
    with LucentServer(tmp_path / "srv", settings=settings) as srv:
        api = srv.client()
        ds = samples.make_instance(SC, patient_id=f"DUP-{policy}")
        path = samples.write(ds, tmp_path / "d.dcm")
        assert storescu("127.0.0.1", srv.port, srv.ae_title, [path]).returncode == 0
        ds.SeriesDescription = "second copy"
        samples.write(ds, path)
        second = storescu("127.0.0.1", srv.port, srv.ae_title, [path])
        if policy == "keep":
            assert second.returncode == 0
        else:
            assert "Error" in second.stderr or second.returncode != 0
        stored = dcmread(io.BytesIO(api.instance_file(str(ds.SOPInstanceUID))))
        assert stored.get("SeriesDescription") != "second copy"
        # Objects only: the empty files a running server prepares for its next stores are
        # not objects (server.archive.storage), and it removes them when it stops.
        blobs = [
            p for p in (srv.data_dir / "archive").rglob("*") if p.is_file() and p.stat().st_size
        ]
        assert len(blobs) == 2  # the refused copy left nothing behind
    left = [p for p in (srv.data_dir / "archive").rglob("*") if p.is_file()]
    assert len(left) == 2  # stopped: no prepared file left either


def test_implementation_identity_is_ours(server: LucentServer) -> None:
    done = subprocess.run(
        [dcmtk_tool("echoscu"), "-d", "-aec", server.ae_title, "127.0.0.1", str(server.port)],
        capture_output=True, text=True, env=dicom_env(True), timeout=30,
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert "1.2.826.0.1.3680043.10.1455.1.0.1" in out and "LUCENT_010" in out


def test_api_refuses_to_bind_beyond_loopback_without_tls(tmp_path: Path) -> None:
    srv = LucentServer(tmp_path / "srv", settings={"api": {"bind_address": "0.0.0.0"}})
    done = srv.cli("check-config")
    assert done.returncode == 2 and "without TLS" in done.stderr


def test_check_config_of_a_missing_file_is_an_error(tmp_path: Path) -> None:
    """Loading a missing file writes the defaults, so a mistyped --config was reported OK
    and created (outside probe): check-config only checks."""
    missing = tmp_path / "nonexistent.toml"
    done = subprocess.run(
        [sys.executable, "-m", "server", "check-config", "--config", str(missing)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and "no config file" in done.stderr
    assert not missing.exists()
