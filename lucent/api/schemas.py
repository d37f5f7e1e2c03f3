"""API schemas shared by the server (responses) and the typed client (parsing)."""

from __future__ import annotations

from datetime import datetime
from typing import Generic, Literal, Self, TypeVar

from pydantic import BaseModel, Field, model_validator


class LoginRequest(BaseModel):
    username: str
    password: str
    device_id: str = Field("", description="stable random identity of this device (IT FAQ)")
    device_name: str = ""


class LoginResponse(BaseModel):
    token: str
    expires_in: int = Field(description="seconds until the session expires")
    username: str
    role: str
    pin_required: bool = Field(False, description="a PIN was mailed; POST it to /auth/pin")
    challenge: str = ""
    password_change_required: bool = Field(
        False,
        description="the password was set by someone else and is valid once: every route but "
        "POST /auth/password and /auth/logout answers 403 until the account sets its own",
    )


class UserInfo(BaseModel):
    username: str
    display_name: str
    role: str
    email: str = ""


class Pool(BaseModel):
    name: str
    ae_title: str
    port: int


class PatientOut(BaseModel):
    patient_id: str
    issuer: str = ""
    name: str
    birth_date: str
    sex: str
    study_count: int
    non_conformant: int = Field(0, description="refused instances recorded for this patient")


class StudyOut(BaseModel):
    study_uid: str
    patient_id: str
    patient_name: str
    birth_date: str
    study_date: str
    study_time: str
    description: str
    accession_number: str
    referring_physician: str
    study_id: str
    modalities: list[str]
    series_count: int
    instance_count: int
    pool: str
    non_conformant: int = 0
    placeholder: bool = Field(False, description="a 'non-conformant data' entry, not a study")
    reason: str = ""


class SeriesOut(BaseModel):
    series_uid: str
    study_uid: str
    modality: str
    series_number: int | None
    description: str
    body_part: str
    frame_of_reference_uid: str
    instance_count: int


class InstanceOut(BaseModel):
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    instance_number: int | None
    rows: int | None
    columns: int | None
    frames: int
    lossy: bool
    size: int
    sha256: str
    received_at: datetime
    attrs: dict[str, object] = Field(default_factory=dict)


class PlaceholderOut(BaseModel):
    patient_id: str
    patient_name: str
    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    status: int
    reason: str
    pool: str
    source_ae: str
    received_at: datetime


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    offset: int
    limit: int
    total: int | None = None


class SliceGeometry(BaseModel):
    """One slice of a volume: a single-frame instance, or frame ``frame_number`` (1-based)
    of the one multi-frame instance the volume is made of (Enhanced CT/MR: its position
    and rescale from that frame's functional groups, PS3.3 C.7.6.16).

    Modality values are ``value × rescale_slope + rescale_intercept``. Where
    ``modality_lut_applied`` the volume holds this slice's values already through its
    Modality LUT Sequence (PS3.3 C.11.1): slope 1, intercept 0.
    """

    sop_instance_uid: str
    frame_number: int = 1
    image_position: list[float] | None
    rescale_slope: float = 1.0
    rescale_intercept: float = 0.0
    modality_lut_applied: bool = False


class VolumeGeometry(BaseModel):
    """Geometry of a series as one volume: slices sorted along the normal of IOP.

    ``uniform_spacing`` is True only for a regular grid along the slice normal: slice k at
    ``image_position`` of slice 0 + k × ``slice_spacing`` × normal (IOP row × column). It is
    False when the gaps differ (a missing slice: ``slice_spacing`` None, ``slice_gaps`` lists
    each gap) or when the stack is ``tilted``, and None when the positions are unknown
    (ordered by Instance Number). Gaps are uniform within 1 % of their median or 0.01 mm.

    ``tilted`` (CT gantry tilt, PS3.3 C.7.6.2.1.1): the slices step along
    ``stack_direction`` (unit vector, first to last slice), ``gantry_tilt_deg`` away from the
    normal, not along the normal; ``slice_spacing`` and ``slice_gaps`` are measured along
    ``stack_direction``. Position each slice by its ``image_position``, never on a grid
    along the normal (8.55 mm off at slice 5 of a 20° tilt). Untilted: ``stack_direction``
    is the normal and ``gantry_tilt_deg`` 0.

    ``dtype`` is that of the /volume array. ``modality_lut_applied``: at least one slice's
    values come through its Modality LUT Sequence (see :class:`SliceGeometry`).
    """

    series_uid: str
    rows: int
    columns: int
    slices: list[SliceGeometry]
    image_orientation: list[float] | None
    pixel_spacing: list[float] | None
    slice_spacing: float | None
    uniform_spacing: bool | None = None
    slice_gaps: list[float] = Field(default_factory=list)
    stack_direction: list[float] | None = None
    gantry_tilt_deg: float | None = None
    tilted: bool = False
    dtype: str
    modality_lut_applied: bool = False
    window_center: float | None = None
    window_width: float | None = None
    photometric: str = "MONOCHROME2"
    uniform_rescale: bool = True


