"""GET /api/v1/audit?object_id=...: the filter finds every record that names the object, and
offset/limit page through those records (probe 7: paging came first and the filter was
applied to the oldest page afterwards, so most records about a study were never found)."""

from __future__ import annotations

from pathlib import Path

from server.accounts import audit
from tests.integration.test_accounts_support import make_app

STUDY = "1.2.826.0.1.3680043.10.1455.7"
# LIKE wildcards and a prefix of the id must not match by accident
LOOKALIKES = ["1.2.826.0.1.3680043.10.1455.77", "1.2.826.0.1.3680043.10.1455"]


def test_object_filter_finds_every_record_and_pages_through_them(tmp_path: Path) -> None:
    with make_app(tmp_path) as app:
        entries = []
        for i in range(450):
            if i % 9 == 8:
                objects = [{"type": "query", "id": "x"}, {"type": "study", "id": STUDY}]
            else:
                objects = [{"type": "study", "id": LOOKALIKES[i % 2]}]
            entries.append(audit.Entry("view", audit.SUCCESS, "dr", "127.0.0.1", objects, str(i)))
        audit.record(app.ctx.WriteSession, *entries)
        admin = app.admin_client()
        truth = [
            e.id for e in admin.audit(limit=5000) if any(o.get("id") == STUDY for o in e.objects)
        ]
        assert len(truth) == 50
        assert [e.id for e in admin.audit(object_id=STUDY)] == truth
        pages = [admin.audit(object_id=STUDY, offset=o, limit=15) for o in range(0, 60, 15)]
        assert [len(p) for p in pages] == [15, 15, 15, 5]
        assert [e.id for p in pages for e in p] == truth
        assert admin.audit(object_id=STUDY, offset=50) == []
        # a wildcard in the id is matched literally, and other filters still apply
        assert admin.audit(object_id="1.2.826.0.1.3680043.10.1455._") == []
        assert admin.audit(object_id="%") == []
        assert len(admin.audit(object_id=LOOKALIKES[0], user="dr", limit=5000)) == 200
        assert admin.audit(object_id=STUDY, user="somebody-else") == []
