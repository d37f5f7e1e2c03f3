"""C-STORE SCU on our own association against DCMTK ``storescp`` (Conformance 4.2.4).

The send path writes the archived data set bytes as they are, cut into P-DATA fragments of
the peer's maximum PDU length: a bit-preserving ``storescp`` with a small PDU shows that the
bytes arrive unchanged. A ``storescp`` that takes only Implicit VR Little Endian makes us
transcode (same SOP Instance UID). Load failures and a stopped send stay per instance; a
silent port and an untrusted TLS peer are explained (TLS runs on the same association).
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from lucent.net import scu
from tests.data import samples
from tests.support.certs import Authority
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


def test_silent_port_is_a_timeout_with_the_address(tmp_path: Path) -> None:
    [path] = _series(tmp_path / "src", 1)
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen(4)
        peer = scu.Peer("MUTE", "127.0.0.1", mute.getsockname()[1], timeout=1.0)
        with pytest.raises(scu.AssociationError) as err:
            scu.store(peer, [_outgoing(path)])
    assert err.value.kind == "timeout" and "within 1 s" in err.value.message


def test_tls_peer_we_do_not_trust_is_explained_and_a_trusted_one_is_served(
    tmp_path: Path,
) -> None:
    ours = Authority(tmp_path / "pki")
    client = ours.issue("client", "lucent.test")
    trusted = ours.issue("pacs", "pacs.test")
    stranger = Authority(tmp_path / "stranger", "Stranger CA").issue("evil", "evil.test")
    files = _series(tmp_path / "src", 2)
    tls = {"tls": True, "tls_ca_file": str(ours.ca_file), "tls_cert": str(client.cert),
           "tls_key": str(client.key)}  # fmt: skip
    with StoreScp(
        tmp_path / "in", aet="TLSPACS", workdir=tmp_path / "p",
        extra_args=["+tls", str(trusted.key), str(trusted.cert), "+cf", str(ours.ca_file)],
    ) as peer:  # fmt: skip
        outcomes = scu.store(
            scu.Peer("TLSPACS", peer.host, peer.port, **tls),  # type: ignore[arg-type]
            [_outgoing(f) for f in files],
        )
        assert [o.status for o in outcomes] == [0, 0] and len(peer.files()) == 2
    with StoreScp(
        tmp_path / "in2", aet="EVIL", workdir=tmp_path / "p2",
        extra_args=["+tls", str(stranger.key), str(stranger.cert), "-ic"],
    ) as evil:  # fmt: skip
        with pytest.raises(scu.AssociationError) as err:
            scu.store(
                scu.Peer("EVIL", evil.host, evil.port, **tls),  # type: ignore[arg-type]
                [_outgoing(files[0])],
            )
        assert not evil.files()
    assert err.value.kind == "tls" and "not trusted" in err.value.message
