"""Digital perfusion phantom written as a real 4D DICOM series (issue 6, "Proof").

Indicator-dilution model: C_t(t) = (rho/kH) * CBF * (C_a (x) R)(t), convolved on a fine
0.1 s grid and then sampled at the frame times, so the engine never sees the model's own
discretisation. AIF: gamma variate (t-t0)^3 exp(-(t-t0)/1.5). Grey/white matter with known
CBF/CBV, sectors delayed by 0-3 s, a core and a penumbra with delay and dispersion, an
artery with partial volume and a sinus (VOF), Gaussian (CT) or Rician (MR) noise.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
KH = (1 - 0.45) / (1 - 0.25)
RHO = 1.04
"""Same hematocrit/density constants as lucent.perfusion.config defaults."""

# labels
AIR, SCALP, SKULL, CSF = 0, 1, 2, 3
GM0, WM0 = 4, 8  # GM0..GM0+3 and WM0..WM0+3: delay sectors 0..3 s
PEN_GM, PEN_WM, CORE_GM, CORE_WM, ARTERY, VEIN = 12, 13, 14, 15, 16, 17
N_LABELS = 18
TISSUE = tuple(range(GM0, CORE_WM + 1))


@dataclass(frozen=True)
class PhantomSpec:
    modality: str = "CT"
    matrix: int = 64
    n_slices: int = 8
    slice_mm: float = 5.0
    fov_mm: float = 240.0
    n_times: int = 60
    dt: float = 1.0
    t0: float = 20.0
    aif_peak: float = 300.0
    """CT: HU; MR: ΔR2* in 1/s."""
    residue: str = "exponential"
    gm: tuple[float, float] = (60.0, 4.0)
    wm: tuple[float, float] = (25.0, 2.0)
    cortex_mm: float = 9.0
    """Thickness of the cortical grey-matter ribbon. At 9 mm grey matter is ~25 % of healthy
    tissue and the core lies in white matter; ``GM_MAJORITY`` thickens it so that grey matter
    is the majority (as in real brains) and the core spans grey and white matter: a single
    healthy-tissue reference then sits on the wrong tissue for part of the core."""
    delays: tuple[float, float, float, float] = (0.0, 1.0, 2.0, 3.0)
    lesion_centre_mm: tuple[float, float, float] = (-36.0, 0.0, 0.0)
    penumbra_radii_mm: tuple[float, float, float] = (26.0, 40.0, 14.0)
    core_radii_mm: tuple[float, float, float] = (15.0, 20.0, 9.0)
    lesion_delay: float = 6.0
    core_delay: float = 9.0
    lesion_dispersion: float = 1.0
    penumbra_cbf: float = 0.6
    penumbra_cbv: float = 1.0
    core_cbf: float = 0.1
    core_cbv: float = 0.35
    artery_fraction: float = 0.7
    noise: float = 0.0
    """CT: Gaussian sd in HU; MR: SNR of grey matter (0 = noise free)."""
    whole_hu: bool = False
    """CT: store noise-free images in whole HU (RescaleSlope 1), as scanners and most phantom
    writers do, instead of 0.01 HU steps."""
    te_ms: float = 25.0
    slice_timing: bool = False
    """Slice z acquired z*dt/n_slices after the first slice of its time point (interleaved EPI)."""
    timing_tag: str = "acquisition"
    motion_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    motion_from: int = 10**9
    drop_instance: tuple[int, int] | None = None
    drop_time_point: int | None = None
    shuffle: bool = False
    seed: int = 1


GM_MAJORITY = {"cortex_mm": 26.0, "core_cbf": 0.15}
"""PhantomSpec overrides: grey matter ~63 % of healthy tissue (as in real brains), the core
about half grey, half white matter, each at 15 % of its own tissue's normal CBF. Both wrong
references fail on it: grey-matter core (9) lies above 30 % of white matter (7.5), and
penumbral white matter (60 % of 25 = 15) below 30 % of grey matter (18). Not 20 %: at
realistic noise oSVD underestimates normal CBF more than a core's (broader residue), so a
20 % core reads ~25 % and 22 % of its grey part crosses the 30 % line (core -11 %)."""


@dataclass
class Phantom:
    spec: PhantomSpec
    labels: np.ndarray
    truth: dict[str, np.ndarray]
    volumes_ml: dict[str, float]
    voxel_ml: float
    paths: list[Path] = field(default_factory=list)

    @property
    def tissue(self) -> np.ndarray:
        return np.isin(self.labels, TISSUE)


def _coords(
    spec: PhantomSpec, shift: tuple[float, float, float] = (0, 0, 0), rotation_deg: float = 0.0
) -> tuple[np.ndarray, ...]:
    """Anatomy coordinates of the voxel centres for a head moved by R(rotation) then +shift.

    The rotation is about the patient z axis through the grid centre, counter-clockwise from
    +x towards +y (the ITK Euler3D convention), so a registration of the moved head onto the
    unmoved one recovers exactly ``shift`` and ``rotation_deg``.
    """
    px = spec.fov_mm / spec.matrix
    c = (np.arange(spec.matrix) - (spec.matrix - 1) / 2) * px
    z = (np.arange(spec.n_slices) - (spec.n_slices - 1) / 2) * spec.slice_mm
    zz, yy, xx = np.meshgrid(z, c, c, indexing="ij")
    zz, yy, xx = zz - shift[2], yy - shift[1], xx - shift[0]
    if rotation_deg:
        a = np.radians(rotation_deg)  # anatomy at R^-1 q
        xx, yy = np.cos(a) * xx + np.sin(a) * yy, -np.sin(a) * xx + np.cos(a) * yy
    return zz, yy, xx


def make_labels(
    spec: PhantomSpec,
    shift: tuple[float, float, float] = (0, 0, 0),
    rotation_deg: float = 0.0,
    supersample: int = 1,
) -> np.ndarray:
    """Anatomy as labels on the voxel grid (analytic, so motion is an exact shift/rotation).

    ``supersample`` > 1: labels of the sub-voxel centres of a grid that many times finer
    in-plane, shape (Z, Y * s, X * s), for partial-volume averaging (``_render``)."""
    fine = replace(spec, matrix=spec.matrix * supersample)
    zz, yy, xx = _coords(fine, shift, rotation_deg)
    scale = np.sqrt(np.clip(1 - (zz / 95.0) ** 2, 0.2, 1))
    a, b = 62.0 * scale, 80.0 * scale

    def inside(da: float, db: float) -> np.ndarray:
        return (xx / (a + da)) ** 2 + (yy / (b + db)) ** 2 <= 1

    lab = np.full(xx.shape, AIR, np.int16)
    lab[inside(11, 11)] = SCALP
    lab[inside(7, 7)] = SKULL
    brain = inside(0, 0)
    cortex = brain & ~inside(-spec.cortex_mm, -spec.cortex_mm)
    sector = ((np.arctan2(yy, xx) + np.pi) / (np.pi / 2)).astype(int) % 4
    lab[brain] = (WM0 + sector)[brain]
    lab[cortex] = (GM0 + sector)[cortex]
    vent = ((xx / 10) ** 2 + ((yy - 5) / 22) ** 2 <= 1) & (np.abs(zz) < 12)
    cx, cy, cz = spec.lesion_centre_mm

    def ellipsoid(r: tuple[float, float, float]) -> np.ndarray:
        return ((xx - cx) / r[0]) ** 2 + ((yy - cy) / r[1]) ** 2 + ((zz - cz) / r[2]) ** 2 <= 1

    pen, core = ellipsoid(spec.penumbra_radii_mm) & brain, ellipsoid(spec.core_radii_mm) & brain
    is_gm = np.isin(lab, range(GM0, GM0 + 4))
    lab[pen & is_gm], lab[pen & ~is_gm] = PEN_GM, PEN_WM
    lab[core & is_gm], lab[core & ~is_gm] = CORE_GM, CORE_WM
    lab[vent] = CSF
    px = spec.fov_mm / spec.matrix  # vessels keep their size on a supersampled grid
    art = (np.abs(xx - 22) < px * 1.01) & (np.abs(yy - 40) < px * 1.01)
    vein = (np.abs(xx) < px * 1.01) & (np.abs(yy + b - 6 * scale) < px * 1.01)
    lab[art & brain] = ARTERY
    lab[vein & brain] = VEIN
    return lab


def _tissue_params(spec: PhantomSpec) -> dict[int, tuple[float, float, float, float]]:
    """label -> (CBF ml/100g/min, CBV ml/100g, delay s, dispersion s)."""
    p: dict[int, tuple[float, float, float, float]] = {}
    for i, d in enumerate(spec.delays):
        p[GM0 + i] = (spec.gm[0], spec.gm[1], d, 0.0)
        p[WM0 + i] = (spec.wm[0], spec.wm[1], d, 0.0)
    ld, disp = spec.lesion_delay, spec.lesion_dispersion
    p[PEN_GM] = (spec.gm[0] * spec.penumbra_cbf, spec.gm[1] * spec.penumbra_cbv, ld, disp)
    p[PEN_WM] = (spec.wm[0] * spec.penumbra_cbf, spec.wm[1] * spec.penumbra_cbv, ld, disp)
    cd = spec.core_delay
    p[CORE_GM] = (spec.gm[0] * spec.core_cbf, spec.gm[1] * spec.core_cbv, cd, disp)
    p[CORE_WM] = (spec.wm[0] * spec.core_cbf, spec.wm[1] * spec.core_cbv, cd, disp)
    return p


def _curves(spec: PhantomSpec) -> tuple[np.ndarray, dict[int, float]]:
    """Concentration per label on the frame grid: (N_LABELS, T, Z), and truth Tmax."""
    h = 0.1
    tf = np.arange(0, spec.n_times * spec.dt + spec.dt + 40, h)
    s = np.clip(tf - spec.t0, 0, None)
    aif = s**3 * np.exp(-s / 1.5)
    aif *= spec.aif_peak / aif.max()

    def conv(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
        return np.convolve(x, kernel)[: len(tf)] * h

    def shifted(kernel: np.ndarray, delay: float) -> np.ndarray:
        n = int(round(delay / h))
        return np.concatenate([np.zeros(n), kernel[: len(kernel) - n]])

    fine = np.zeros((N_LABELS, len(tf)))
    tmax: dict[int, float] = {}
    for lab, (cbf, cbv, delay, disp) in _tissue_params(spec).items():
        mtt = cbv / cbf * 60.0
        r = np.exp(-tf / mtt) if spec.residue == "exponential" else (tf < mtt).astype(float)
        if disp > 0:
            k = np.exp(-tf / disp) / disp
            r = conv(r, k)
        tmax[lab] = delay + tf[int(np.argmax(r))]
        fine[lab] = RHO / KH * cbf / 6000.0 * conv(aif, shifted(r, delay))
    vk = np.exp(-tf / 2.5) / 2.5
    fine[VEIN] = conv(aif, shifted(vk, 5.0))
    fine[ARTERY] = spec.artery_fraction * aif + (1 - spec.artery_fraction) * fine[GM0]
    off = (
        np.arange(spec.n_slices) * spec.dt / spec.n_slices
        if spec.slice_timing
        else np.zeros(spec.n_slices)
    )
    t_frames = np.arange(spec.n_times)[:, None] * spec.dt + off[None, :]
    out = np.stack([np.interp(t_frames, tf, fine[lab]) for lab in range(N_LABELS)])
    return out, tmax


def _truth(spec: PhantomSpec, labels: np.ndarray, tmax: dict[int, float]) -> dict[str, np.ndarray]:
    names = ("cbf", "cbv", "mtt", "tmax", "delay")
    truth = {n: np.full(labels.shape, np.nan, np.float32) for n in names}
    for lab, (cbf, cbv, delay, _disp) in _tissue_params(spec).items():
        m = labels == lab
        truth["cbf"][m], truth["cbv"][m] = cbf, cbv
        truth["mtt"][m], truth["tmax"][m], truth["delay"][m] = cbv / cbf * 60, tmax[lab], delay
    return truth


BASE_CT = {AIR: -1000, SCALP: 40, SKULL: 1000, CSF: 5, ARTERY: 40, VEIN: 40}
BASE_MR = {AIR: 0, SCALP: 600, SKULL: 30, CSF: 1500, ARTERY: 900, VEIN: 900}


def _base(spec: PhantomSpec) -> np.ndarray:
    base = np.zeros(N_LABELS)
    ct = spec.modality == "CT"
    for lab in range(N_LABELS):
        gm = lab in (GM0, GM0 + 1, GM0 + 2, GM0 + 3, PEN_GM, CORE_GM)
        default = (38.0 if gm else 28.0) if ct else (1000.0 if gm else 800.0)
        base[lab] = (BASE_CT if ct else BASE_MR).get(lab, default)
    return base


def _header(spec: PhantomSpec, uids: dict[str, str]) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = CT_IMAGE if spec.modality == "CT" else MR_IMAGE
    ds.Modality = spec.modality
    ds.PatientName = "PHANTOM^PERFUSION"
    ds.PatientID = "PHANTOM-001"
    ds.PatientBirthDate = "19500101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = uids["study"]
    ds.SeriesInstanceUID = uids["series"]
    ds.FrameOfReferenceUID = uids["for"]
    ds.StudyDate = ds.SeriesDate = "20240101"
    ds.StudyTime = ds.SeriesTime = "120000"
    ds.StudyID = "1"
    ds.AccessionNumber = "ACC1"
    ds.StudyDescription = "Stroke protocol"
    ds.SeriesDescription = f"{spec.modality} perfusion phantom"
    ds.SeriesNumber = 4
    ds.Manufacturer = "Lucent phantom"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    px = spec.fov_mm / spec.matrix
    ds.PixelSpacing = [px, px]
    ds.SliceThickness = spec.slice_mm
    ds.Rows = ds.Columns = spec.matrix
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    if spec.modality == "CT":
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        ds.KVP = 80
    else:
        ds.EchoTime = spec.te_ms
        ds.RepetitionTime = spec.dt * 1000
        ds.MagneticFieldStrength = 1.5
        ds.ScanningSequence = "EP"
    ds.NumberOfTemporalPositions = spec.n_times
    return ds


def _set_time(ds: Dataset, spec: PhantomSpec, seconds: float, t: int) -> None:
    start = _dt.datetime(2024, 1, 1, 12, 0, 0) + _dt.timedelta(seconds=seconds)
    tm = start.strftime("%H%M%S.%f")
    tag = spec.timing_tag
    if tag == "acquisition":
        ds.AcquisitionDate, ds.AcquisitionTime = "20240101", tm
        ds.ContentDate, ds.ContentTime = "20240101", "130000"
    elif tag == "content":
        ds.ContentDate, ds.ContentTime = "20240101", tm
    elif tag == "ge_mid_scan":
        ds.AcquisitionTime = "120000"  # series-level value on some scanners: does not order
        block = ds.private_block(0x0019, "GEMS_ACQU_01", create=True)
        block.add_new(0x24, "DS", f"{seconds + 1000:.4f}")
    elif tag == "trigger":
        ds.TriggerTime = f"{seconds * 1000:.1f}"
    elif tag == "temporal_position":
        ds.TemporalPositionIdentifier = t + 1
        ds.TemporalResolution = spec.dt * 1000
    elif tag != "none":
        raise ValueError(tag)


MOTION_SUPERSAMPLE = 4
"""In-plane sub-voxels per voxel side when a phantom moves (partial volume, see ``generate``)."""


def _voxel_mean(img: np.ndarray, factor: int) -> np.ndarray:
    """Mean of each factor x factor block of a supersampled slice: the voxel's value."""
    if factor == 1:
        return img
    h, w = img.shape[0] // factor, img.shape[1] // factor
    return img.reshape(h, factor, w, factor).mean(axis=(1, 3))