class RemoteNodeIn(BaseModel):
    """A remote node; its roles are from our side (issue 3), plus what it may do to us."""

    name: str
    ae_title: str = Field(min_length=1, max_length=16)
    host: str
    port: int = Field(ge=1, le=65535)
    query_retrieve: bool = Field(
        True, description="query/retrieve source: we send C-FIND and C-MOVE to this node"
    )
    inbound_query_retrieve: bool | None = Field(
        None,
        description=(
            "this node may query and retrieve from our Q/R SCP (C-FIND, C-MOVE, C-GET into "
            "it); left out: the same as query_retrieve, as before the two were split"
        ),
    )
    store_target: bool = True
    storage_commitment: bool = False
    tls: bool = False
    timeout: float = 30.0

    @model_validator(mode="after")
    def _inbound_as_before(self) -> Self:
        """A client that predates the split (probe 37) meant both directions."""
        if self.inbound_query_retrieve is None:
            self.inbound_query_retrieve = self.query_retrieve
        return self


class RemoteNodeOut(RemoteNodeIn):
    id: int
    inbound_query_retrieve: bool = Field(  # type: ignore[assignment]
        description="this node may query and retrieve from our Q/R SCP"
    )


class ErrorOut(BaseModel):
    detail: str


# ---------------------------------------------------------------------- PACS connectivity
# (issue 3; Conformance 4.2.1, 4.2.2, 4.2.4, 4.2.5)


#: The values the server emits, spelt out so /openapi.json tells an outside client the
#: allowed values (an enum), and the typed client refuses anything else.
EchoKind = Literal[
    "ok", "refused", "timeout", "unknown-host", "unreachable", "rejected", "aborted", "tls",
    "status",
]  # fmt: skip
#: Conformance 4.2.1.6 per PACS: success; truncated (limit reached, C-CANCEL sent); failed
#: (A700, A900, Cxxx, other failures, or not a Q/R node); cancelled (FE00); no-association.
FindOutcome = Literal["success", "truncated", "failed", "cancelled", "no-association"]
#: A job's life: queued -> running -> one final state; "interrupted" when the server
#: stopped while it was queued or running (server.jobs.queue marks those at start).
#: "waiting" (not final): a storage commitment job whose report is still outstanding (a
#: commit job, or a send job with commitment after its C-STOREs); it ends done, partial or
#: failed when the report arrives or the request expires (4.2.5).
JobState = Literal[
    "queued", "running", "waiting", "done", "partial", "failed", "cancelled", "interrupted"
]
JOB_FINAL_STATES: tuple[JobState, ...] = ("done", "partial", "failed", "cancelled", "interrupted")
#: A storage commitment request (4.2.5): answered by an N-EVENT-REPORT, superseded by a
#: retry, expired after the last attempt, failed when the SCP refused the N-ACTION for good.
CommitmentRequestState = Literal["pending", "answered", "superseded", "expired", "failed"]
#: One instance of a request: committed or failed by the SCP's report, pending while the
#: request waits, unconfirmed when it expired with no word on the instance (4.2.5.3: not
#: committed; it read "pending" for good, outside probe 26).
CommitmentItemState = Literal["pending", "committed", "failed", "unconfirmed"]


class EchoOut(BaseModel):
    ok: bool
    status: int | None = None
    kind: EchoKind = Field(description="why a C-ECHO failed; 'ok' when it succeeded")
    message: str
    elapsed_ms: float


class NodeOptionsIn(BaseModel):
    propose_compressed: bool | None = None
    commitment_mode: str | None = Field(None, description="same | incoming | reopen")
    commitment_wait: float | None = Field(None, ge=0, le=3600)
    dimse_timeout: float | None = Field(None, gt=0, le=3600)
    retries: int | None = Field(None, ge=0, le=20)


class NodeOptionsOut(BaseModel):
    node_id: int
    propose_compressed: bool
    commitment_mode: str
    commitment_wait: float
    dimse_timeout: float
    retries: int


class PacsQueryIn(BaseModel):
    node_ids: list[int]
    level: str = "STUDY"
    keys: dict[str, str] = Field(default_factory=dict, description="DICOM keyword -> match")
    case_insensitive: bool = False
    limit: int | None = Field(None, ge=1)


class PacsNodeResult(BaseModel):
    node_id: int
    node: str
    outcome: FindOutcome
    status: int | None = None
    message: str = ""
    count: int = 0
    warnings: int = 0
    truncated: bool = False
    case_sensitive: bool | None = None
    hidden_matches_possible: bool = False
    case_note: str = ""
    elapsed_ms: float = 0.0


