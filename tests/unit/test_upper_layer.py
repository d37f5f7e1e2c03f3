"""The fast path's upper-layer codec against pynetdicom's own PDU encoder."""

from __future__ import annotations

import struct

import pytest
from pynetdicom.pdu import A_ASSOCIATE_RQ as PynetdicomRQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
)
from pynetdicom.presentation import build_context
from pynetdicom.transport import AddressInformation

from lucent.net import upper_layer as ul


def _rq() -> bytes:
    prim = A_ASSOCIATE()
    prim.application_context_name = ul.APPLICATION_CONTEXT
    prim.calling_ae_title = "STORESCU"
    prim.called_ae_title = "LUCENT"
    prim.calling_presentation_address = AddressInformation("127.0.0.1", 1)
    prim.called_presentation_address = AddressInformation("127.0.0.1", 2)
    cx = build_context("1.2.840.10008.5.1.4.1.1.2", ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
    cx.context_id = 1
    prim.presentation_context_definition_list = [cx]
    ml = MaximumLengthNotification()
    ml.maximum_length_received = 32768
    prim.user_information = [ml]
    pdu = PynetdicomRQ()
    pdu.from_primitive(prim)
    return pdu.encode()


def test_parses_what_pynetdicom_encodes() -> None:
    req = ul.parse_associate_rq(_rq())
    assert (req.called_ae, req.calling_ae, req.max_pdu) == ("LUCENT", "STORESCU", 32768)
    assert req.contexts[0].abstract_syntax == "1.2.840.10008.5.1.4.1.1.2"
    assert req.contexts[0].transfer_syntaxes == ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]


def test_associate_ac_round_trips_through_pynetdicom() -> None:
    from pynetdicom.pdu import A_ASSOCIATE_AC

    req = ul.parse_associate_rq(_rq())
    raw = ul.associate_ac(
        req,
        [(1, ul.ACCEPTANCE, "1.2.840.10008.1.2.1")],
        max_pdu=16384,
        implementation_class_uid="1.2.3",
        implementation_version="X",
    )
    ac = A_ASSOCIATE_AC()
    ac.decode(raw)
    assert ac.presentation_context[0].result == 0
    assert ac.presentation_context[0].transfer_syntax == "1.2.840.10008.1.2.1"


def test_command_codec() -> None:
    rsp = ul.response(
        0x8001, 7, 0xA900, sop_class="1.2.3", sop_instance="4.5.6", error_comment="bad"
    )
    cmd = ul.parse_command(rsp)
    assert ul.command_uint(cmd, 0x00000100) == 0x8001
    assert ul.command_uint(cmd, 0x00000120) == 7
    assert ul.command_uint(cmd, 0x00000900) == 0xA900
    assert ul.command_uid(cmd, 0x00001000) == "4.5.6"
    (group_length,) = struct.unpack("<L", cmd[0x00000000])
    assert group_length == len(rsp) - 12


@pytest.mark.parametrize("bad", [b"", b"\x01\x00\x00\x00\x00\x04abcd", b"\x02" + b"\0" * 80])
def test_malformed_requests_are_protocol_errors(bad: bytes) -> None:
    with pytest.raises(ul.ProtocolError):
        ul.parse_associate_rq(bad)


def test_pdv_lengths_are_checked() -> None:
    with pytest.raises(ul.ProtocolError):
        ul.iter_pdvs(memoryview(struct.pack(">LBB", 100, 1, 3) + b"x"))


def test_associate_ac_returns_the_ae_title_fields_as_received() -> None:
    """PS3.8 9.3.3: the AC's called/calling AE fields are identical to the RQ's; leading
    spaces were stripped and the fields padded again (outside probe)."""
    rq = bytearray(_rq())
    rq[10:26] = b"  LUCENT        "
    rq[26:42] = b" STORESCU       "
    req = ul.parse_associate_rq(bytes(rq))
    assert (req.called_ae, req.calling_ae) == ("LUCENT", "STORESCU")
    raw = ul.associate_ac(
        req, [(1, ul.ACCEPTANCE, "1.2.840.10008.1.2.1")], max_pdu=16384,
        implementation_class_uid="1.2.3", implementation_version="X",
    )  # fmt: skip
    assert raw[10:42] == bytes(rq[10:42])


@pytest.mark.parametrize(
    ("scu", "scp", "retrieve_only"), [(0, 1, True), (1, 1, False), (1, 0, False)]
)
def test_only_an_scp_only_role_marks_a_storage_context_as_a_retrieve_one(
    scu: bool, scp: bool, retrieve_only: bool
) -> None:
    """getscu proposes its storage classes with SCU-role 0, SCP-role 1; a requestor with
    both roles may still store towards us, and storage is open to all (review)."""
    prim = A_ASSOCIATE()
    prim.application_context_name = ul.APPLICATION_CONTEXT
    prim.calling_ae_title, prim.called_ae_title = "GETSCU", "LUCENT"
    prim.calling_presentation_address = AddressInformation("127.0.0.1", 1)
    prim.called_presentation_address = AddressInformation("127.0.0.1", 2)
    cx = build_context("1.2.840.10008.5.1.4.1.1.2", ["1.2.840.10008.1.2"])
    cx.context_id = 1
    prim.presentation_context_definition_list = [cx]
    ml = MaximumLengthNotification()
    ml.maximum_length_received = 16384
    role = SCP_SCU_RoleSelectionNegotiation()
    role.sop_class_uid = "1.2.840.10008.5.1.4.1.1.2"
    role.scu_role, role.scp_role = bool(scu), bool(scp)
    prim.user_information = [ml, role]
    pdu = PynetdicomRQ()
    pdu.from_primitive(prim)
    req = ul.parse_associate_rq(pdu.encode())
    assert ("1.2.840.10008.5.1.4.1.1.2" in req.scp_role_classes) is retrieve_only
