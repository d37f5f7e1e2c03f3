"""Fixtures shared by the unit tests that drive the ingest path without a network."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from server import config
from server.context import ServerContext


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[ServerContext]:
    """A server context on a fresh data folder: real SQLite index, real archive folder."""
    context = ServerContext(
        config.parse({"server": {"data_dir": str(tmp_path / "srv")}}), migrate=True
    )
    yield context
    context.close()