class PacsMatch(BaseModel):
    attrs: dict[str, str] = Field(description="what the first node answered")
    nodes: list[str]
    node_ids: list[int]
    node_attrs: list[dict[str, str]] = Field(
        default_factory=list,
        description="what each node answered, in the order of nodes/node_ids (counts such "
        "as NumberOfStudyRelatedInstances differ between PACS holding parts of a study)",
    )


class PacsPatient(BaseModel):
    patient_id: str
    patient_name: str
    birth_date: str
    studies: list[PacsMatch]


class PacsQueryOut(BaseModel):
    level: str
    nodes: list[PacsNodeResult]
    rows: list[PacsMatch] = Field(default_factory=list)
    patients: list[PacsPatient] = Field(default_factory=list)


class RetrieveIn(BaseModel):
    node_id: int
    study_uid: str
    series_uid: str = ""
    sop_instance_uid: str = ""
    pool: str = ""


class SendIn(BaseModel):
    node_id: int
    study_uid: str = ""
    series_uid: str = ""
    sop_instance_uids: list[str] = Field(default_factory=list)
    commit: bool | None = Field(None, description="None = as configured for the node")


class CommitIn(BaseModel):
    node_id: int
    sop_instance_uids: list[str]


class JobOut(BaseModel):
    id: int
    kind: str
    state: JobState
    node_id: int | None
    node_name: str
    pool: str
    params: dict[str, object]
    progress: float
    total: int | None
    completed: int
    failed: int
    warning: int
    remaining: int | None = Field(
        None,
        description="a retrieve's Number of Remaining Sub-operations (0000,1020) from the "
        "last C-MOVE response that carried it (pending, cancel FE00, final; PS3.4 C.4.2.1.6): "
        "what a cancelled retrieve left unsent; None while unknown and for other kinds",
    )
    attempts: int
    status: int | None
    message: str
    created_by: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def finished(self) -> bool:
        """A final state (JOB_FINAL_STATES). A send with storage commitment is "waiting",
        not final, until its report arrived or the request expired; it then counts an
        instance stored but not committed as failed (Conformance 4.2.5)."""
        return self.state in JOB_FINAL_STATES


class SentInstanceOut(BaseModel):
    sop_instance_uid: str
    sop_class_uid: str
    status: int | None = Field(description="the C-STORE status; None: no answer (not sent)")
    reason: str
    transfer_syntax_uid: str
    transcoded: bool
    attempts: int
    at: datetime
    commitment: CommitmentItemState | None = Field(
        None,
        description="storage commitment of the instance when its job requested one: "
        "pending (report outstanding), committed, failed or unconfirmed (request expired); "
        "a stored instance not committed counts as failed in the job and is sent again "
        "by a retry",
    )


class CommitmentOut(BaseModel):
    transaction_uid: str
    node_id: int | None
    node_name: str
    request_state: CommitmentRequestState
    attempt: int
    sop_instance_uid: str
    sop_class_uid: str
    state: CommitmentItemState
    failure_reason: int | None = None
    failure_text: str = ""
    updated_at: datetime
    awaiting: Literal["report", "retry"] | None = Field(
        None,
        description="what a pending request waits for: 'report' (N-ACTION accepted or on "
        "its way), 'retry' (the N-ACTION was not delivered or not accepted: no report can "
        "come for it; the next attempt is due at retry_at, request_message says why)",
    )
    retry_at: datetime | None = Field(
        None, description="when a pending request is asked again or ends (UTC)"
    )
    request_message: str = Field(
        "", description="the request's last word: N-ACTION result, why not delivered, expiry"
    )


# ---------------------------------------------------------------------- perfusion (issue 6)


class PerfusionStartIn(BaseModel):
    series_uid: str = Field(description="Series Instance UID of the perfusion series")


class PerfusionExamineOut(BaseModel):
    """Recognition of a series as perfusion (examine() with a confidence, 0..1)."""

    series_uid: str
    confidence: float
    modality: str
    slice_positions: int
    time_points: int
    reason: str


class PerfusionRunOut(BaseModel):
    id: int
    series_uid: str
    study_uid: str
    pool: str
    job_id: int | None
    state: str = Field(
        description="queued | running | done | partial (some result objects not stored) | "
        "refused | failed | cancelled | superseded | interrupted"
    )
    trigger: str = Field(description="auto | manual | restart")
    confidence: float
    recognition: str
    instances: int
    progress: float = 0.0
    message: str = ""
    result_series_uids: list[str] = []
    stored: int = 0
    send_job_ids: list[int] = []
    created_by: str = ""
    created_at: datetime
    finished_at: datetime | None = None

    @property
    def finished(self) -> bool:
        return self.state not in ("queued", "running")
