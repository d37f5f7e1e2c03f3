"""Typed client of the Lucent server API: the only way the desktop apps reach the server."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

from lucent.api import account_schemas, schemas
from lucent.api.account_client import AccountsApi


class ApiError(Exception):
    """The server refused a request; ``status`` is the HTTP status, ``detail`` its reason."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


class SessionExpired(ApiError):
    """401: the token expired or was revoked; the app should show its login dialog again."""


#: The ``X-Lucent-Error`` header value of the 403 that :class:`PasswordChangeRequired` is.
PASSWORD_CHANGE_CODE = "password-change-required"


class PasswordChangeRequired(ApiError):
    """403: the account's password was set by someone else (clinic IT or an administrator)
    and is valid once; the app should ask for a new one and call ``change_password``."""


@dataclass
class Volume:
    """A series as one array (slices, rows, cols) plus its geometry.

    The array holds stored values, except slices whose Modality LUT Sequence the server
    applied (``geometry.modality_lut_applied``: their slope is 1, intercept 0). Place slices
    on a grid along the normal only where :attr:`regular_grid`; else (``tilted``: CT gantry
    tilt, or uneven gaps) each slice at its own ``image_position``.
    """

    array: np.ndarray
    geometry: schemas.VolumeGeometry

    @property
    def tilted(self) -> bool:
        """The slices step along ``geometry.stack_direction``, not along the normal
        (``geometry.gantry_tilt_deg`` between them, PS3.3 C.7.6.2.1.1)."""
        return self.geometry.tilted

    @property
    def regular_grid(self) -> bool:
        """Slice k lies at slice 0's position + k × ``slice_spacing`` × normal: evenly spaced
        and not tilted. False for a tilted stack, uneven gaps or unknown positions."""
        g = self.geometry
        return bool(g.uniform_spacing) and not g.tilted and g.slice_spacing is not None

    def modality_values(self) -> np.ndarray:
        """Apply each slice's rescale (HU for CT); slices whose Modality LUT Sequence the
        server applied have slope 1 and intercept 0, so their values are taken as they are."""
        out = self.array.astype(np.float32)
        for k, s in enumerate(self.geometry.slices):
            if s.rescale_slope != 1 or s.rescale_intercept != 0:
                out[k] = out[k] * s.rescale_slope + s.rescale_intercept
        return out


