"""API schemas shared by the server (responses) and the typed client (parsing)."""

from __future__ import annotations

from datetime import datetime
from typing import Generic, TypeVar

from pydantic import BaseModel, Field


class LoginRequest(BaseModel):
    username: str
    password: str


class LoginResponse(BaseModel):
    token: str
    expires_in: int = Field(description="seconds until the session expires")
    username: str
    role: str


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
    sop_instance_uid: str
    image_position: list[float] | None
    rescale_slope: float = 1.0
    rescale_intercept: float = 0.0


class VolumeGeometry(BaseModel):
    """Geometry of a series as one volume: slices sorted along the normal of IOP."""

    series_uid: str
    rows: int
    columns: int
    slices: list[SliceGeometry]
    image_orientation: list[float] | None
    pixel_spacing: list[float] | None
    slice_spacing: float | None
    dtype: str
    window_center: float | None = None
    window_width: float | None = None
    photometric: str = "MONOCHROME2"
    uniform_rescale: bool = True


class RemoteNodeIn(BaseModel):
    name: str
    ae_title: str = Field(min_length=1, max_length=16)
    host: str
    port: int = Field(ge=1, le=65535)
    query_retrieve: bool = True
    store_target: bool = True
    storage_commitment: bool = False
    tls: bool = False
    timeout: float = 30.0


class RemoteNodeOut(RemoteNodeIn):
    id: int


class ErrorOut(BaseModel):
    detail: str
