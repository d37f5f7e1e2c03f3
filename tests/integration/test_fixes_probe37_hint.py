"""A failed retrieve's hint names the cause when it is known (outside tester probe 37).

"nothing arrived: the PACS may not hold this study, or cannot open an association to <AE>"
was appended to every failure with nothing counted, also when dcmqrscp answered A801 (it
holds the study but does not know our AE title) and when Orthanc answered C000 because our
own Store SCP refused an instance as non-conformant.
"""

from __future__ import annotations

from pathlib import Path

from pydicom.uid import CTImageStorage, generate_uid

from lucent.api import schemas
from tests.data import samples
from tests.support.lucent import LucentServer
from tests.support.peers import DcmQrScp, Orthanc, free_port

GENERIC = "the PACS may not hold"


def test_move_destination_unknown_says_to_register_our_ae(tmp_path: Path) -> None:
    port, second = free_port(), free_port()
    server = LucentServer(
        tmp_path / "lucent",
        workers=1,
        pools=[
            {"name": "DEFAULT", "ae_title": "LUCENT", "port": port},
            {"name": "SECOND", "ae_title": "LUCENTB", "port": second},
        ],
    )
    # dcmqrscp knows LUCENT as a move destination, not LUCENTB
    qr = DcmQrScp(peers={"lucent": ("LUCENT", "127.0.0.1", port)}, workdir=tmp_path / "qr")
    study = generate_uid()
    ds = samples.make_instance(CTImageStorage, patient_id="PAT-A801", study_uid=study)
    with server, qr:
        qr.add_files([samples.write(ds, tmp_path / "a.dcm")])
        api = server.client()
        node = api.add_node(
            schemas.RemoteNodeIn(
                name="dcmqrscp", ae_title=qr.aet, host="127.0.0.1", port=qr.port, timeout=5
            )
        )
        api.set_node_options(node.id, retries=0)
        job = api.wait_job(api.retrieve(node.id, study, pool="SECOND").id, timeout=60)
        api.close()
    assert job.state == "failed" and job.status == 0xA801, job
    assert "does not know our AE title LUCENTB" in job.message, job.message
    assert "register LUCENTB on the PACS" in job.message and str(second) in job.message
    assert GENERIC not in job.message


def test_refused_instance_is_named_instead_of_the_generic_hint(tmp_path: Path) -> None:
    """Orthanc answers C000 when our Store SCP refused a sub-operation (and stops there):
    the PACS holds the study and reached us, so the generic hint misled; asked twice, as
    clinic IT does after a failure."""
    port = free_port()
    server = LucentServer(
        tmp_path / "lucent",
        workers=1,
        pools=[{"name": "DEFAULT", "ae_title": "LUCENT", "port": port}],
        settings={"pacs": {"retry_backoff_seconds": 0.2}},
    )
    orthanc = Orthanc(modalities={"lucent": ["LUCENT", "127.0.0.1", port]}, workdir=tmp_path / "o")
    study, series = generate_uid(), generate_uid()
    good = samples.make_instance(CTImageStorage, patient_id="PAT-RH", study_uid=study,
                                 series_uid=series, instance_number=1)  # fmt: skip
    bad = samples.make_instance(CTImageStorage, patient_id="PAT-RH", study_uid=study,
                                series_uid=series, instance_number=2)  # fmt: skip
    bad.PixelData = bad.PixelData[: len(bad.PixelData) // 2]  # shorter than Rows x Columns
    with server, orthanc:
        for i, ds in enumerate((good, bad)):
            orthanc.upload(samples.write(ds, tmp_path / f"{i}.dcm"))
        api = server.client()
        node = api.add_node(
            schemas.RemoteNodeIn(
                name="orthanc", ae_title=orthanc.aet, host="127.0.0.1", port=orthanc.port,
                timeout=5,
            )
        )  # fmt: skip
        jobs = [api.wait_job(api.retrieve(node.id, study).id, timeout=90) for _ in range(2)]
        api.close()
    for job in jobs:
        assert job.state in ("failed", "partial"), job
        assert "refused by this archive as non-conformant data" in job.message, job.message
        assert GENERIC not in job.message, job.message
