"""Recovery files an orphaned copy of an archived instance as the store in flight would
have: under duplicate policy "keep" (and "reject") the archived copy stays. Outside probe
33: a resend cut off by a kill -9 between its objects and its index row replaced the kept
copy at the next start. Real SQLite index, real archive folder, real recovery."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread

from server import config
from server.archive import recovery
from server.context import ServerContext
from tests.data import samples

CT = "1.2.840.10008.5.1.4.1.1.2"


@pytest.fixture(params=["keep", "reject", "replace"])
def policy_ctx(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerContext]:
    settings = config.parse(
        {
            "server": {"data_dir": str(tmp_path / "srv")},
            "archive": {"duplicate_policy": request.param},
        }
    )
    context = ServerContext(settings, migrate=True)
    yield context
    context.close()


def _part10(description: str) -> bytes:
    ds = samples.make_instance(CT, sop_instance_uid="1.2.826.0.1.3680043.8.498.33.1")
    ds.SeriesDescription = description
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_an_orphaned_resend_is_filed_by_the_duplicate_policy(
    policy_ctx: ServerContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = policy_ctx
    assert ctx.store(_part10("first"), pool="DEFAULT").ok

    def crash(rec: object) -> None:
        raise KeyboardInterrupt  # the process dies between the objects and the index row

    with monkeypatch.context() as patch:
        patch.setattr(ctx, "_commit", crash)
        patch.setattr(ctx.storage, "delete", lambda key: None)  # nothing runs after a kill
        with pytest.raises(KeyboardInterrupt):
            ctx.store(_part10("resent"), pool="DEFAULT")
    report = recovery.recover(ctx)
    inst = ctx.find_instance("1.2.826.0.1.3680043.8.498.33.1")
    assert inst is not None
    kept = dcmread(io.BytesIO(ctx.instance_bytes(inst))).SeriesDescription
    policy = ctx.settings.archive.duplicate_policy
    assert kept == ("resent" if policy == "replace" else "first")
    assert report.recovered == (1 if policy == "replace" else 0)
