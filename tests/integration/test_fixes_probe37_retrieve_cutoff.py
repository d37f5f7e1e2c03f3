"""A retrieve cut off by a dying PACS says what arrived (outside tester probe 37).

dcmqrscp killed mid-move: the job ended "failed", "connection refused ... after 3
attempt(s)", though ~190 instances had arrived and were archived; while the retry waited
the message was the previous attempt's and the counts restarted from zero on the next one.
dcmqrscp runs with Nagle on (about 45 ms per instance) so the move is slow enough to cut.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from pydicom.uid import generate_uid

from tests.support.dcmqrscp import ct_files, lucent_with_dcmqrscp

COUNT = 150


def test_cut_off_retrieve_is_partial_and_says_what_arrived(tmp_path: Path) -> None:
    study, series = generate_uid(), generate_uid()
    files = ct_files(tmp_path, COUNT, patient_id="PAT-CUT", study_uid=study, series_uid=series)
    with lucent_with_dcmqrscp(
        tmp_path, files, node_name="dying", nodelay=False,
        settings={"pacs": {"retry_backoff_seconds": 3}},
    ) as up:  # fmt: skip
        api, node, qr = up.api, up.node, up.qr
        api.set_node_options(node.id, retries=1)
        job = api.retrieve(node.id, study)
        seen = api.job(job.id)
        while seen.completed < 5 and seen.state in ("queued", "running"):
            time.sleep(0.02)
            seen = api.job(job.id)
        assert seen.state == "running" and seen.completed < COUNT, seen
        assert qr.proc is not None
        os.killpg(qr.proc.pid, signal.SIGKILL)  # parent and forked children: a dying PACS

        messages = []
        while seen.state in ("queued", "running"):
            messages.append(seen.message)
            time.sleep(0.1)
            seen = api.job(job.id)
        archived = len(api.instances(series))
        assert 0 < archived < COUNT
        # while the retry waited, the job said which attempt ended and what had arrived
        assert any("attempt 1 of 2" in m and "arrived so far" in m for m in messages), messages
        assert seen.state == "partial", seen
        assert f"{archived} of {COUNT} instance(s) arrived and are archived" in seen.message
        assert "after 2 attempt(s)" in seen.message
        assert seen.completed == archived