def generate(spec: PhantomSpec, out_dir: str | Path | None = None) -> Phantom:
    """Build the phantom and, with ``out_dir``, write it as one DICOM file per frame and slice."""
    labels = make_labels(spec)
    curves, tmax = _curves(spec)
    truth = _truth(spec, labels, tmax)
    px = spec.fov_mm / spec.matrix
    voxel_ml = px * px * spec.slice_mm / 1000.0
    tissue = np.isin(labels, TISSUE)
    core = np.isin(labels, (CORE_GM, CORE_WM))
    volumes = {
        "core": float(core.sum() * voxel_ml),
        "hypoperfusion": float((tissue & (truth["tmax"] > 6)).sum() * voxel_ml),
        "tmax10": float((tissue & (truth["tmax"] > 10)).sum() * voxel_ml),
    }
    phantom = Phantom(spec, labels, truth, volumes, voxel_ml)
    if out_dir is None:
        return phantom
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(spec.seed)
    # A moving head is imaged with partial volume: a voxel integrates the anatomy it covers.
    # Point-sampled labels shift by whole voxels only (a 5 mm move on 3.75 mm pixels jumps
    # edges by 1 or 2 pixels), which no rigid transform reproduces and registration turns
    # into a spurious ~1 degree rotation. Motion phantoms are therefore rendered from labels
    # on a 4x finer in-plane grid, averaged back to the voxels, for every frame alike.
    factor = MOTION_SUPERSAMPLE if any(spec.motion_mm) else 1
    still = make_labels(spec, supersample=factor) if factor > 1 else labels
    moved = make_labels(spec, spec.motion_mm, supersample=factor) if any(spec.motion_mm) else still
    base = _base(spec)
    uids = {"study": generate_uid(), "series": generate_uid(), "for": generate_uid()}
    template = _header(spec, uids)
    n_files = spec.n_times * spec.n_slices
    names = (
        np.random.default_rng(spec.seed + 99).permutation(n_files)
        if spec.shuffle
        else np.arange(n_files)
    )
    c0 = -(spec.matrix - 1) / 2 * px
    # Noise-free CT is stored in 0.01 HU steps (-310..345 HU: air and bone clipped): integer HU is
    # +-0.29 HU of quantisation noise, which already makes oSVD truncate (not noise-free).
    slope, intercept = 1.0, -1024.0
    if spec.modality == "CT" and not spec.noise and not spec.whole_hu:
        slope, intercept = 0.01, -310.0
    if spec.modality == "CT":
        template.RescaleSlope, template.RescaleIntercept = slope, intercept
    for t in range(spec.n_times):
        if t == spec.drop_time_point:
            continue
        lab_t = moved if t >= spec.motion_from else still
        for z in range(spec.n_slices):
            if spec.drop_instance == (t, z):
                continue
            conc = curves[:, t, z]
            if spec.modality == "CT":
                img = _voxel_mean((base + conc)[lab_t[z]], factor)
                if spec.noise:
                    img = img + rng.normal(0, spec.noise, img.shape)
                stored = np.clip(np.rint((img - intercept) / slope), 0, 65535).astype(np.uint16)
            else:
                s = _voxel_mean((base * np.exp(-spec.te_ms / 1000.0 * conc))[lab_t[z]], factor)
                if spec.noise:
                    sigma = 1000.0 / spec.noise
                    s = np.hypot(s + rng.normal(0, sigma, s.shape), rng.normal(0, sigma, s.shape))
                stored = np.clip(np.rint(s), 0, 65535).astype(np.uint16)
            ds = Dataset()
            ds.update(template)
            ds.SOPInstanceUID = generate_uid()
            ds.InstanceNumber = t * spec.n_slices + z + 1
            zpos = (z - (spec.n_slices - 1) / 2) * spec.slice_mm
            ds.ImagePositionPatient = [c0, c0, zpos]
            ds.SliceLocation = zpos
            off = z * spec.dt / spec.n_slices if spec.slice_timing else 0.0
            _set_time(ds, spec, t * spec.dt + off, t)
            ds.PixelData = stored.tobytes()
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = ds.SOPClassUID
            meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.file_meta = meta
            path = out / f"IM{int(names[t * spec.n_slices + z]):05d}.dcm"
            ds.save_as(path, enforce_file_format=True)
            phantom.paths.append(path)
    return phantom


