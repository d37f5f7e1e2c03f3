"""QIDO-RS (PS3.18 10.6): search for studies, series and instances under /dicom-web.

A search is the C-FIND identifier (server.dimse.identifiers) run against the index, so
QIDO-RS and C-FIND match alike; what the index does not keep is checked on each answer or
named in a Warning.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import re
from collections.abc import Callable, Iterable
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydicom import dcmread
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from sqlalchemy import select

from lucent.dicom import transcode
from server.api import dicomweb_common as common
from server.api import dicomweb_dates, dicomweb_fields, dicomweb_xml
from server.api.archive_routes import ctx_of
from server.api.auth import Caller, get_caller, readable_pools
from server.api.dicomweb_common import DICOM_JSON, DICOM_XML
from server.api.params import MAX_OFFSET, single_uid, uid_list
from server.context import ServerContext
from server.dimse import identifiers
from server.index import queries
from server.index.models import Instance

#: Included in dicomweb.router, ahead of the WADO-RS routes.
router = APIRouter(prefix="/dicom-web", tags=["DICOMweb"])

# Default return attributes per level (PS3.18 Table 6.7.1-2, the parts we index).
# PS3.18 Tables 10.6.3-3..5 (required return attributes) too: InstanceAvailability at study
# and instance level, BitsAllocated for instances, the Performed Procedure Step start and the
# Request Attribute Sequence for series, Timezone Offset From UTC at every level; what the
# index does not keep is zero-length.
_STUDY_KEYS = (
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ModalitiesInStudy",
    "ReferringPhysicianName",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyID",
    "StudyDescription",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
    "InstanceAvailability",
    "TimezoneOffsetFromUTC",
)
_SERIES_KEYS = (
    "Modality",
    "SeriesDescription",
    "SeriesInstanceUID",
    "SeriesNumber",
    "NumberOfSeriesRelatedInstances",
    "StudyInstanceUID",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
    "RequestAttributesSequence",
    "TimezoneOffsetFromUTC",
)
_INSTANCE_KEYS = (
    "SOPClassUID",
    "SOPInstanceUID",
    "InstanceNumber",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "BitsAllocated",
    "InstanceAvailability",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "TimezoneOffsetFromUTC",
)


#: Most index rows a QIDO with a key checked per answer (not in SQL) looks through.
_SCAN = 10000


def _warning(text: str) -> str:
    """A Warning header value (RFC 7234 5.5, as PS3.18 8.3.4 uses for QIDO notices)."""
    return f'299 lucent "{text}"'


#: Most results one QIDO answer holds: a larger ``limit`` is this (PS3.18 8.3.4.4 lets the
#: origin server return fewer than asked, with the Warning that more can be requested).
MAX_LIMIT = 10000


def _identifier(
    request: Request, keys: Iterable[str], level: str
) -> tuple[Dataset, dict[str, Any]]:
    """The C-FIND-style identifier and options of a QIDO request.

    An attribute that is not a DICOM attribute is 400; one we cannot match on is ignored
    and named in a Warning (both used to be ignored silently, so ``PatientSex=F`` answered
    every study as if it matched). UID lists may be comma- or backslash-separated.

    A matching key given twice (``ModalitiesInStudy=MR&ModalitiesInStudy=CT``, or by
    keyword and by tag) is 400 naming it: PS3.18 8.3.4.1 gives each key one value, and we
    used to keep the last one silently. A list goes in that one value (UIDs and modalities
    comma-separated). ``limit``, ``offset`` and ``fuzzymatching`` may appear once too."""
    ident = Dataset()
    ident.QueryRetrieveLevel = level
    for k in keys:
        setattr(ident, k, None)
    opts: dict[str, Any] = {
        "limit": MAX_LIMIT,
        "offset": 0,
        "fuzzy": False,
        "ignored": [],
        "unindexed": [],
        "included": [],
        "all": False,
    }
    seen: dict[str, str] = {}

    def once(name: str, param: str) -> None:
        if name in seen:
            raise HTTPException(
                400, f"query key {param} is given more than once (as {seen[name]} before)"
            )
        seen[name] = param

    includes: list[str] = []
    for param, value in request.query_params.multi_items():
        p = param.lower()
        if p in ("limit", "offset", "fuzzymatching"):
            once(p, param)
        if p == "limit":
            opts["limit"] = min(_count(param, value), MAX_LIMIT)
        elif p == "offset":
            opts["offset"] = min(_count(param, value), MAX_OFFSET)
        elif p == "fuzzymatching":
            opts["fuzzy"] = _boolean(param, value)
        elif p == "includefield":
            includes.append(value)
        elif p in ("accept", "charset"):
            # PS3.18 8.3.3: content negotiation (accept: common.accept); answers are
            # UTF-8 whatever charset asks, the one character set DICOM JSON/XML allow here
            continue
        elif "." in param and all(dicomweb_fields.keyword(k) for k in param.split(".")):
            opts["ignored"].append(param)  # sequence matching (PS3.18 8.3.4.1): not supported
        else:
            kw = dicomweb_fields.keyword(param)
            if kw is None:
                raise HTTPException(400, f"unknown query attribute {param}")
            once(kw, param)
            if dictionary_VR(kw) == "UI":
                value = value.replace(",", "\\")
            dicomweb_dates.check(param, dictionary_VR(kw), value)  # DA/TM/DT: 400 if invalid
            try:
                setattr(ident, kw, value)
            except (AttributeError, ValueError, TypeError) as exc:
                raise HTTPException(400, f"invalid value for {param}: {value[:64]}") from exc
            probe = Dataset()
            setattr(probe, kw, getattr(ident, kw))
            matched = identifiers.to_filter(probe) != identifiers.to_filter(Dataset())
            if value not in ("", "*") and not matched:
                opts["unindexed"].append((param, kw))
    included, opts["all"] = dicomweb_fields.parse(includes)
    if opts["all"]:
        included += [k for k in dicomweb_fields.ALL[level] if k not in included]
    for kw in included:
        if kw not in ident:  # a matching key stays as it is
            with contextlib.suppress(AttributeError, ValueError, TypeError):
                setattr(ident, kw, None)
    # a default key asked for as well is filled like any included one, but never left out
    opts["included"] = included
    opts["unanswerable"] = dicomweb_fields.unsupported(level, included, keys)
    return ident, opts


def _boolean(param: str, value: str) -> bool:
    """PS3.18 8.3.4.2: ``fuzzymatching`` is ``true`` or ``false``. Any other value was
    taken as false (``maybe``: 200 and exact matching, outside probe 57): 400, as a bad
    ``limit`` is."""
    text = value.strip().lower()
    if text not in ("true", "false"):
        raise HTTPException(400, f"{param} must be true or false, not {value[:32]!r}")
    return text == "true"


def _count(param: str, value: str) -> int:
    """PS3.18 8.3.4.4: ``limit`` and ``offset`` are non-negative integers. A negative or
    non-integer value is 400 (-1 used to mean "everything", 0 "one"). ``limit=0`` is taken
    as the standard writes it, at most zero results: an empty answer, with the Warning that
    more can be requested when anything matches."""
    digits = value.strip()
    if not re.fullmatch(r"[0-9]+", digits):
        raise HTTPException(400, f"{param} must be a non-negative whole number, not {value[:32]!r}")
    return int(digits) if len(digits) <= 18 else 10**18  # beyond any archive: capped anyway


def _qido(request: Request, level: str, keys: tuple[str, ...], **fixed: str) -> Response:
    ctx = ctx_of(request)
    answer_as = common.metadata_media(request)  # 406 before any search
    ident, opts = _identifier(request, keys, level)
    for kw, value in fixed.items():  # UIDs from the path: one object each
        setattr(ident, kw, single_uid(value, kw))
    f = identifiers.to_filter(ident, case_insensitive_names=opts["fuzzy"])
    # UID-list query keys: empty entries dropped (a list of blanks is no restriction).
    f = dataclasses.replace(
        f,
        study_uid=uid_list(f.study_uid),
        series_uid=uid_list(f.series_uid),
        sop_instance_uid=uid_list(f.sop_instance_uid),
    )
    if (allowed := readable_pools(request)) is not None:  # accounts: pools the caller may read
        f = dataclasses.replace(f, pools=allowed)
    # Keys the index does not match: checked on each answer where we keep the value
    # (PatientSex, BodyPartExamined...), else named in a Warning (PS3.18 8.3.4.1).
    keep, unsupported = identifiers.extra_matching(ident)
    opts["ignored"] += [p for p, kw in opts["unindexed"] if kw in unsupported]
    checked = any(kw not in unsupported for _, kw in opts["unindexed"])
    want = opts["offset"] + opts["limit"] + 1
    with ctx.Session() as db:
        if checked:
            matches = [m for m in queries.find(db, level, f, limit=_SCAN) if keep(m)][:want]
        else:
            matches = queries.find(db, level, f, limit=want)
    warnings = []
    if opts["ignored"]:
        names = ", ".join(opts["ignored"])
        warnings.append(_warning(f"The following attributes are not supported: {names}"))
    if opts["unanswerable"]:  # PS3.18 8.3.4.3: included attributes we leave out
        names = ", ".join(opts["unanswerable"])
        warnings.append(
            _warning(f"The following includefield attributes are not supported: {names}")
        )
    if len(matches) > opts["offset"] + opts["limit"]:  # PS3.18 8.3.4.4: tell the client
        matches = matches[: opts["offset"] + opts["limit"]]
        warnings.append(_warning("There are additional results that can be requested"))
    base = common.base(request)
    out = []
    for m in matches[opts["offset"] :]:
        ds = identifiers.response(ident, m, ctx.settings.pools[0].ae_title)
        del ds.QueryRetrieveLevel
        read = _reader(ctx, m)
        dicomweb_fields.complete(ds, m, opts["included"], opts["all"], read, keys)
        url = f"{base}/studies/{m.study.study_uid}" if m.study else base
        if m.series is not None:
            url += f"/series/{m.series.series_uid}"
        if m.instance is not None:
            url += f"/instances/{m.instance.sop_instance_uid}"
        ds.RetrieveURL = url
        out.append(ds)
    headers = {"Warning": ", ".join(warnings)} if warnings else None
    return _datasets(out, answer_as, headers)


def _reader(ctx: ServerContext, m: queries.Match) -> Callable[[], Dataset | None]:
    """Reads the archived data set (no pixels) of an instance match, or of a series
    match's first instance (for its series-level values), when asked to."""

    def read() -> Dataset | None:
        inst = m.instance
        if inst is None and m.series is not None:
            inst = _first_instance(ctx, m.series.id)
        if inst is None:
            return None
        ds = dcmread(io.BytesIO(ctx.metadata_bytes(inst)), stop_before_pixels=True)
        # included OW/OF/... values go out as InlineBinary, which has no transfer syntax:
        # little endian words (PS3.18 F.2.7), as in WADO-RS metadata
        with contextlib.suppress(ValueError):
            transcode.to_little_endian(ds)
        return ds

    return read


