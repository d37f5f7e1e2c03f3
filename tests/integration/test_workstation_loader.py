"""The workstation's series loader against a real server: a series that is not one volume
(4D perfusion source images: positions repeat over time) is answered 409 by the volume
route, and the loader reads it file by file instead of failing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.uid import generate_uid

from lucent.api.client import LucentClient
from tests.data import samples
from tests.integration.dicom_io import storescu
from tests.support.lucent import LucentServer
from workstation.model import loader

CT = "1.2.840.10008.5.1.4.1.1.2"


def test_a_dynamic_series_loads_file_by_file(
    server: LucentServer, api: LucentClient, tmp_path: Path
) -> None:
    study, series = generate_uid(), generate_uid()
    files, values = [], {}
    for t in range(2):
        for z in range(3):
            ds = samples.make_instance(
                CT, patient_id="WS-4D", study_uid=study, series_uid=series,
                instance_number=t * 3 + z + 1, rows=16, cols=16,
            )  # fmt: skip
            ds.ImagePositionPatient = [0.0, 0.0, 5.0 * z]
            ds.AcquisitionTime = f"1200{t:02d}"
            pixels = np.full((16, 16), 100 * t + z, np.int16)
            ds.PixelData = pixels.tobytes()
            values[ds.SOPInstanceUID] = 100 * t + z
            files.append(samples.write(ds, tmp_path / f"{t}-{z}.dcm"))
    assert storescu("127.0.0.1", server.port, server.ae_title, files).returncode == 0
    (se,) = api.series(study)
    data = loader.describe(api, se)
    loader.load(api, data)
    assert len(data.frames) == 6
    for k, s in enumerate(data.slices):
        assert int(data.frames[k].stored[0, 0]) == values[s.sop_instance_uid]
