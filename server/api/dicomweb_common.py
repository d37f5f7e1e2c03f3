"""What the DICOMweb modules share: the media types, the root URL, multipart answers.

QIDO-RS (dicomweb_qido), WADO-RS (dicomweb) and STOW-RS (dicomweb_stow) all build
absolute URLs and DICOM JSON/XML answers; one place keeps them the same.
"""

from __future__ import annotations

import io
import secrets
from collections.abc import Iterable

from fastapi import HTTPException, Request, Response

from server.api import dicomweb_accept as media

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
