"""A resend that replaces an archived copy is admitted on its net change (issue 4 quotas,
duplicate policy "replace"): a PACS resending a study to a nearly full pool, or a user
re-uploading a file, was refused with A701 / 507 though it frees as much as it takes."""

from __future__ import annotations

from pathlib import Path

import pydicom

from lucent.net import status
from tests.integration.test_accounts_data import _image, _stow
from tests.integration.test_accounts_support import make_app


def _uid(data: bytes) -> str:
    from io import BytesIO

    return str(pydicom.dcmread(BytesIO(data), stop_before_pixels=True).SOPInstanceUID)


def test_pool_quota_admits_a_resend_that_replaces_its_copy(tmp_path: Path) -> None:
    with make_app(tmp_path) as app:
        one = _image(tmp_path)  # ~0.66 MB of a 1 MB quota
        assert app.store(one) == 0
        admin = app.admin_client()
        admin.set_quota("pool", "DEFAULT", 1)
        # as the Store SCP calls it: the C-STORE request names the SOP Instance UID
        again = app.ctx.store(one, pool="DEFAULT", source="PACS", expected_sop_instance=_uid(one))
        assert again.status == status.SUCCESS and again.action == "replaced", again
        [quota] = admin.quotas()
        assert quota.used_bytes == len(one)
        other = _image(tmp_path)  # a new instance still does not fit
        refused = app.ctx.store(
            other, pool="DEFAULT", source="PACS", expected_sop_instance=_uid(other)
        )
        assert refused.status == 0xA701 and "quota" in refused.reason


def test_user_and_group_quota_admit_a_re_upload_of_the_same_instance(tmp_path: Path) -> None:
    with make_app(tmp_path) as app:
        admin = app.admin_client()
        app.add_user("kim", "radiologist", {"DEFAULT": ["read", "import"]})
        h = app.token("kim")
        one = _image(tmp_path)
        assert _stow(app, h, one).status_code == 200
        admin.set_quota("user", "kim", 1)
        assert _stow(app, h, one).status_code == 200  # was 507
        [mine] = app.client("kim").my_quota()
        assert mine.used_bytes == len(one)
        assert _stow(app, h, _image(tmp_path)).status_code == 507
        admin.set_quota("user", "kim", None)
        admin.create_group("radiology")
        admin.set_group_members("radiology", ["kim"])
        admin.set_quota("group", "radiology", 1)
        assert _stow(app, h, one).status_code == 200  # was 507
        assert _stow(app, h, _image(tmp_path)).status_code == 507