def _first_instance(ctx: ServerContext, series_pk: int) -> Instance | None:
    """The instance of a series that stands for it (lowest Instance Number): the
    patient, study and series attributes of its data set are the series' own."""
    stmt = (
        select(Instance)
        .where(Instance.series_pk == series_pk)
        .order_by(Instance.instance_number, Instance.id)
        .limit(1)
    )
    with ctx.Session() as db:
        return db.scalars(stmt).first()


def _datasets(
    items: list[Dataset], answer_as: str, headers: dict[str, str] | None = None
) -> Response:
    """Data sets as one DICOM JSON array, or as multipart/related XML, a part each.

    No result as XML is 204 No Content (PS3.18 2024d Table 10.6.3-1: "the search completed
    successfully, but there were zero results"): a multipart/related body needs at least
    one part (RFC 2046 5.1.1), and the empty one we sent is no valid multipart. As JSON it
    stays 200 with an empty array, a valid DICOM JSON answer that clients and our own
    tests read (dicomweb-client takes either); the Warning headers go with both."""
    if answer_as == DICOM_XML and not items:
        return Response(status_code=204, headers=headers)
    if answer_as == DICOM_XML:
        response = common.multipart(
            ((dicomweb_xml.to_xml(ds), DICOM_XML) for ds in items), DICOM_XML
        )
        response.headers.update(headers or {})
        return response
    body = common.json_body([common.to_json(ds) for ds in items])
    return Response(body, media_type=DICOM_JSON, headers=headers)