class LucentClient(AccountsApi):
    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8750",
        *,
        token: str | None = None,
        timeout: float = 60.0,
        verify: bool | str = True,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, verify=verify)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> LucentClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ plumbing
    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**self._headers(), **kwargs.pop("headers", {})}
        response = self._http.request(method, path, headers=headers, **kwargs)
        if response.status_code >= 400:
            try:
                detail = str(response.json().get("detail", response.text))
            except ValueError:
                detail = response.text
            cls: type[ApiError] = ApiError
            if response.status_code == 401:
                cls = SessionExpired
            elif response.headers.get("x-lucent-error") == PASSWORD_CHANGE_CODE:
                cls = PasswordChangeRequired
            raise cls(response.status_code, detail)
        return response

    def _get(self, path: str, **params: Any) -> Any:
        clean = {k: v for k, v in params.items() if v not in (None, "")}
        return self._request("GET", path, params=clean).json()

    # ------------------------------------------------------------------ auth
    def login(self, username: str, password: str) -> schemas.LoginResponse:
        body = schemas.LoginRequest(username=username, password=password).model_dump()
        result = schemas.LoginResponse.model_validate(
            self._request("POST", "/api/v1/auth/login", json=body).json()
        )
        self.token = result.token
        return result

    def logout(self) -> None:
        self._request("POST", "/api/v1/auth/logout")
        self.token = None

    def me(self) -> schemas.UserInfo:
        return schemas.UserInfo.model_validate(self._get("/api/v1/auth/me"))

    # ------------------------------------------------------------------ archive
    def pools(self) -> list[schemas.Pool]:
        return [schemas.Pool.model_validate(p) for p in self._get("/api/v1/pools")]

    def patients_page(
        self, offset: int = 0, limit: int = 100, **filters: Any
    ) -> schemas.Page[schemas.PatientOut]:
        page = self._get("/api/v1/patients", offset=offset, limit=limit, **filters)
        return schemas.Page[schemas.PatientOut].model_validate(page)

    def patients(
        self, offset: int = 0, limit: int = 100, **filters: Any
    ) -> list[schemas.PatientOut]:
        return self.patients_page(offset, limit, **filters).items

    def studies_page(
        self, offset: int = 0, limit: int = 100, **filters: Any
    ) -> schemas.Page[schemas.StudyOut]:
        page = self._get("/api/v1/studies", offset=offset, limit=limit, **filters)
        return schemas.Page[schemas.StudyOut].model_validate(page)

    def studies(self, offset: int = 0, limit: int = 100, **filters: Any) -> list[schemas.StudyOut]:
        return self.studies_page(offset, limit, **filters).items

    def series(self, study_uid: str, show_hidden: bool = False) -> list[schemas.SeriesOut]:
        """Series of a study; ``show_hidden`` includes those this user has hidden (FAQ)."""
        params = {"show_hidden": "true"} if show_hidden else {}
        return [
            schemas.SeriesOut.model_validate(s)
            for s in self._get(f"/api/v1/studies/{study_uid}/series", **params)
        ]

    def instances(self, series_uid: str) -> list[schemas.InstanceOut]:
        return [
            schemas.InstanceOut.model_validate(i)
            for i in self._get(f"/api/v1/series/{series_uid}/instances")
        ]

    def instance(self, sop_uid: str) -> schemas.InstanceOut:
        return schemas.InstanceOut.model_validate(self._get(f"/api/v1/instances/{sop_uid}"))

    def instance_file(self, sop_uid: str) -> bytes:
        return self._request("GET", f"/api/v1/instances/{sop_uid}/file").content

    def frame(self, sop_uid: str, number: int = 1) -> np.ndarray:
        data = self._request("GET", f"/api/v1/instances/{sop_uid}/frames/{number}").content
        return np.load(io.BytesIO(data), allow_pickle=False)

    def geometry(self, series_uid: str) -> schemas.VolumeGeometry:
        """The series as one volume; ApiError 409 (with the reason) when it is not one:
        4D or repeated positions, multi-frame instances among single-frame ones or several
        of them, frames without positions, mixed sizes, orientations, pixel spacings or pixel
        formats. One multi-frame instance (Enhanced CT/MR) is one volume, a slice per frame.
        Non-uniform gaps are not refused: ``slice_spacing`` is then None, ``uniform_spacing``
        False and ``slice_gaps`` lists the gaps; nor is a tilted stack: ``tilted`` True,
        ``uniform_spacing`` False (see :class:`~lucent.api.schemas.VolumeGeometry`)."""
        return schemas.VolumeGeometry.model_validate(
            self._get(f"/api/v1/series/{series_uid}/geometry")
        )

    def volume(self, series_uid: str) -> Volume:
        geometry = self.geometry(series_uid)
        data = self._request("GET", f"/api/v1/series/{series_uid}/volume").content
        return Volume(np.load(io.BytesIO(data), allow_pickle=False), geometry)

    def rendered(self, study_uid: str, series_uid: str, sop_uid: str) -> bytes:
        """WADO-RS rendered first frame as PNG (8-bit, default window): thumbnails."""
        path = f"/dicom-web/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/rendered"
        return self._request("GET", path, headers={"Accept": "image/png"}).content

    # ------------------------------------------------------------------ hidden data (FAQ)
    def hidden_items(self) -> list[account_schemas.HiddenOut]:
        """What this user has hidden; /studies and /series leave these out unless asked."""
        return [account_schemas.HiddenOut.model_validate(h) for h in self._get("/api/v1/hidden")]

    def hide(self, level: str, uid: str) -> None:
        """Hide a study or series (``level`` "study" | "series") for this user only."""
        body = account_schemas.HiddenIn(level=level, uid=uid).model_dump()
        self._request("POST", "/api/v1/hidden", json=body)

    def unhide(self, level: str = "", uid: str = "") -> None:
        """Restore one hidden item, or everything this user has hidden (no arguments)."""
        params = {k: v for k, v in (("level", level), ("uid", uid)) if v}
        self._request("DELETE", "/api/v1/hidden", params=params)

    def placeholders(self, **filters: Any) -> list[schemas.PlaceholderOut]:
        return [
            schemas.PlaceholderOut.model_validate(p)
            for p in self._get("/api/v1/placeholders", **filters)
        ]

    def status(self) -> dict[str, Any]:
        return self._get("/api/v1/status")  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ remote nodes
    def nodes(self) -> list[schemas.RemoteNodeOut]:
        return [schemas.RemoteNodeOut.model_validate(n) for n in self._get("/api/v1/nodes")]

    def add_node(self, node: schemas.RemoteNodeIn) -> schemas.RemoteNodeOut:
        response = self._request("POST", "/api/v1/nodes", json=node.model_dump())
        return schemas.RemoteNodeOut.model_validate(response.json())

    def delete_node(self, node_id: int) -> None:
        self._request("DELETE", f"/api/v1/nodes/{node_id}")

    # ------------------------------------------------------------------ PACS (issue 3)
    def update_node(self, node_id: int, node: schemas.RemoteNodeIn) -> schemas.RemoteNodeOut:
        response = self._request("PUT", f"/api/v1/nodes/{node_id}", json=node.model_dump())
        return schemas.RemoteNodeOut.model_validate(response.json())

    def echo_node(self, node_id: int) -> schemas.EchoOut:
        response = self._request("POST", f"/api/v1/nodes/{node_id}/echo")
        return schemas.EchoOut.model_validate(response.json())

    def node_options(self, node_id: int) -> schemas.NodeOptionsOut:
        return schemas.NodeOptionsOut.model_validate(
            self._get(f"/api/v1/pacs/nodes/{node_id}/options")
        )

    def set_node_options(self, node_id: int, **options: Any) -> schemas.NodeOptionsOut:
        body = schemas.NodeOptionsIn(**options).model_dump()
        response = self._request("PUT", f"/api/v1/pacs/nodes/{node_id}/options", json=body)
        return schemas.NodeOptionsOut.model_validate(response.json())

    def pacs_query(
        self,
        node_ids: list[int],
        level: str = "STUDY",
        *,
        case_insensitive: bool = False,
        limit: int | None = None,
        **keys: str,
    ) -> schemas.PacsQueryOut:
        body = schemas.PacsQueryIn(
            node_ids=node_ids,
            level=level,
            keys=keys,
            case_insensitive=case_insensitive,
            limit=limit,
        ).model_dump()
        response = self._request("POST", "/api/v1/pacs/query", json=body)
        return schemas.PacsQueryOut.model_validate(response.json())

    def retrieve(self, node_id: int, study_uid: str, **kwargs: str) -> schemas.JobOut:
        body = schemas.RetrieveIn(node_id=node_id, study_uid=study_uid, **kwargs).model_dump()
        response = self._request("POST", "/api/v1/pacs/retrieve", json=body)
        return schemas.JobOut.model_validate(response.json())

    def send(self, node_id: int, **kwargs: Any) -> schemas.JobOut:
        body = schemas.SendIn(node_id=node_id, **kwargs).model_dump()
        response = self._request("POST", "/api/v1/pacs/send", json=body)
        return schemas.JobOut.model_validate(response.json())

    def request_commitment(self, node_id: int, sop_instance_uids: list[str]) -> schemas.JobOut:
        body = schemas.CommitIn(node_id=node_id, sop_instance_uids=sop_instance_uids).model_dump()
        response = self._request("POST", "/api/v1/pacs/commit", json=body)
        return schemas.JobOut.model_validate(response.json())

    def jobs(self, kind: str = "", state: str = "", limit: int = 100) -> list[schemas.JobOut]:
        return [
            schemas.JobOut.model_validate(j)
            for j in self._get("/api/v1/jobs", kind=kind, state=state, limit=limit)
        ]

    def job(self, job_id: int) -> schemas.JobOut:
        return schemas.JobOut.model_validate(self._get(f"/api/v1/jobs/{job_id}"))

    def cancel_job(self, job_id: int) -> schemas.JobOut:
        response = self._request("POST", f"/api/v1/jobs/{job_id}/cancel")
        return schemas.JobOut.model_validate(response.json())

    def wait_job(self, job_id: int, timeout: float = 120.0, poll: float = 0.1) -> schemas.JobOut:
        """Poll a job until it has finished (or raise TimeoutError)."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job.finished:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job.state} after {timeout:g} s")
            time.sleep(poll)

    def retry_job(self, job_id: int) -> schemas.JobOut:
        """A new send job for what send job ``job_id`` did not store (POST /jobs/{id}/retry)."""
        response = self._request("POST", f"/api/v1/jobs/{job_id}/retry")
        return schemas.JobOut.model_validate(response.json())

    def job_instances(self, job_id: int) -> list[schemas.SentInstanceOut]:
        return [
            schemas.SentInstanceOut.model_validate(i)
            for i in self._get(f"/api/v1/jobs/{job_id}/instances")
        ]

    def commitments(self, **filters: Any) -> list[schemas.CommitmentOut]:
        return [
            schemas.CommitmentOut.model_validate(c)
            for c in self._get("/api/v1/pacs/commitments", **filters)
        ]

    # ------------------------------------------------------------------ perfusion (issue 6)
    def examine_perfusion(self, series_uid: str) -> schemas.PerfusionExamineOut:
        """Is this series perfusion? Confidence 0..1 and the reason."""
        return schemas.PerfusionExamineOut.model_validate(
            self._get(f"/api/v1/perfusion/examine/{series_uid}")
        )

    def start_perfusion(self, series_uid: str) -> schemas.PerfusionRunOut:
        response = self._request("POST", "/api/v1/perfusion/runs", json={"series_uid": series_uid})
        return schemas.PerfusionRunOut.model_validate(response.json())

    def perfusion_runs(
        self, series_uid: str = "", state: str = "", limit: int = 100
    ) -> list[schemas.PerfusionRunOut]:
        return [
            schemas.PerfusionRunOut.model_validate(r)
            for r in self._get(
                "/api/v1/perfusion/runs", series_uid=series_uid, state=state, limit=limit
            )
        ]

    def perfusion_run(self, run_id: int) -> schemas.PerfusionRunOut:
        return schemas.PerfusionRunOut.model_validate(self._get(f"/api/v1/perfusion/runs/{run_id}"))

    def cancel_perfusion(self, run_id: int) -> schemas.PerfusionRunOut:
        response = self._request("POST", f"/api/v1/perfusion/runs/{run_id}/cancel")
        return schemas.PerfusionRunOut.model_validate(response.json())

    def perfusion_result(self, run_id: int) -> dict[str, Any]:
        """result.json of a finished run (volumes, DEFUSE-3, AIF/VOF, QC, timings)."""
        return dict(self._get(f"/api/v1/perfusion/runs/{run_id}/result"))

    def wait_perfusion(
        self, run_id: int, timeout: float = 300.0, poll: float = 0.5
    ) -> schemas.PerfusionRunOut:
        """Poll a run until it has finished (or raise TimeoutError)."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            run = self.perfusion_run(run_id)
            if run.finished:
                return run
            if time.monotonic() > deadline:
                raise TimeoutError(f"perfusion run {run_id} still {run.state} after {timeout:g} s")
            time.sleep(poll)