def write_adc(
    phantom: Phantom, out_dir: str | Path, shift_mm: tuple[float, float, float] = (0, 0, 0)
) -> list[Path]:
    """An ADC map (x10^-6 mm²/s) of the same patient: core 500, tissue ~800, CSF 3000."""
    adc = np.zeros(N_LABELS)
    adc[[SCALP, ARTERY, VEIN]] = 900
    adc[CSF] = 3000
    for lab in TISSUE:
        adc[lab] = 820 if lab in (CORE_GM, CORE_WM) else 800
    adc[[CORE_GM, CORE_WM]] = 480
    return _write_static(phantom.spec, out_dir, adc, "ADC", 7, "ADC", shift_mm)


def write_flair(
    phantom: Phantom,
    out_dir: str | Path,
    shift_mm: tuple[float, float, float] = (0, 0, 0),
    rotation_deg: float = 0.0,
    matrix: int = 128,
    n_slices: int = 12,
) -> list[Path]:
    """A FLAIR series of the same patient, moved by a known rigid transform, on its own grid
    (finer in-plane, more slices): CSF dark, grey matter brighter than white, bright scalp."""
    flair = np.zeros(N_LABELS)
    flair[SCALP], flair[SKULL], flair[CSF] = 700, 40, 60
    for lab in TISSUE:
        gm = lab in (GM0, GM0 + 1, GM0 + 2, GM0 + 3, PEN_GM, CORE_GM)
        flair[lab] = 520 if gm else 380
    flair[[ARTERY, VEIN]] = 150  # flow voids
    spec = replace(phantom.spec, matrix=matrix, n_slices=n_slices)
    return _write_static(spec, out_dir, flair, "FLAIR", 8, "FL", shift_mm, rotation_deg)


