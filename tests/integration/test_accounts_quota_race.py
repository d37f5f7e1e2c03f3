"""Quota admission across processes (issue 4): the Store SCP runs in several worker
processes, so parallel associations must not both pass the check and overshoot together.
Real storescu processes send in parallel to the real server; the pool quota holds exactly,
the refusals are A701 (Out of Resources), and no blob is left without its index row."""

from __future__ import annotations

import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from server.index.models import Instance
from tests.integration.dicom_io import storescu
from tests.integration.test_accounts_support import ct_bytes
from tests.support.lucent import LucentServer

SENDERS, FILES_EACH, ALLOWED = 6, 5, 7


def _write(folder: Path, count: int, tag: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(count):
        path = folder / f"{tag}-{i}.dcm"
        # ~121 KB each: a 1 MB quota (quotas are whole MB) holds 8 of them, not 9
        uid = f"1.2.826.77.{tag}.{i}"
        path.write_bytes(ct_bytes(folder, rows=256, cols=240, study_uid=uid))
        out.append(path)
    return out


def test_parallel_senders_never_exceed_the_pool_quota(tmp_path: Path) -> None:
    with LucentServer(tmp_path / "server", workers=2) as server:
        first = _write(tmp_path / "first", 1, "0")
        done = storescu("127.0.0.1", server.port, server.ae_title, first)
        assert done.returncode == 0, done.stderr
        with server.client() as admin:
            [quota] = admin.set_quota("pool", "DEFAULT", 1)
            size = quota.used_bytes  # what one of these instances counts for
            # room for exactly ALLOWED more
            assert size * (1 + ALLOWED) <= quota.limit_bytes < size * (2 + ALLOWED), size
            batches = [_write(tmp_path / f"s{k}", FILES_EACH, str(k + 1)) for k in range(SENDERS)]
            with ThreadPoolExecutor(SENDERS) as pool:  # each runs its own storescu process
                runs = list(
                    pool.map(  # -nh: go on after a refusal, every file gets an answer
                        lambda files: storescu(
                            "127.0.0.1", server.port, server.ae_title, files, "-nh"
                        ),
                        batches,
                    )
                )
            output = "\n".join(r.stderr + r.stdout for r in runs)
            answers = Counter(re.findall(r"Received Store Response \(([^)]*)\)", output))
            successes = answers.pop("Success", 0)
            refusals = sum(n for text, n in answers.items() if "OutOfResources" in text)
            assert successes + refusals == SENDERS * FILES_EACH, (answers, output[-1500:])
            [quota] = admin.quotas()
            assert quota.used_bytes <= quota.limit_bytes
            assert successes == ALLOWED  # admission is exact, not merely conservative
            # generated UIDs differ in length by a few bytes between instances
            assert abs(quota.used_bytes - size * (1 + ALLOWED)) <= 16 * (1 + ALLOWED)
        engine = create_engine(f"sqlite:///{server.data_dir / 'index.sqlite3'}")
        with Session(engine) as db:
            assert db.scalar(select(func.count(Instance.id))) == 1 + ALLOWED
            keys = {k for i in db.scalars(select(Instance)) for k in (i.meta_key, i.pixel_key)}
        engine.dispose()
    leftovers = [p for p in (server.data_dir / "archive").rglob("*") if p.is_file()]
    assert {p.name for p in leftovers} == {k for k in keys if k}  # nothing half-written
