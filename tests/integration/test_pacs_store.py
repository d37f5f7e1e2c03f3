"""C-STORE SCU on our own association against DCMTK ``storescp`` (Conformance 4.2.4).

The send path writes the archived data set bytes as they are, cut into P-DATA fragments of
the peer's maximum PDU length: a bit-preserving ``storescp`` with a small PDU shows that the
bytes arrive unchanged. A ``storescp`` that takes only Implicit VR Little Endian makes us
transcode (same SOP Instance UID). Load failures and a stopped send stay per instance.
"""

from __future__ import annotations

import threading
from pathlib import Path

from pydicom import dcmread
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from lucent.net import scu
from tests.data import samples
from tests.support.peers import StoreScp


def _series(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [
        samples.write(
            samples.make_instance(CTImageStorage, patient_id="STORE-1", instance_number=i + 1),
            folder / f"ct{i}.dcm",
        )
        for i in range(n)
    ]


def _outgoing(path: Path, load: object = None) -> scu.Outgoing:
    ds = dcmread(path, stop_before_pixels=True)
    return scu.Outgoing(
        str(ds.SOPClassUID),
        str(ds.SOPInstanceUID),
        str(ds.file_meta.TransferSyntaxUID),
        load if callable(load) else path.read_bytes,  # type: ignore[arg-type]
    )


def _data_set_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    offset = scu._dataset_offset(raw)
    assert offset is not None
    return raw[offset:]


def test_stored_bytes_arrive_unchanged_through_a_small_pdu(tmp_path: Path) -> None:
    files = _series(tmp_path / "src", 3)
    with StoreScp(
        tmp_path / "in", aet="BITS", max_pdu=4096, bit_preserving=True, workdir=tmp_path / "p"
    ) as peer:
        outcomes = scu.store(scu.Peer("BITS", peer.host, peer.port), [_outgoing(f) for f in files])
        received = peer.files()
    assert [o.status for o in outcomes] == [0, 0, 0]
    assert {o.sent_transfer_syntax for o in outcomes} == {ExplicitVRLittleEndian}
    assert not any(o.transcoded for o in outcomes)
    by_uid = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in received}
    for f, o in zip(files, outcomes, strict=True):
        assert _data_set_bytes(by_uid[o.sop_instance_uid]) == _data_set_bytes(f)


def test_peer_that_takes_only_implicit_gets_a_transcoded_copy(tmp_path: Path) -> None:
    [path] = _series(tmp_path / "src", 1)
    with StoreScp(
        tmp_path / "in", aet="IMPLICIT", extra_args=["+xi"], workdir=tmp_path / "p"
    ) as peer:
        [outcome] = scu.store(scu.Peer("IMPLICIT", peer.host, peer.port), [_outgoing(path)])
        [received] = peer.files()
    assert outcome.status == 0 and outcome.transcoded
    assert outcome.sent_transfer_syntax == ImplicitVRLittleEndian
    got, sent = dcmread(received), dcmread(path)
    assert got.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    assert got.SOPInstanceUID == sent.SOPInstanceUID
    assert got.PixelData == sent.PixelData and got.PatientID == sent.PatientID


def test_unreadable_instance_fails_alone(tmp_path: Path) -> None:
    files = _series(tmp_path / "src", 3)

    def broken() -> bytes:
        raise OSError("archive object missing")

    items = [_outgoing(files[0]), _outgoing(files[1], broken), _outgoing(files[2])]
    with StoreScp(tmp_path / "in", aet="STORESCP", workdir=tmp_path / "p") as peer:
        outcomes = scu.store(scu.Peer("STORESCP", peer.host, peer.port), items)
        count = len(peer.files())
    assert [o.status for o in outcomes] == [0, None, 0]
    assert "cannot read: archive object missing" in outcomes[1].message
    assert count == 2


def test_cancel_stops_after_the_instance_on_the_wire(tmp_path: Path) -> None:
    files = _series(tmp_path / "src", 6)
    cancel = threading.Event()
    with StoreScp(tmp_path / "in", aet="STORESCP", workdir=tmp_path / "p") as peer:
        outcomes = scu.store(
            scu.Peer("STORESCP", peer.host, peer.port),
            [_outgoing(f) for f in files],
            on_result=lambda o: cancel.set(),
            cancel=cancel,
        )
        count = len(peer.files())
    assert len(outcomes) == 1 and outcomes[0].ok and count == 1
