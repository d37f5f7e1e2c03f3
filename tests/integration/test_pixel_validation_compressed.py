"""Compressed pixel data that cannot be the image it claims is not imported (issue 2,
Conformance 4.1.3.2), outside probe 42: DCMTK storescu sends it in its own transfer syntax
to the real server, next to valid samples of every still-image compressed syntax.

Before: a JPEG Baseline instance whose only fragment is ``FFD8FFE0`` and 100 zeros, and an
RLE 16-bit instance whose header claims 15 segments with no data, were answered 0000 and
listed as images whose every frame answered 422.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread

from lucent.api.client import ApiError, LucentClient
from lucent.dicom import transfer_syntaxes
from tests.data import bad_inputs
from tests.data import transfer_syntaxes as ts_samples
from tests.integration.dicom_io import storescu
from tests.support.lucent import LucentServer
from tests.unit.test_codestream import PROBE_CASES


def test_broken_codestreams_get_placeholders_and_valid_ones_are_stored(
    server: LucentServer, api: LucentClient, tmp_path: Path
) -> None:
    cases = [make() for make in PROBE_CASES]
    broken = [case.write(tmp_path / "broken") for case in cases]
    built = ts_samples.build_transfer_syntax_set(tmp_path / "ts", strict=False)
    valid = [
        s
        for s in built.values()
        if transfer_syntaxes.is_encapsulated(s.transfer_syntax)
        and s.transfer_syntax not in transfer_syntaxes.VIDEO
    ]
    if not valid:
        pytest.skip("no compressed sample could be built (dcmtk missing)")
    pairs = [(c.sop_class_uid, c.transfer_syntax) for c in cases]
    pairs += [(s.sop_class_uid, s.transfer_syntax) for s in valid]
    profile = ts_samples.write_storescu_config(tmp_path / "profile.cfg", pairs)
    files = broken + [s.path for s in valid]
    out = storescu("127.0.0.1", server.port, server.ae_title, files, "-nh", *profile)
    log = out.stdout + out.stderr
    assert log.count("Received Store Response") == len(files), log[-3000:]

    for case in cases:
        entries = [e for e in api.placeholders() if e.sop_instance_uid == case.sop_instance_uid]
        assert entries, f"no placeholder for {case.name}"
        entry = entries[0]
        assert bad_inputs.status_matches(entry.status, case.status), (case.name, entry)
        assert entry.reason.startswith(case.reason), (case.name, entry.reason)
        assert entry.patient_id == case.patient_id
        with pytest.raises(ApiError) as missing:  # nothing was archived
            api.instance(case.sop_instance_uid)
        assert missing.value.status == 404

    for sample in valid:
        sop_uid = str(dcmread(sample.path, stop_before_pixels=True).SOPInstanceUID)
        stored = api.instance(sop_uid)
        assert stored.sop_instance_uid == sop_uid, sample.transfer_syntax
        pixels = api.frame(sop_uid, 1)  # decodes: the check refused no valid encoder output
        assert pixels.shape[:2] == (ts_samples.SIZE, ts_samples.SIZE), sample.transfer_syntax
