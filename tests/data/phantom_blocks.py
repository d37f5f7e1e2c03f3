"""A second, independently built CT / DSC-MR perfusion phantom (issue 6, "Proof").

Built the way an outside tester would, not from ``tests.data.phantom``: so the engine is
not only ever checked against the model it was tuned on. The differences are deliberate:

- anatomy: an elliptical head with a thin (6 mm) cortical ribbon, ventricles, two arteries
  and a venous sinus *inside* the brain, a rectangular ("block") penumbra and core in white
  matter of the left hemisphere (patient +x), healthy tissue delayed by 0-3 s in slice bands;
- bolus: gamma variate (t - 6 s)^3 exp(-(t - 6 s)/1.5 s) with a 12 % recirculation bump, so
  only 3-5 pre-bolus frames; the sinus sees the AIF 3 s later, dispersed (exp, 2 s), with
  the same area (partial-volume factor of the AIF exactly 1);
- tissue: C_t = (rho/kH) CBF/6000 (C_a(. - delay) (x) exp(-t/MTT)), convolved on a 0.02 s
  grid, kH = (1 - 0.45)/(1 - 0.25), rho = 1.04 g/ml;
- storage: integer HU (unsigned, intercept -1024), as scanners write them: a "noise-free"
  CT still carries +-0.5 HU of rounding (SD 0.29 HU);
- noise: Gaussian in HU on CT, Rician on MR (``noise`` = SNR of white matter).

Truth per voxel: CBF (ml/100g/min), CBV (ml/100g), MTT = 60 CBV/CBF (s) and Tmax = the
bolus delay (s, the peak of an undispersed exponential residue); core = the block of
CBF 20 % of normal (CT core: rCBF < 30 %), hypoperfusion = core + penumbra (delays 8 and
9 s, both above Tmax 6 s). Adapted from an outside-style probe; small enough for CI.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

KH = (1 - 0.45) / (1 - 0.25)
RHO = 1.04

AIR, SKULL, CSF, GM, WM, ARTERY, VEIN, VENT = 0, 1, 2, 3, 4, 5, 6, 7
CORE_GM, CORE_WM, PEN_GM, PEN_WM = 8, 9, 10, 11
TISSUE = (GM, WM, CORE_GM, CORE_WM, PEN_GM, PEN_WM)


@dataclass(frozen=True)
class BlockSpec:
    modality: str = "CT"
    matrix: int = 128
    pixel_mm: float = 1.8
    n_slices: int = 10
    slice_mm: float = 5.0
    dt_s: float = 1.5
    n_frames: int = 45
    noise: float = 0.0
    """CT: Gaussian SD in HU; MR: SNR of white matter (0: noise free)."""
    delays_by_slice: tuple[float, ...] | None = None
    """Healthy-tissue bolus delay per slice (s); None: 0 everywhere."""
    cbf_gm: float = 60.0
    cbf_wm: float = 25.0
    cbv_gm: float = 4.0
    cbv_wm: float = 2.5
    core_cbf_frac: float = 0.2
    core_cbv_frac: float = 0.5
    core_delay: float = 8.0
    pen_cbf_frac: float = 0.65
    pen_cbv_frac: float = 1.1
    pen_delay: float = 9.0
    aif_peak: float = 320.0
    """CT: HU; MR: ΔR2* (1/s)."""
    te_ms: float = 30.0
    recirculation: float = 0.12
    seed: int = 1
    core_box: tuple[float, float, float, int, int] = (22.0, 50.0, 15.0, 2, 1)
    """Core block: x from, x to, |y| up to (mm), slices mid - a .. mid + b."""
    pen_box: tuple[float, float, float, int, int] = (12.0, 60.0, 30.0, 3, 2)
    """Penumbra block, the same way (the core replaces it where they overlap)."""


DELAY_BANDS = (0.0, 0.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0)

VARIANTS: dict[str, BlockSpec] = {
    # noise-free CT, 1.5 s sampling, healthy tissue delayed 0/1/2/3 s in slice bands
    "ct_nf_delay": BlockSpec(n_slices=8, delays_by_slice=DELAY_BANDS),
    # the same at 1 s sampling, 60 frames
    "ct_nf_1s": BlockSpec(n_slices=8, dt_s=1.0, n_frames=60, delays_by_slice=DELAY_BANDS),
    # realistic CT noise: 10 HU at 0.9 mm pixels is 5 HU on this 1.8 mm grid
    "ct_noisy": BlockSpec(noise=5.0),
    # the outside probe's small CT: 8 HU at 1.8 mm (16 HU at 0.9 mm), 30 frames
    "ct_small": BlockSpec(noise=8.0, n_frames=30),
    # a large core (> 70 mL) at 25 % of normal CBF and a hypoperfusion under 1.8x it, at
    # 5 HU: DEFUSE-3 not met (an outside probe read such a core 35-41 mL: "met")
    "ct_big_core": BlockSpec(
        noise=5.0,
        core_cbf_frac=0.25,
        core_box=(14.0, 62.0, 28.0, 3, 2),
        pen_box=(8.0, 66.0, 38.0, 4, 3),
    ),
    # DSC-MR, noise free
    "mr_nf": BlockSpec(modality="MR", n_slices=6, n_frames=40, aif_peak=80.0),
}


@dataclass
class BlockPhantom:
    spec: BlockSpec
    labels: np.ndarray
    """(Z, Y, X) labels, slice 0 at the lowest z."""
    truth: dict[str, np.ndarray]
    zpos: np.ndarray
    volumes_ml: dict[str, float]
    paths: list[Path] = field(default_factory=list)


def _gamma(t: np.ndarray, t0: float, alpha: float, beta: float) -> np.ndarray:
    x = np.clip(t - t0, 0, None)
    return np.where(t > t0, x**alpha * np.exp(-x / beta), 0.0)


def aif_curve(t: np.ndarray, peak: float, recirculation: float) -> np.ndarray:
    a = _gamma(t, 6.0, 3.0, 1.5)
    a = a / max(float(a.max()), 1e-12) * peak
    r = _gamma(t, 18.0, 2.0, 4.0)
    r = r / max(float(r.max()), 1e-12) * peak * recirculation
    return a + r


def tissue_curve(t: np.ndarray, ca: np.ndarray, cbf: float, cbv: float, delay: float) -> np.ndarray:
    h = t[1] - t[0]
    mtt = 60.0 * cbv / cbf
    shifted = np.interp(t - delay, t, ca, left=0.0)
    return RHO / KH * cbf / 6000.0 * np.convolve(shifted, np.exp(-t / mtt))[: len(t)] * h


def build_labels(s: BlockSpec) -> np.ndarray:
    n, ps = s.matrix, s.pixel_mm
    c = (np.arange(n) - (n - 1) / 2) * ps
    x, y = np.meshgrid(c, c)  # x: column (patient +x, left), y: row
    lab = np.zeros((s.n_slices, n, n), np.uint8)
    zc = (np.arange(s.n_slices) - (s.n_slices - 1) / 2) * s.slice_mm
    mid = s.n_slices // 2
    for k in range(s.n_slices):
        shrink = np.sqrt(max(0.3, 1 - (zc[k] / 110.0) ** 2))
        ax, ay = 70 * shrink, 85 * shrink
        r = np.sqrt((x / ax) ** 2 + (y / ay) ** 2)
        sl = np.zeros((n, n), np.uint8)
        sl[np.sqrt((x / (ax + 9)) ** 2 + (y / (ay + 9)) ** 2) <= 1] = SKULL
        sl[np.sqrt((x / (ax + 2.5)) ** 2 + (y / (ay + 2.5)) ** 2) <= 1] = CSF
        sl[r <= 1] = GM
        sl[np.sqrt((x / (ax - 6)) ** 2 + (y / (ay - 6)) ** 2) <= 1] = WM
        for sx in (-1, 1):
            sl[((x - sx * 9) / 6) ** 2 + ((y + 5) / 22) ** 2 <= 1] = VENT
        px0, px1, py, pa, pb = s.pen_box
        if mid - pa <= k <= mid + pb:
            pen = (x >= px0) & (x <= px1) & (np.abs(y) <= py) & np.isin(sl, (GM, WM))
            sl[pen & (sl == GM)] = PEN_GM
            sl[pen & (sl == WM)] = PEN_WM
        cx0, cx1, cy, ca, cb = s.core_box
        if mid - ca <= k <= mid + cb:
            core = (x >= cx0) & (x <= cx1) & (np.abs(y) <= cy)
            sl[core & np.isin(sl, (GM, PEN_GM))] = CORE_GM
            sl[core & np.isin(sl, (WM, PEN_WM))] = CORE_WM
        for sx in (-1, 1):
            sl[((x - sx * 7) ** 2 + (y + 50) ** 2) <= 3.0**2] = ARTERY
        sl[(x**2 + (y - (ay - 3)) ** 2) <= 4.0**2] = VEIN
        lab[k] = sl
    return lab


def region_params(s: BlockSpec, label: int, k: int) -> tuple[float, float, float] | None:
    """(CBF, CBV, delay) of a tissue label on slice k; None when not perfused tissue."""
    d0 = s.delays_by_slice[k] if s.delays_by_slice else 0.0
    table = {
        GM: (s.cbf_gm, s.cbv_gm, d0),
        WM: (s.cbf_wm, s.cbv_wm, d0),
        CORE_GM: (s.cbf_gm * s.core_cbf_frac, s.cbv_gm * s.core_cbv_frac, s.core_delay),
        CORE_WM: (s.cbf_wm * s.core_cbf_frac, s.cbv_wm * s.core_cbv_frac, s.core_delay),
        PEN_GM: (s.cbf_gm * s.pen_cbf_frac, s.cbv_gm * s.pen_cbv_frac, s.pen_delay),
        PEN_WM: (s.cbf_wm * s.pen_cbf_frac, s.cbv_wm * s.pen_cbv_frac, s.pen_delay),
    }
    return table.get(label)


BASE_CT = {AIR: -1000, SKULL: 1100, CSF: 8, GM: 38, WM: 28, ARTERY: 40, VEIN: 40, VENT: 6}
BASE_CT.update({CORE_GM: 36, CORE_WM: 26, PEN_GM: 38, PEN_WM: 28})
BASE_MR = {AIR: 0, SKULL: 30, CSF: 1400, GM: 900, WM: 750, ARTERY: 800, VEIN: 900, VENT: 1400}
BASE_MR.update({CORE_GM: 950, CORE_WM: 800, PEN_GM: 900, PEN_WM: 750})


def simulate(s: BlockSpec) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(labels, images (T, Z, Y, X) in HU or signal, truth maps)."""
    rng = np.random.default_rng(s.seed)
    lab = build_labels(s)
    nz, n, frames = s.n_slices, s.matrix, s.n_frames
    t_frames = np.arange(frames) * s.dt_s
    tf = np.arange(0, t_frames[-1] + s.dt_s + 5, 0.02)
    ca = aif_curve(tf, s.aif_peak, s.recirculation)
    disp = np.exp(-tf / 2.0) / 2.0
    cv = np.convolve(np.interp(tf - 3.0, tf, ca, left=0.0), disp)[: len(tf)] * 0.02
    conc = np.zeros((frames, nz, n, n), np.float32)
    truth = {m: np.full((nz, n, n), np.nan, np.float32) for m in ("cbf", "cbv", "mtt", "tmax")}
    cache: dict[tuple[float, float, float], np.ndarray] = {}
    for k in range(nz):
        for label in np.unique(lab[k]):
            m = lab[k] == label
            if label == ARTERY:
                cur = np.interp(t_frames, tf, ca)
            elif label == VEIN:
                cur = np.interp(t_frames, tf, cv)
            else:
                p = region_params(s, int(label), k)
                if p is None:
                    continue
                cbf, cbv, d = p
                if p not in cache:
                    cache[p] = np.interp(t_frames, tf, tissue_curve(tf, ca, cbf, cbv, d))
                cur = cache[p]
                truth["cbf"][k][m], truth["cbv"][k][m] = cbf, cbv
                truth["mtt"][k][m], truth["tmax"][k][m] = 60 * cbv / cbf, d
            conc[:, k][:, m] = cur[:, None]
    if s.modality == "CT":
        base = np.vectorize(BASE_CT.get)(lab).astype(np.float32)
        img = base[None] + conc
        if s.noise > 0:
            img = img + rng.normal(0, s.noise, img.shape).astype(np.float32)
    else:
        s0 = np.vectorize(BASE_MR.get)(lab).astype(np.float32)
        img = s0[None] * np.exp(-s.te_ms / 1000.0 * conc)
        if s.noise > 0:
            sigma = 750.0 / s.noise
            re = img + rng.normal(0, sigma, img.shape).astype(np.float32)
            im = rng.normal(0, sigma, img.shape).astype(np.float32)
            img = np.sqrt(re**2 + im**2)
    return lab, img.astype(np.float32), truth


