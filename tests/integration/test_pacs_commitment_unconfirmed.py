"""GET /pacs/commitments after a storage commitment request expired (Conformance 4.2.5.3):
its instances read "pending" for good while the request read "expired" (outside probe 26).

The in-process API and PACS service on a real index; the commitment SCP is the scripted
pynetdicom peer keeping its report (no real PACS withholds reports on demand).
"""

from __future__ import annotations

import time
from pathlib import Path

from lucent.net import commitment
from server.index.models import RemoteNode
from server.pacs import records
from server.pacs.service import PacsService
from tests.integration.test_accounts_support import make_app
from tests.integration.test_pacs_commitment_retry import RETRY_SECONDS, CountingPeer
from tests.integration.test_pacs_scripted import REFS


def test_instances_of_an_expired_request_read_unconfirmed(tmp_path: Path) -> None:
    peer = CountingPeer().start()
    peer.commit_mode = "incoming"  # the SCP keeps its report: nothing arrives
    pacs = {"commitment_retry_seconds": RETRY_SECONDS, "commitment_max_attempts": 1}
    try:
        with make_app(tmp_path, {"pacs": pacs}) as app:
            svc = PacsService(app.ctx, start_watcher=False)
            app.app.state.pacs = svc  # the routes use this one
            try:
                with app.ctx.WriteSession() as db, db.begin():
                    node = RemoteNode(
                        name="commit-scp", ae_title=peer.aet, host=peer.host, port=peer.port,
                        store_target=True, storage_commitment=True, timeout=10.0,
                    )  # fmt: skip
                    db.add(node)
                    db.flush()
                    node_id = node.id
                svc.set_options(node_id, commitment_mode="same", commitment_wait=0.3)
                res = svc.request_commitment(svc.node(node_id), REFS)
                assert res.ok and res.report is None
                api = app.admin_client()
                waiting = api.commitments(transaction_uid=res.transaction_uid)
                assert {(c.request_state, c.state) for c in waiting} == {("pending", "pending")}

                time.sleep(RETRY_SECONDS + 0.2)
                svc.retry_commitments()  # the last attempt: the request expires
                expired = api.commitments(transaction_uid=res.transaction_uid)
                assert len(expired) == 2
                assert {(c.request_state, c.state) for c in expired} == {("expired", "unconfirmed")}

                # a report that comes after all still counts for what it names
                late = commitment.Report(res.transaction_uid, [REFS[0]], [])
                assert records.record_report(app.ctx, late) == 1
                states = {
                    c.sop_instance_uid: c.state
                    for c in api.commitments(transaction_uid=res.transaction_uid)
                }
                assert states == {
                    REFS[0].sop_instance_uid: "committed",
                    REFS[1].sop_instance_uid: "unconfirmed",
                }
            finally:
                svc.close()
    finally:
        peer.stop()
