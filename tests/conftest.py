"""Shared fixtures: our server as a real subprocess on free loopback ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient

from lucent.api.client import LucentClient
from tests.support.lucent import LucentServer


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LucentServer]:
    """One server per xdist worker, shared by tests that only add data."""
    with LucentServer(tmp_path_factory.mktemp("lucent-server")) as srv:
        yield srv


@pytest.fixture(scope="session")
def api(server: LucentServer) -> Iterator[LucentClient]:
    client = server.client()
    yield client
    client.close()


@pytest.fixture(scope="module")
def web(server: LucentServer, api: LucentClient) -> DICOMwebClient:
    """dicomweb-client on the shared server's /dicom-web, with the admin's token."""
    return DICOMwebClient(
        url=f"{server.api_url}/dicom-web", headers={"Authorization": f"Bearer {api.token}"}
    )


@pytest.fixture(scope="module")
def http(server: LucentServer, api: LucentClient) -> Iterator[httpx.Client]:
    """A plain HTTP client on the shared server's /dicom-web, with the admin's token (for
    the DICOMweb wire-format tests)."""
    client = httpx.Client(
        base_url=f"{server.api_url}/dicom-web",
        headers={"Authorization": f"Bearer {api.token}"},
        timeout=60,
    )
    yield client
    client.close()


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[LucentServer]:
    """A server of the test's own (for crash, config and policy tests)."""
    srv = LucentServer(tmp_path / "srv")
    yield srv
    srv.stop()


#: Modules that each keep one test worker busy for minutes (whole perfusion analyses, several
#: server starts per test), measured with ``--durations``/JUnit times. ``make test`` hands
#: out whole files to its two workers in collection order (``--dist loadfile``); collected
#: last, these ran alone at the end while the other worker sat idle (the final 16 % of the
#: tests took 14 of 28 minutes). Collected first, the short modules fill the gaps.
HEAVY_FIRST = (
    "tests/unit/perfusion/",
    "tests/integration/test_archive_recovery.py",
    "tests/integration/test_api_fuzz.py",
    "tests/integration/test_pacs_send_resume.py",
    "tests/integration/test_archive_errors_probe48.py",
    "tests/integration/test_perfusion_",
    "tests/integration/test_server_config.py",
    "tests/integration/test_postgres_outage.py",
    "tests/integration/test_robustness.py",
    "tests/integration/test_ingest.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The ``HEAVY_FIRST`` modules first, everything else in its usual order (stable sort)."""
    items.sort(key=lambda item: not item.nodeid.startswith(HEAVY_FIRST))
