"""DICOM status codes we send and read, with their meaning (PS3.4 Annex B/C, Conformance 4.2).

Statuses are values, not exceptions: the ingest path returns one and the DIMSE handler sends
it as is, so a code maps 1:1 to what the peer sees.
"""

from __future__ import annotations

SUCCESS = 0x0000
# Refused: Out of Resources (A700-A7FF) — nothing was written.
OUT_OF_RESOURCES = 0xA700
OUT_OF_RESOURCES_QUOTA = 0xA701
# Error: Data Set does not match SOP Class (A900-A9FF).
DATASET_MISMATCH = 0xA900
DATASET_MISSING_ATTRIBUTE = 0xA901
DATASET_INVALID_VALUE = 0xA902
DATASET_PIXEL_INCONSISTENT = 0xA903
DUPLICATE_REJECTED = 0xA910
# Error: Cannot understand (C000-CFFF).
CANNOT_UNDERSTAND = 0xC000
CANNOT_INFLATE = 0xC001
INVALID_ENCODING = 0xC002
UID_CONFLICT = 0xC010  # Study UID under another patient, Series UID under another study
PROCESSING_FAILURE = 0xC0FF
# Query/Retrieve (PS3.4 C.4).
QR_OUT_OF_RESOURCES_MATCHES = 0xA701
QR_OUT_OF_RESOURCES_SUBOPS = 0xA702
QR_MOVE_DESTINATION_UNKNOWN = 0xA801
QR_IDENTIFIER_MISMATCH = 0xA900
QR_UNABLE_TO_PROCESS = 0xC000
QR_CANCEL = 0xFE00
QR_SUBOPS_WARNING = 0xB000
PENDING = 0xFF00
PENDING_WARNING = 0xFF01
SOP_CLASS_NOT_SUPPORTED = 0x0122  # Refused: SOP Class not supported (PS3.7 C.4.1.2)
NOT_AUTHORIZED = 0x0124  # Refused: Not Authorized (PS3.7 C.4.1.2)


def category(status: int) -> str:
    """The status class a peer reads: success, pending, cancel, warning, failure."""
    if status == SUCCESS:
        return "success"
    if status in (PENDING, PENDING_WARNING):
        return "pending"
    if status == QR_CANCEL:
        return "cancel"
    if status == 0x0001 or 0xB000 <= status <= 0xBFFF:
        return "warning"
    return "failure"


def error_comment(text: str) -> str:
    """An Error Comment (0000,0902) as the command set may carry it: LO in the default
    repertoire, at most 64 characters (PS3.7 E.1, PS3.5 6.1.2.1); our reasons quote values
    ("é") and use "×", sent as "?"."""
    return text.encode("ascii", "replace").decode("ascii")[:64]


#: Meanings of single codes: PS3.7 C (general statuses of the DIMSE services) and PS3.4
#: B.2.3 (Storage Service Class warnings). Ranges are in :func:`meaning`.
MEANINGS: dict[int, str] = {
    SUCCESS: "Success",
    0x0001: "Warning: requested optional attributes are not supported",
    0x0105: "Failure: No such attribute",
    0x0106: "Failure: Invalid attribute value",
    0x0107: "Warning: Attribute list error",
    0x0110: "Failure: Processing failure",
    0x0111: "Failure: Duplicate SOP Instance",
    0x0112: "Failure: No such object instance",
    0x0113: "Failure: No such event type",
    0x0114: "Failure: No such argument",
    0x0115: "Failure: Invalid argument value",
    0x0116: "Warning: Attribute value out of range",
    0x0117: "Failure: Invalid object instance",
    0x0118: "Failure: No such SOP Class",
    0x0119: "Failure: Class-instance conflict",
    0x0120: "Failure: Missing attribute",
    0x0121: "Failure: Missing attribute value",
    SOP_CLASS_NOT_SUPPORTED: "Refused: SOP Class not supported",
    0x0123: "Failure: No such action",
    NOT_AUTHORIZED: "Refused: Not authorized",
    0x0210: "Failure: Duplicate invocation",
    0x0211: "Failure: Unrecognized operation",
    0x0212: "Failure: Mistyped argument",
    0x0213: "Failure: Resource limitation",
    QR_CANCEL: "Cancel",
    0xB000: "Warning: Coercion of data elements",
    0xB006: "Warning: Elements discarded",
    0xB007: "Warning: Data Set does not match SOP Class",
    PENDING: "Pending",
    PENDING_WARNING: "Pending: one or more optional keys were not supported",
}


def meaning(code: int) -> str:
    """What a C-STORE (or general DIMSE) status means, for a person (PS3.4 B.2.3, PS3.7 C):
    a peer's failure without an Error Comment was recorded with an empty reason and the
    job said only "0xA700" (outside probe 26). The same words whichever side reads them."""
    if code in MEANINGS:
        return MEANINGS[code]
    if 0xA700 <= code <= 0xA7FF:
        return "Refused: Out of resources"
    if 0xA900 <= code <= 0xA9FF:
        return "Error: Data Set does not match SOP Class"
    if 0xC000 <= code <= 0xCFFF:
        return "Error: Cannot understand"
    if 0xB000 <= code <= 0xBFFF:
        return "Warning"
    return "Failure: unknown status"


def describe(code: int, comment: str = "") -> str:
    """``meaning (0xCODE)``, and the peer's Error Comment after it when it sent one:
    "Refused: Out of resources (0xA700): disk full"."""
    text = f"{meaning(code)} (0x{code:04X})"
    comment = comment.strip()
    return f"{text}: {comment}" if comment else text
