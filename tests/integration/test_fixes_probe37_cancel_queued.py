"""Cancelling a queued job ends it at once (outside tester probe 37).

POST /jobs/{id}/cancel on a job waiting for a worker answered 200 with state "queued", and
the job stayed "queued" with no message until the moves ahead of it ended. One job thread
here; the job ahead is a slow C-MOVE from dcmqrscp (Nagle on, about 45 ms per instance).
"""

from __future__ import annotations

import time
from pathlib import Path

from pydicom.uid import CTImageStorage, generate_uid

from lucent.api import schemas
from tests.data import samples
from tests.support.lucent import LucentServer
from tests.support.peers import DcmQrScp, free_port


def test_cancelling_a_queued_job_ends_it_at_once(tmp_path: Path) -> None:
    port = free_port()
    server = LucentServer(
        tmp_path / "lucent",
        workers=1,
        pools=[{"name": "DEFAULT", "ae_title": "LUCENT", "port": port}],
        settings={"pacs": {"job_threads": 1}},
    )
    qr = DcmQrScp(
        peers={"lucent": ("LUCENT", "127.0.0.1", port)}, workdir=tmp_path / "qr", nodelay=False
    )
    study = generate_uid()
    files = [
        samples.write(
            samples.make_instance(
                CTImageStorage, patient_id="PAT-Q", study_uid=study, instance_number=i + 1
            ),
            tmp_path / f"i{i}.dcm",
        )  # fmt: skip
        for i in range(150)
    ]
    with server, qr:
        qr.add_files(files)
        api = server.client()
        node = api.add_node(
            schemas.RemoteNodeIn(
                name="slow", ae_title=qr.aet, host="127.0.0.1", port=qr.port, timeout=10
            )
        )
        ahead = api.retrieve(node.id, study)
        queued = api.retrieve(node.id, study)
        seen = api.job(ahead.id)
        while seen.state == "queued":
            time.sleep(0.02)
            seen = api.job(ahead.id)
        assert api.job(queued.id).state == "queued"

        answer = api.cancel_job(queued.id)
        assert answer.state == "cancelled", answer
        assert answer.message == "cancelled before it started" and answer.finished_at
        assert api.job(ahead.id).state == "running"  # the worker is still busy
        assert api.job(queued.id).state == "cancelled"

        api.cancel_job(ahead.id)
        assert api.wait_job(ahead.id, timeout=60).state in ("cancelled", "done")
        final = api.job(queued.id)
        assert final.state == "cancelled" and final.started_at is None, final
        api.close()
