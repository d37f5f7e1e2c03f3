"""Cancelling a queued job ends it at once (outside tester probe 37).

POST /jobs/{id}/cancel on a job waiting for a worker answered 200 with state "queued", and
the job stayed "queued" with no message until the moves ahead of it ended. One job thread
here; the job ahead is a slow C-MOVE from dcmqrscp (Nagle on, about 45 ms per instance).
"""

from __future__ import annotations

import time
from pathlib import Path

from pydicom.uid import generate_uid

from tests.support.dcmqrscp import ct_files, lucent_with_dcmqrscp


def test_cancelling_a_queued_job_ends_it_at_once(tmp_path: Path) -> None:
    study = generate_uid()
    files = ct_files(tmp_path, 150, patient_id="PAT-Q", study_uid=study)
    with lucent_with_dcmqrscp(
        tmp_path, files, node_name="slow", node_timeout=10, nodelay=False,
        settings={"pacs": {"job_threads": 1}},
    ) as up:  # fmt: skip
        api, node = up.api, up.node
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