def _write_static(
    spec: PhantomSpec,
    out_dir: str | Path,
    values: np.ndarray,
    description: str,
    number: int,
    prefix: str,
    shift_mm: tuple[float, float, float],
    rotation_deg: float = 0.0,
) -> list[Path]:
    """One 3D MR series of label values (ADC, FLAIR) on the grid of ``spec``."""
    labels = make_labels(spec, shift_mm, rotation_deg)
    spec_mr = replace(spec, modality="MR", timing_tag="none", n_times=1)
    uids = {"study": generate_uid(), "series": generate_uid(), "for": generate_uid()}
    template = _header(spec_mr, uids)
    template.SeriesDescription = description
    template.ImageType = ["DERIVED", "PRIMARY", description]
    template.SeriesNumber = number
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    px = spec.fov_mm / spec.matrix
    c0 = -(spec.matrix - 1) / 2 * px
    paths = []
    for z in range(spec.n_slices):
        ds = Dataset()
        ds.update(template)
        ds.SOPInstanceUID = generate_uid()
        ds.InstanceNumber = z + 1
        ds.ImagePositionPatient = [c0, c0, (z - (spec.n_slices - 1) / 2) * spec.slice_mm]
        ds.PixelData = values[labels[z]].astype(np.uint16).tobytes()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        path = out / f"{prefix}{z:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
