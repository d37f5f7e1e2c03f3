"""Transfer syntax choice in pynetdicom's acceptor negotiation (lucent.net.transport).

Where we receive, the requestor's first acceptable syntax is taken (its preference: our own
order made ``storescu +C`` decompress, or chose lossy over lossless). Where we SEND on the
context (C-GET sub-operations, the requestor taking the SCP role) our own order stands: the
requestor's first could be a syntax we cannot produce (review: every sub-operation failed)."""

from __future__ import annotations

from pynetdicom import acse, build_context

from lucent.dicom import transfer_syntaxes
from lucent.net import transport

CT = "1.2.840.10008.5.1.4.1.1.2"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


def _negotiate(roles: dict[str, tuple[bool, bool]]) -> tuple[str, bool]:
    transport.install()
    rq = build_context(CT, [JPEG_BASELINE, EXPLICIT_LE])
    rq.context_id = 1
    ac = build_context(CT, list(transfer_syntaxes.ACCEPTED))
    ac.scu_role = ac.scp_role = True
    result, _ = acse.negotiate_as_acceptor([rq], [ac], roles)
    (cx,) = result
    assert cx.result == 0x00
    return str(cx.transfer_syntax[0]), bool(cx.as_scu)


def test_where_we_receive_the_requestors_first_syntax_is_taken() -> None:
    assert _negotiate({}) == (JPEG_BASELINE, False)


def test_where_we_send_our_native_first_order_stands() -> None:
    assert _negotiate({CT: (False, True)}) == (EXPLICIT_LE, True)
