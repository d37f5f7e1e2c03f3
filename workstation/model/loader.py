"""Loading a series from the server through lucent.api.client (no Qt: runs in any thread).

Order matters for the first-image time (issue 5: < 0.5 s): the slice the user will see is
fetched and decoded first, then the rest. A uniform single-frame greyscale series (CT/MR) is
fetched in one request through the volume endpoint (stored values, no per-file HTTP and
decode cost); anything else (colour, multi-frame, mixed sizes) file by file in a few threads.
Cancellation is checked between requests.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from lucent.api import schemas
from lucent.api.client import ApiError, LucentClient
from workstation.model import pipeline
from workstation.model.series import (
    SeriesData,
    Slice,
    apply_frame_attributes,
    frame_attributes,
    slices_from_instances,
    sort_slices,
    viewable,
)

Progress = Callable[[int, int], None]
Cancelled = Callable[[], bool]


class LoadCancelled(Exception):
    pass


def describe(
    client: LucentClient, series: schemas.SeriesOut, study: schemas.StudyOut | None = None
) -> SeriesData:
    """The series' slices from the instance list (attributes only, no pixels)."""
    instances = client.instances(series.series_uid)
    slices = slices_from_instances(instances)
    kinds = {viewable(i.sop_class_uid) for i in instances}
    kind = "image" if slices else ("sr" if "sr" in kinds else "pdf" if "pdf" in kinds else "")
    data = SeriesData(series, study, slices, kind=kind or "none")
    enhanced = [i for i in instances if i.frames > 1 and viewable(i.sop_class_uid) == "image"]
    for inst in enhanced:
        # Multi-frame: geometry per frame lives in the functional groups inside the file;
        # the file is needed for the pixels anyway, so read it once and keep it for load().
        ds = pipeline.read_part10(client.instance_file(inst.sop_instance_uid))
        if "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds:
            apply_frame_attributes(slices, inst.sop_instance_uid, frame_attributes(ds))
        data.prefetched[inst.sop_instance_uid] = ds
    if enhanced:
        data.slices = sort_slices(slices)
    if not slices:
        data.documents = [i for i in instances if viewable(i.sop_class_uid) in ("sr", "pdf")]
    return data


def _uniform(slices: list[Slice]) -> bool:
    """One request for the whole series only when every slice is one greyscale frame alike."""
    if len(slices) < 2:
        return False
    first = slices[0]
    return all(
        s.frame == 0
        and (s.rows, s.cols) == (first.rows, first.cols)
        and int(s.attrs.get("SamplesPerPixel", 1)) == 1
        and str(s.attrs.get("PhotometricInterpretation", "")).startswith("MONOCHROME")
        and not s.lossy.lossy  # lossy files: decode via the file path (same values anyway)
        for s in slices
    ) and len({s.sop_instance_uid for s in slices}) == len(slices)


def load_instance_frames(
    client: LucentClient, sop_uid: str, data: SeriesData | None = None
) -> tuple[Any, list[pipeline.Frame]]:
    ds = data.prefetched.pop(sop_uid, None) if data is not None else None
    if ds is None:
        ds = pipeline.read_part10(client.instance_file(sop_uid))
    return ds, pipeline.frames_from_dataset(ds)


def _frame_for(s: Slice, frame: pipeline.Frame) -> pipeline.Frame:
    """A frame with its own rescale/window when the functional groups gave it one."""
    import dataclasses

    a = s.attrs
    changes: dict[str, Any] = {}
    if a.get("RescaleSlope") and frame.slope == 1.0 and frame.intercept == 0.0:
        changes["slope"] = float(a["RescaleSlope"][0])
        changes["intercept"] = float((a.get("RescaleIntercept") or [0.0])[0])
    if not frame.windows and _windows(a):
        changes["windows"] = _windows(a)
    return dataclasses.replace(frame, **changes) if changes else frame


def load(
    client: LucentClient,
    data: SeriesData,
    first: int = 0,
    progress: Progress | None = None,
    cancelled: Cancelled | None = None,
    threads: int = 4,
    volume_fetch: Callable[[str], tuple[list[str], np.ndarray]] | None = None,
) -> None:
    """Fill ``data.frames``: slice ``first`` first, then all others."""
    n = len(data.slices)
    if n == 0:
        return
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress:
            progress(min(done, n), n)

    def check() -> None:
        if cancelled and cancelled():
            raise LoadCancelled()

    first = max(0, min(first, n - 1))
    by_sop: dict[str, list[int]] = {}
    for k, s in enumerate(data.slices):
        by_sop.setdefault(s.sop_instance_uid, []).append(k)

    head, frames = load_instance_frames(client, data.slices[first].sop_instance_uid, data)
    for k in by_sop[data.slices[first].sop_instance_uid]:
        data.put(k, _frame_for(data.slices[k], frames[data.slices[k].frame]))
        tick()
    check()

    # Overlay planes (60xx) travel only in the files, not in the volume endpoint's stored
    # values: a series whose first image has one is read file by file so none is lost.
    # Likewise a VOI LUT Sequence (each image may have its own table).
    if _uniform(data.slices) and not any(
        f.overlay is not None or f.voi_lut is not None for f in frames
    ):
        try:
            order, array = (volume_fetch or _fetch_volume(client))(data.uid)
        except ApiError as exc:
            # 409: not one volume (4D/dynamic or repeated positions, multi-frame instances,
            # mixed sizes, orientations, pixel spacings): read file by file below instead.
            if exc.status != 409:
                raise
        else:
            check()
            data.volume = array
            data.volume_order = list(order)
            template = frames[0]
            for j, sop in enumerate(order):
                for k in by_sop.get(sop, []):
                    if k in data.frames:
                        continue
                    a = data.slices[k].attrs
                    data.put(
                        k,
                        pipeline.Frame(
                            stored=array[j],
                            photometric=template.photometric,
                            slope=float((a.get("RescaleSlope") or [template.slope])[0]),
                            intercept=float((a.get("RescaleIntercept") or [template.intercept])[0]),
                            windows=_windows(a) or template.windows,
                            voi_function=template.voi_function,
                            bits_stored=template.bits_stored,
                        ),
                    )
                    tick()
            return

    rest = [sop for sop in by_sop if sop != data.slices[first].sop_instance_uid]

    def one(sop: str) -> None:
        check()
        _, fr = load_instance_frames(client, sop, data)
        for k in by_sop[sop]:
            f = data.slices[k].frame
            data.put(k, _frame_for(data.slices[k], fr[min(f, len(fr) - 1)]))
            tick()

    with ThreadPoolExecutor(max_workers=threads) as pool:
        for fut in [pool.submit(one, sop) for sop in rest]:
            fut.result()