def truth_volumes(s: BlockSpec, lab: np.ndarray) -> dict[str, float]:
    vox_ml = s.pixel_mm**2 * s.slice_mm / 1000.0
    core = np.isin(lab, (CORE_GM, CORE_WM))
    hypo = core | np.isin(lab, (PEN_GM, PEN_WM))  # the core's delay (8 s) is > 6 s too
    return {
        "core": float(core.sum() * vox_ml),
        "hypoperfusion": float(hypo.sum() * vox_ml),
        "voxel_ml": vox_ml,
    }


def _tm(seconds: float) -> str:
    seconds = seconds % 86400
    h, m = int(seconds // 3600), int((seconds % 3600) // 60)
    return f"{h:02d}{m:02d}{seconds - h * 3600 - m * 60:09.6f}"


def write_dicom(s: BlockSpec, img: np.ndarray, out: Path) -> tuple[list[Path], np.ndarray]:
    """One classic CT / MR Image per (time point, slice), Acquisition Date/Time timing."""
    out.mkdir(parents=True, exist_ok=True)
    frames, nz, n, _ = img.shape
    study, series, frame_of_ref = generate_uid(), generate_uid(), generate_uid()
    start = 10 * 3600 + 15 * 60 + 7.25
    zpos = (np.arange(nz) - (nz - 1) / 2) * s.slice_mm + 40.0
    corner = -(n - 1) / 2 * s.pixel_mm
    ct = s.modality == "CT"
    sop_class = "1.2.840.10008.5.1.4.1.1.2" if ct else "1.2.840.10008.5.1.4.1.1.4"
    paths = []
    for t in range(frames):
        for k in range(nz):
            ds = Dataset()
            ds.SOPClassUID = sop_class
            ds.SOPInstanceUID = generate_uid()
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
            ds.FrameOfReferenceUID = frame_of_ref
            ds.Modality = s.modality
            ds.PatientName, ds.PatientID = "Blocks^Phantom", "BLOCKS01"
            ds.PatientBirthDate, ds.PatientSex = "19500101", "O"
            ds.StudyDate, ds.StudyTime, ds.StudyID = "20240317", "101500", "1"
            ds.AccessionNumber, ds.ReferringPhysicianName = "B1", ""
            ds.SeriesNumber, ds.InstanceNumber = 5, t * nz + k + 1
            ds.SeriesDescription = "Blocks perfusion" if ct else "ep2d_perf blocks"
            ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
            ds.Manufacturer = "BlocksVendor"
            ds.AcquisitionDate = _dt.date(2024, 3, 17).strftime("%Y%m%d")
            ds.AcquisitionTime = _tm(start + t * s.dt_s)
            ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
            ds.PixelSpacing = [s.pixel_mm, s.pixel_mm]
            ds.ImagePositionPatient = [corner, corner, float(zpos[k])]
            ds.SliceLocation = float(zpos[k])
            ds.SliceThickness = s.slice_mm
            ds.Rows = ds.Columns = n
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
            if ct:
                arr = np.clip(np.round(img[t, k] + 1024), 0, 65535).astype(np.uint16)
                ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1.0, -1024.0, "HU"
                ds.KVP = 80
            else:
                arr = np.clip(np.round(img[t, k] * 2), 0, 65535).astype(np.uint16)
                ds.RescaleSlope, ds.RescaleIntercept = 0.5, 0.0
                ds.EchoTime, ds.RepetitionTime = s.te_ms, s.dt_s * 1000
                ds.MagneticFieldStrength = 3
                ds.ScanningSequence, ds.SequenceVariant = "EP", "NONE"
                ds.MRAcquisitionType = "2D"
            ds.PixelData = arr.tobytes()
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = ds.SOPClassUID
            meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.file_meta = meta
            path = out / f"IM{t * nz + k + 1:05d}.dcm"
            ds.save_as(path, enforce_file_format=True)
            paths.append(path)
    return paths, zpos


def generate(
    variant: str | BlockSpec, out_dir: str | Path, seed: int | None = None, **overrides: object
) -> BlockPhantom:
    """Write the phantom ``variant`` (a ``VARIANTS`` key or a spec) as DICOM to ``out_dir``."""
    spec = VARIANTS[variant] if isinstance(variant, str) else variant
    if seed is not None:
        overrides["seed"] = seed
    spec = replace(spec, **overrides)  # type: ignore[arg-type]
    lab, img, truth = simulate(spec)
    paths, zpos = write_dicom(spec, img, Path(out_dir))
    return BlockPhantom(spec, lab, truth, zpos, truth_volumes(spec, lab), paths)
