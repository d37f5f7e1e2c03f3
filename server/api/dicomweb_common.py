"""What the DICOMweb modules share: the media types, the root URL, multipart answers, and
the DICOM JSON encoding of a data set (and the values the PS3.19 XML writer sends).

QIDO-RS (dicomweb_qido), WADO-RS (dicomweb) and STOW-RS (dicomweb_stow) all build
absolute URLs and DICOM JSON/XML answers; one place keeps them the same.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import secrets
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from fastapi import HTTPException, Request, Response
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import AMBIGUOUS_VR, BYTES_VR

from server.api import dicomweb_accept as media

log = logging.getLogger("lucent.dicomweb")

DICOM_JSON = "application/dicom+json"
DICOM_XML = "application/dicom+xml"


def base(request: Request) -> str:
    """The DICOMweb root for the absolute URLs we hand out (RetrieveURL, BulkDataURI).

    dicomweb-client (requests) sends ``Host: 127.0.0.1`` without the port even when it
    talks to port 8042, so every link we built pointed at port 80. When the Host header
    names the very address we listen on and no port, the port we listen on is added; a
    name a proxy put there (another host) is left as it is."""
    url = request.base_url
    server = request.scope.get("server")
    if server and url.port is None and url.hostname == server[0]:
        default = 443 if url.scheme == "https" else 80
        if server[1] and server[1] != default:
            url = url.replace(port=server[1])
    return str(url).rstrip("/") + "/dicom-web"


def multipart(
    parts: Iterable[tuple[bytes, str]], part_type: str, locations: Iterable[str] = ()
) -> Response:
    """multipart/related (RFC 2387) of (payload, part Content-Type) pairs; ``locations``
    gives parts a Content-Location (PS3.18 10.4.3.3.5: bulk data names its BulkDataURI)."""
    boundary = secrets.token_hex(16)
    body = io.BytesIO()
    where = iter(locations)
    for payload, content_type in parts:
        location = next(where, None)
        head = f"--{boundary}\r\nContent-Type: {content_type}\r\n"
        if location:
            head += f"Content-Location: {location}\r\n"
        body.write(f"{head}\r\n".encode())
        body.write(payload)
        body.write(b"\r\n")
    body.write(f"--{boundary}--\r\n".encode())
    return Response(
        body.getvalue(),
        media_type=f'multipart/related; type="{part_type}"; boundary={boundary}',
    )


def accept(request: Request) -> str | None:
    """What the client accepts: the ``accept`` query parameter when given (PS3.18 8.3.3.1:
    for hyperlinks, where no Accept header can be set; its types are the more specific
    choice), else the Accept header. It was refused by QIDO-RS as an unknown attribute
    and ignored by WADO-RS (outside probe)."""
    given = request.query_params.getlist("accept")
    return ", ".join(given) if given else request.headers.get("accept")


def metadata_media(request: Request) -> str:
    """The media type of a QIDO-RS or metadata answer (PS3.18 8.7.5, 10.6.3.2): DICOM JSON
    (application/dicom+json, application/json or any) or PS3.19 XML, one part per data
    set (multipart/related; type="application/dicom+xml"), both required of an origin
    server. Anything else is 406; it used to be answered with JSON whatever was asked."""
    for r in media.parse(accept(request)):
        if r.media in (DICOM_JSON, "application/json", "application/*", "*/*", "*"):
            return DICOM_JSON
        if r.media in ("multipart/related", "multipart/*") and r.part_type in ("", DICOM_XML):
            return DICOM_XML
    raise HTTPException(
        406,
        "search results and metadata are available as application/dicom+json or "
        'multipart/related; type="application/dicom+xml"',
    )


def warning(text: str) -> str:
    """A Warning header value (RFC 7234 5.5) that says ``text``: on one line and without
    double quotes (a decoder's reason holds both), at most 300 characters."""
    flat = " ".join(str(text).split()).replace('"', "'")
    return f'299 lucent "{flat[:300]}"'


# ------------------------------------------------------------------------ DICOM JSON
#: PS3.18 F.2.2: the Person Name component groups, in PN order.
PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")
#: VRs whose value goes out as InlineBinary (F.2.7); "US or SS" is a number.
BINARY_VRS = frozenset(str(vr) for vr in BYTES_VR | AMBIGUOUS_VR) - {"US or SS"}
_DECIMAL_VRS = frozenset({"DS", "IS"})
_FLOAT_VRS = frozenset({"FL", "FD"})
#: The ambiguous ones here when pydicom resolved them to numbers rather than bytes.
_INT_VRS = frozenset({"SS", "US", "SL", "UL", "SV", "UV", "US or SS", "US or SS or OW", "US or OW"})


def non_finite(value: float) -> str:
    """The text of a NaN or infinite FL/FD value: "NaN", "Infinity" or "-Infinity".

    RFC 8259 section 6 has no number for them, and PS3.18 F.2.3 no rule: Python wrote bare
    NaN/Infinity tokens, which strict parsers (JSON.parse) refuse, so the whole answer was
    unreadable (probe 49). The JavaScript names are what JSON.parse's Number(), Java's
    Double.parseDouble and Python's float() all read back; the XML writer sends the same."""
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def _float(value: Any) -> float | str:
    number = float(value)
    return number if math.isfinite(number) else non_finite(number)


def _decimal(value: Any, vr: str) -> int | float | str | None:
    """An IS or DS value as a JSON Number, or as the String it was stored as when it is no
    finite number: PS3.18 Table F.2.3-1 gives IS and DS "Number or String" (the note: a
    String preserves the original). A DS "1e400" (valid, beyond a double) and values that
    are no number at all ("abc", IS "x1", accepted as stored) failed the whole answer with
    500, or wrote Infinity; each is now its own stored text and the rest is served."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float | Decimal) and math.isfinite(value):
        return float(value) if vr == "DS" else _integral(float(value), str(value))
    text = str(getattr(value, "original_string", None) or value).strip()
    if not text:
        return None
    try:
        number = float(text)
    except ValueError:
        return text
    if not math.isfinite(number):
        return text
    return number if vr == "DS" else _integral(number, text)


def _integral(number: float, text: str) -> int | str:
    return int(number) if number.is_integer() else text.strip()


def _person_name(value: Any) -> dict[str, str] | None:
    """PS3.18 F.2.2: the non-empty component groups of one PN value (None when all are
    empty). pydicom indexed the first group of an empty value: IndexError, 500."""
    groups = getattr(value, "components", None)
    if groups is None:
        groups = str(value).split("=")
    named = {name: str(text) for name, text in zip(PN_GROUPS, groups, strict=False) if text}
    return named or None


def _one(vr: str, value: Any) -> Any:
    """One value of a multi-valued (or single) attribute as JSON. An empty value inside a
    multi-valued attribute is null (PS3.18 F.2.5: "A\\\\C" is ["A", null, "C"])."""
    if value is None or (isinstance(value, str) and value == ""):
        return None
    if vr == "PN":
        return _person_name(value)
    if vr == "AT":
        return f"{int(value):08X}"
    if vr in _DECIMAL_VRS:
        return _decimal(value, vr)
    if vr in _FLOAT_VRS:
        return _float(value)
    if vr in _INT_VRS:
        return int(value)
    return str(value)


def values(elem: DataElement) -> list[Any]:
    """The JSON values of an attribute that is neither a sequence nor binary: one per
    DICOM value, empty ones null; [] when the attribute is empty. Used by the XML writer
    too, so both answers hold the same values."""
    raw = elem.value
    if raw is None or (isinstance(raw, str | bytes) and not raw):
        return []
    items = list(raw) if isinstance(raw, MultiValue | list | tuple) else [raw]
    if elem.VR == "PN" and len(items) == 1 and not str(items[0]):
        return []
    return [_one(str(elem.VR), v) for v in items]


def element_json(elem: DataElement) -> dict[str, Any]:
    """One attribute object of the DICOM JSON Model (PS3.18 F.2.2-F.2.7)."""
    vr = str(elem.VR)
    out: dict[str, Any] = {"vr": vr}
    if vr == "SQ":
        out["Value"] = [to_json(item) for item in elem.value or []]
        return out
    if vr in BINARY_VRS and isinstance(elem.value, bytes | bytearray):
        if elem.value:
            out["InlineBinary"] = base64.b64encode(elem.value).decode()
        return out
    found = values(elem)
    if found:
        out["Value"] = found
    return out


def to_json(ds: Dataset) -> dict[str, Any]:
    """A data set as a DICOM JSON Model object, attribute by attribute in ascending tag
    order (PS3.18 F.2.2; the STOW-RS response listed 00081199 before 00081198), group
    lengths left out (F.2.2).

    pydicom's ``to_json_dict`` fails the whole data set on one value it cannot convert: an
    empty value in a DS/IS/PN list, or a DS "abc" that was accepted as stored, made WADO-RS
    metadata of the instance and of its whole study, and QIDO with includefield, answer
    500 (probe 49). Each attribute is encoded on its own here; one that cannot be read at
    all keeps its VR without a value, and is logged."""
    out: dict[str, Any] = {}
    for tag in sorted(ds.keys()):
        if tag.element == 0:
            continue
        key = f"{tag:08X}"
        try:
            out[key] = element_json(ds[tag])
        except Exception as exc:
            log.warning("DICOM JSON: attribute %s sent without its value: %s", key, exc)
            out[key] = {"vr": _raw_vr(ds, tag)}
    return out


def _raw_vr(ds: Dataset, tag: Any) -> str:
    try:
        return str(ds.get_item(tag).VR or "UN")
    except Exception:
        return "UN"


def json_body(items: Any) -> str:
    """The text of a DICOM JSON answer: valid JSON always (RFC 8259: no NaN or Infinity
    token; ``to_json`` turns those into strings, and a value that slipped through is an
    error here rather than a body strict parsers refuse)."""
    return json.dumps(items, allow_nan=False)