def _windows(attrs: dict[str, Any]) -> list[tuple[float, float]]:
    c, w = attrs.get("WindowCenter"), attrs.get("WindowWidth")
    if isinstance(c, list) and isinstance(w, list):
        return [(float(a), float(b)) for a, b in zip(c, w, strict=False)]
    return []


def _fetch_volume(client: LucentClient) -> Callable[[str], tuple[list[str], np.ndarray]]:
    def fetch(series_uid: str) -> tuple[list[str], np.ndarray]:
        geometry = client.geometry(series_uid)
        array = fetch_volume_array(client, series_uid)
        return [s.sop_instance_uid for s in geometry.slices], array

    return fetch


def fetch_volume_array(client: LucentClient, series_uid: str) -> np.ndarray:
    """Stream the .npy volume straight into its array: peak memory ≈ voxel bytes, not 2×.

    (LucentClient.volume() reads the whole response and then copies it; see the report.)
    """
    from numpy.lib import format as npy_format

    headers = {"Authorization": f"Bearer {client.token}"} if client.token else {}
    url = f"{client.base_url}/api/v1/series/{series_uid}/volume"
    with client._http.stream("GET", url, headers=headers) as response:  # noqa: SLF001
        if response.status_code >= 400:
            response.read()
            from lucent.api.client import ApiError

            raise ApiError(response.status_code, response.text)
        chunks = response.iter_bytes(chunk_size=1 << 20)
        buf = bytearray()
        array: np.ndarray | None = None
        view: memoryview | None = None
        pos = 0
        for chunk in chunks:
            if array is None:
                buf += chunk
                if len(buf) < 16:
                    continue
                bio = io.BytesIO(bytes(buf))
                try:
                    version = npy_format.read_magic(bio)
                    read_header = (
                        npy_format.read_array_header_1_0
                        if version == (1, 0)
                        else npy_format.read_array_header_2_0
                    )
                    shape, fortran, dtype = read_header(bio)
                except (ValueError, EOFError):
                    continue  # header not complete yet
                array = np.empty(shape, dtype=dtype, order="F" if fortran else "C")
                view = memoryview(array.reshape(-1).view(np.uint8))
                body = bytes(buf[bio.tell() :])
                view[: len(body)] = body
                pos = len(body)
                buf = bytearray()
            else:
                assert view is not None
                view[pos : pos + len(chunk)] = chunk
                pos += len(chunk)
    if array is None:
        raise ValueError("empty volume response")
    return array


def load_document(client: LucentClient, sop_uid: str) -> Any:
    """An SR or encapsulated PDF instance as a data set (read by the document views)."""
    return pipeline.read_part10(client.instance_file(sop_uid))


def store(client: LucentClient, ds: Any) -> None:
    """Send a data set we created (GSPS) into the archive through STOW-RS (DICOMweb).

    LucentClient has no store method yet (see the report); this reuses its session and
    token, and the server routes STOW-RS through the one ingest path (ServerContext.store).
    """
    import uuid

    from lucent.api.client import ApiError

    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    boundary = uuid.uuid4().hex
    body = (
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + buf.getvalue()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    headers = {
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Accept": "application/dicom+json",
    }
    if client.token:
        headers["Authorization"] = f"Bearer {client.token}"
    response = client._http.post(  # noqa: SLF001
        f"{client.base_url}/dicom-web/studies", content=body, headers=headers
    )
    if response.status_code >= 300:
        raise ApiError(response.status_code, response.text[:300])


def presentation_states(client: LucentClient, data: SeriesData) -> list[Any]:
    """GSPS instances of the study that reference this series' images (Conformance 8.1.4)."""
    from workstation.model import gsps

    if data.study is None:
        return []
    sops = {s.sop_instance_uid for s in data.slices}
    found = []
    for se in client.series(data.study.study_uid):
        if se.modality != "PR":
            continue
        for inst in client.instances(se.series_uid):
            if inst.sop_class_uid != gsps.GSPS_CLASS:
                continue
            state = gsps.read(pipeline.read_part10(client.instance_file(inst.sop_instance_uid)))
            if sops.intersection(state.referenced) or any(
                a.sop_instance_uid in sops for a in state.annotations
            ):
                found.append(state)
    return found