@router.get("/studies")
def qido_studies(request: Request, _: Caller = Depends(get_caller)) -> Response:
    return _qido(request, "STUDY", _STUDY_KEYS)


@router.get("/series")
def qido_all_series(request: Request, _: Caller = Depends(get_caller)) -> Response:
    return _qido(request, "SERIES", _SERIES_KEYS)


@router.get("/studies/{study}/series")
def qido_series(study: str, request: Request, _: Caller = Depends(get_caller)) -> Response:
    return _qido(request, "SERIES", _SERIES_KEYS, StudyInstanceUID=study)


@router.get("/instances")
def qido_all_instances(request: Request, _: Caller = Depends(get_caller)) -> Response:
    return _qido(request, "IMAGE", _INSTANCE_KEYS)


@router.get("/studies/{study}/instances")
def qido_study_instances(study: str, request: Request, _: Caller = Depends(get_caller)) -> Response:
    return _qido(request, "IMAGE", _INSTANCE_KEYS, StudyInstanceUID=study)


@router.get("/studies/{study}/series/{series}/instances")
def qido_instances(
    study: str, series: str, request: Request, _: Caller = Depends(get_caller)
) -> Response:
    return _qido(request, "IMAGE", _INSTANCE_KEYS, StudyInstanceUID=study, SeriesInstanceUID=series)
