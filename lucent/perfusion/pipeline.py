"""The whole analysis: DICOM in, maps, segmentation, QC, DICOM and JSON out.

Stages are timed (issue 6: per-stage timings in result.json), report progress and can be
cancelled between stages (ARCHITECTURE: long work runs as a job with progress).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from scipy import ndimage

from . import aif as aif_mod
from .companion import labelled_adc
from .companion import problem as companion_problem
from .config import PerfusionConfig
from .coregister import coregister, to_sitk
from .deconvolution import Deconvolved, correct_truncation, model_fit
from .maps import (
    DSC_TMAX_LAG_FRACTION,
    MAP_UNITS,
    TMAX_LAG_FRACTION,
    adaptive_oi,
    compute_maps,
    first_pass_window,
    hematocrit_factor,
)
from .mask import find_brain, tissue_mask
from .model import PerfusionSeries, Refusal, RefusalCode
from .motion import MotionReport, correct_motion
from .parameters import recorded
from .qc import bolus_flags, hemisphere_stats, tmax_ranges, tmax_reason
from .segmentation import hemispheres, mark_unreliable, segment, summarise
from .series import assemble, load_volume
from .signal import (
    detect_baseline,
    leakage_correct,
    main_components,
    mp_noise_sd,
    pca_basis,
    pca_denoise,
    resample_to_grid,
    tips_filter,
    to_concentration,
    uniform_grid,
    upsample_curves,
)

VERSION = "0.1.0"
STAGES = (
    "load",
    "motion",
    "timing",
    "mask",
    "concentration",
    "aif",
    "denoise",
    "deconvolution",
    "coregistration",
    "segmentation",
    "qc",
    "output",
)

Progress = Callable[[float, str], None]


class CancelToken(Protocol):
    def is_set(self) -> bool: ...


class Cancelled(Exception):
    pass


@dataclass
class PerfusionResult:
    """Everything one analysis produced; ``to_dict`` is result.json."""

    series: PerfusionSeries
    maps: dict[str, np.ndarray]
    brain: np.ndarray
    tissue: np.ndarray
    core: np.ndarray
    hypo: np.ndarray
    summary: dict[str, Any]
    inputs: dict[str, Any]
    motion: MotionReport | None
    qc: dict[str, Any]
    timings: dict[str, float]
    baseline_image: np.ndarray
    grid_start_s: float
    dt: float
    warnings: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    coregistration: dict[str, Any] | None = None
    """Per coregistered series ("dwi", "flair"): rigid transform and similarity (result.json)."""
    flair: np.ndarray | None = None
    """FLAIR resampled onto the perfusion grid (overlay pages), when one was given."""
    parameters: dict[str, Any] = field(default_factory=dict)
    """Method and thresholds used (``parameters.recorded``): result.json, SR, pages."""

    def to_dict(self) -> dict[str, Any]:
        s = self.series
        return {
            "status": "ok",
            "software": {"name": "lucent-perfusion", "version": VERSION},
            "input": {
                "modality": s.modality,
                "series_instance_uids": s.series_uids,
                "other_series_not_used": s.other_series,
                "timing_source": s.timing_source,
                "frames": int(s.shape[0]),
                "slices": int(s.shape[1]),
                "matrix": [int(s.shape[2]), int(s.shape[3])],
                "bin_factor": s.bin_factor,
                "voxel_mm": [round(v, 4) for v in s.spacing],
                "coverage_mm": round(s.spacing[0] * s.shape[1], 2),
                "echo_time_s": s.echo_time_s,
                "sampling_interval_s": round(self.dt, 4),
                **self.inputs,
            },
            "parameters": self.parameters,
            "volumes": self.summary,
            "qc": self.qc,
            "motion": None if self.motion is None else self.motion.to_dict(),
            "coregistration": self.coregistration,
            "map_units": MAP_UNITS,
            "warnings": self.warnings,
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
            "outputs": self.outputs,
        }


CT_FINE_ABOVE_S = 1.5
"""CT curves sampled coarser than this are deconvolved on a grid of ``ct_fine_dt_s``."""
CT_CBV_MARGIN_S = 5.0
"""CT first-pass CBV: seconds after the brain's mean curve is back below 10 % of its peak,
besides each voxel's own Tmax (``maps.cbv_areas``)."""
TIPS_MAX_OFFSETS = 64
"""CT: a TIPS disc with more neighbours than this is filtered separably (row then column
pass): the exact disc of a 5 mm sigma at 0.9 mm pixels (~600 neighbours) alone took ~70 s
for a 256² x 12 x 45 CTP, the separable pass ~5 s (issue 6 benchmark: < 30 s end to end)."""

_PLANE = np.zeros((3, 3, 3), bool)
_PLANE[1] = ndimage.generate_binary_structure(2, 1)


def _aif_onset(aif: np.ndarray, start: int) -> int:
    """First frame of the arterial bolus: walking back from the peak to < 5 % of it."""
    peak = int(np.argmax(aif))
    i = peak
    while i > start and aif[i] >= 0.05 * aif[peak]:
        i -= 1
    return max(i, start + 2)


def _local_pca(frames: np.ndarray, min_keep: int, block: int) -> None:
    """DSC: MP-PCA of the EPI signal in overlapping in-plane blocks of each slice, in place.

    The curves the DSC similarity filter averages. A slice-wide subspace is fitted by normal
    tissue: a penumbra's delayed, dispersed bolus needs components below the slice's
    Marchenko-Pastur edge, and its projection loses 15-20 % of its CBV at SNR 20. Local
    patches (Veraart et al., NeuroImage 2016, use sliding windows) adapt the subspace to
    what is there. Blocks overlap by half and are blended with a triangular weight.
    """
    n_t, n_z, n_y, n_x = frames.shape
    step = max(1, block // 2)
    ramp = np.minimum(np.arange(1, block + 1), np.arange(block, 0, -1)).astype(np.float32)
    for z in range(n_z):
        img = frames[:, z]
        mean = img.mean(axis=0)
        head = mean > 0.2 * float(np.percentile(mean, 95))
        if head.sum() < 4 * n_t:
            continue
        sd = float(np.median(np.abs(np.diff(img[:, head], axis=0))) / (0.6745 * np.sqrt(2)))
        acc = np.zeros_like(img)
        wsum = np.zeros((n_y, n_x), np.float32)
        ys = list(range(0, max(n_y - block, 0) + 1, step))
        xs = list(range(0, max(n_x - block, 0) + 1, step))
        if ys[-1] + block < n_y:
            ys.append(n_y - block)
        if xs[-1] + block < n_x:
            xs.append(n_x - block)
        for y0 in ys:
            for x0 in xs:
                sl = (slice(None), slice(y0, y0 + block), slice(x0, x0 + block))
                w = np.outer(ramp[: min(block, n_y - y0)], ramp[: min(block, n_x - x0)])
                patch = img[sl].reshape(n_t, -1)
                inside = head[sl[1:]].ravel()
                out = patch.copy()
                if inside.sum() >= n_t:
                    sig = np.ascontiguousarray(patch[:, inside].T, dtype=np.float32)
                    mu = sig.mean(axis=0, keepdims=True)
                    den, _ = pca_denoise(sig - mu, sd, min_keep=min_keep, min_ratio=1)
                    out[:, inside] = (den + mu).T
                acc[sl] += out.reshape(n_t, *w.shape) * w
                wsum[sl[1:]] += w
        frames[:, z] = np.where(wsum > 0, acc / np.maximum(wsum, 1e-9), img)


def _leave_out(
    series: PerfusionSeries, drop: list[int], config: PerfusionConfig, warnings: list[str]
) -> np.ndarray:
    """Leave out the frames whose registration failed (``MotionReport.implausible_frames``)
    and let the curves be interpolated across them, as across a missing time point.

    Such a frame is moved beyond what motion correction could undo; kept, its skull edge
    lends edge voxels a one-frame 'bolus' of ~1000 HU (outside probe 36: the AIF, then CBV
    0 and the whole brain core). Never so many that the series falls under
    ``min_time_points``, nor the first or last frame (the grid would shrink): those stay,
    flagged severe by the motion report."""
    n_t = series.frames.shape[0]
    gone = sorted(t for t in set(drop) if 0 < t < n_t - 1)
    if not gone or n_t - len(gone) < config.min_time_points:
        return series.frames
    keep = np.setdiff1d(np.arange(n_t), gone)
    series.frames = series.frames[keep]
    series.times = series.times[keep]
    warnings.append(
        f"time point(s) {', '.join(str(t + 1) for t in gone)} left out: moved beyond what "
        "motion correction could undo; their values are interpolated from the neighbours"
    )
    return series.frames


def _signal_noise_sd(frames: np.ndarray) -> float:
    """Noise SD of (T, Z, Y, X) magnitude frames: median over slices of the robust
    temporal-difference estimate in the head (var(diff) = 2 sigma², robust to the bolus)."""
    sds = []
    for z in range(frames.shape[1]):
        img = frames[:, z].reshape(frames.shape[0], -1)
        mean = img.mean(axis=0)
        head = mean > 0.2 * float(np.percentile(mean, 95))
        if head.sum() < 10:
            continue
        d = np.abs(np.diff(img[:, head], axis=0))
        sds.append(float(np.median(d)) / (0.6745 * np.sqrt(2)))
    return float(np.median(sds)) if sds else 0.0


def _native_pca(frames: np.ndarray, min_keep: int) -> int:
    """DSC: MP-PCA of the EPI signal per slice on the acquired frames, in place.

    Before interpolation onto the common time grid: interpolation with a different weight per
    slice colours the noise (the Marchenko-Pastur edge then passes nearly every component),
    and in the signal domain the noise is white, unlike ΔR2* = -ln(S/S0)/TE whose noise grows
    as S falls. A per-slice edge misses the bolus shapes of small regions (a penumbra), so
    at least ``min_keep`` components stay. Returns the largest number of components kept in a slice.
    """
    n_t = frames.shape[0]
    kept = 0
    for z in range(frames.shape[1]):
        img = frames[:, z].reshape(n_t, -1)
        mean = img.mean(axis=0)
        head = mean > 0.2 * float(np.percentile(mean, 95))
        if head.sum() < 4 * n_t:
            continue
        sig = np.ascontiguousarray(img[:, head].T, dtype=np.float32)
        # noise from temporal differences (robust to the bolus): var(diff) = 2 sigma²
        sd = float(np.median(np.abs(np.diff(sig, axis=1)), axis=None)) / (0.6745 * np.sqrt(2))
        den, n_keep = pca_denoise(sig, sd, min_keep=min_keep)
        kept = max(kept, n_keep)
        img[:, head] = den.T
        frames[:, z] = img.reshape(frames[:, z].shape)
    return kept


TRUNCATION_GUIDE_PX = 1.5
"""In-plane sigma (pixels) of the CBF/CBV that the truncation correction reads MTTs from."""
CORE_NOISE_MIN_ML = 5.0
CORE_NOISE_FRACTION = 0.5
"""An rCBF core whose noise range (``segmentation.core_noise_range``) is wider than the
larger of these (mL, fraction of the core) raises ``core_noise`` and ``core_reliable`` false."""
VESSEL_SHARE_FLAG = 0.10
"""Share of the tissue left out as vessels (CBV over the vessel threshold) above which QC
warns: vessels are a few per cent of a brain."""
TMAX_LAG_FLAG_S = 1.0
"""A Tmax uncertainty of delayed tissue (``_tmax_lag``) above this raises ``tmax_resolution``."""


def storage_noise_sd(series: PerfusionSeries) -> float:
    """SD (HU) of the rounding to the stored integer values: RescaleSlope / sqrt(12), less
    after in-plane binning. A "noise-free" CT stored in whole HU (what scanners and most
    phantom writers store) has identical curves in a tissue block, so MP-PCA and the baseline
    read ~0 noise and oSVD got the threshold of a CNR of 10^9; the +-0.5 HU steps of a
    6 HU white-matter curve are noise to the deconvolution (independent phantom, 1 s
    sampling: white-matter CBF 0.86, MTT 1.16x of truth; with this floor 0.97, 1.02x)."""
    headers = series.slice_headers
    try:
        slope = abs(float(headers[0].get("RescaleSlope", 1.0) or 1.0)) if headers else 1.0
    except (TypeError, ValueError):
        slope = 1.0
    return slope / math.sqrt(12.0) / max(1, series.bin_factor)


def _tmax_lag(
    dec: Deconvolved,
    cbv: np.ndarray,
    inside: np.ndarray,
    smooth: Callable[[np.ndarray], np.ndarray],
    threshold_s: float,
    cbf_factor: float,
) -> tuple[float, np.ndarray] | None:
    """Median Tmax lag (s) that the oSVD truncation leaves on a sharp-onset (exponential)
    residue, over the tissue that reads Tmax > ``threshold_s`` (all tissue when that is
    under 20 voxels), and the per-voxel lag; None without a filter bank.

    At a CNR of ~20 (DSC) oSVD keeps 10-15 of 100 frequencies and the residue's peak moves
    late by 1.5-2.5 s for an undispersed exponential residue (independent phantom, SNR 20:
    Tmax-8 s penumbra +2.2/+2.5 s, Tmax>10 s volume 3.7x, HIR 0.83 for 0.22), but by only
    ~0.5 s for one dispersed by 1 s (our own DSC phantom's penumbra); on CT at 5 HU 2-5 s
    (long-MTT cores). The kept band cannot tell the two apart (the dispersion's effect lies
    above it; the tissue curve's fit residuals differ by < 10 %), so delayed tissue keeps a
    share of the lag uncorrected (``maps.TMAX_LAG_FRACTION``); that share of this lag is
    the uncertainty QC reports (``tmax_resolution``). ``dec.lag`` when the maps were
    corrected, else the exponential tables' lag.
    """
    if dec.bank is None or dec.filter_index is None or not inside.any():
        return None
    if dec.lag is not None:
        full = dec.tmax - dec.lag
    else:
        cbf = dec.rmax * np.float32(cbf_factor)
        _, full = correct_truncation(cbf, cbv, dec, (smooth(cbf), smooth(cbv)), smooth)
    every = np.clip(dec.tmax - full, 0, None).astype(np.float32)
    lag = every[inside]
    raw = dec.tmax[inside]
    # correct_truncation clips Tmax at 0: only voxels whose corrected Tmax is above 0
    usable = full[inside] > 0
    late = usable & (raw > threshold_s)
    sel = late if late.sum() >= 20 else usable
    return (float(np.median(lag[sel])), every) if sel.any() else None


NOISE_FREE_FIT_MAX_DT_S = 1.25
"""Sampling (s) up to which noise-free CT takes its CBF from the model fit (``_noise_free_maps``).
At 1 s it read within 10 % at every delay where oSVD read +10-18 % (outside probe 53); at 1.5
and 2 s its CBF depended on the delay's phase between samples as much as oSVD's did (white
matter 1 s behind the AIF: +16 % vs +8 % at 1.5 s, +17 % vs +18 % at 2 s; grey matter 2 s
behind at 1.5 s: +11 % vs +1 %): there the templates' AIF, interpolated between coarse
samples, is not the one the tissue saw."""


def _noise_free_maps(
    flat: dict[str, np.ndarray],
    inside: np.ndarray,
    fit: tuple[np.ndarray, ...],
    cbf_factor: np.float32,
    box_weight: np.ndarray | None,
) -> None:
    """CBF and MTT of the ``inside`` curves from their model fit (``model_fit``), in place,
    for curves whose only noise is the rounding to stored integers; where the residue reads
    as a box (``box_weight``) the deconvolution's plateau keeps its share.

    With no noise to regularise against, oSVD's oscillation index picks its filter on the
    rounding steps, which differ with the sampling phase of the bolus: an outside phantom's
    normal grey matter (CBF 60, integer HU, 1 s) read 61.7 with the tissue 0 s behind the
    AIF, 56.0 at 0.5 s and 70.0 at 1 s (+17 %). The model fit, which the CT core is decided
    on anyway, read 60.5-65.9 at every phase, and came closer than oSVD to a dispersed
    residue's flow (1-3 s dispersion: 39-57 vs 32-52 of 60). Tmax stays oSVD's: the fit's
    delay was exact where the curve is high, but 5.6 s for 8 on a white-matter core whose
    curve peaks at ~1.5 HU (probe 44's phantom: hypoperfusion -24 %). CBV stays the area."""
    cbf = np.clip(fit[0] * cbf_factor, 0, None).astype(np.float32)
    if box_weight is not None:
        w = np.clip(box_weight, 0.0, 1.0).astype(np.float32)
        cbf = (1 - w) * cbf + w * flat["cbf"][inside]
    cbv = flat["cbv"][inside]
    flat["cbf"][inside] = cbf
    with np.errstate(divide="ignore", invalid="ignore"):
        mtt = np.where(cbf > 1e-3, 60.0 * cbv / cbf, 0.0)
    flat["mtt"][inside] = np.clip(mtt, 0, 30).astype(np.float32)


class _TissueSmoother:
    """Normalised in-plane Gaussian of flat per-voxel arrays over the tissue voxels (the
    others keep their own values): no mixing with vessels, skull, air, CSF or the brain
    edge. The normalising weight is computed once for every array smoothed."""

    def __init__(self, tissue: np.ndarray, idx: tuple[np.ndarray, ...], sigma: float) -> None:
        self.inside = tissue[idx]
        self.sub = tuple(i[self.inside] for i in idx)
        self.shape = tissue.shape
        self.sigma = (0.0, sigma, sigma)
        weight = ndimage.gaussian_filter(tissue.astype(np.float32), self.sigma, truncate=3.0)
        self.weight = np.maximum(weight[self.sub], 1e-6)

    def __call__(self, values: np.ndarray) -> np.ndarray:
        vol = np.zeros(self.shape, np.float32)
        vol[self.sub] = values[self.inside]
        out = values.astype(np.float32, copy=True)
        out[self.inside] = (
            ndimage.gaussian_filter(vol, self.sigma, truncate=3.0)[self.sub] / self.weight
        )
        return out


def _dilate2d(mask: np.ndarray, it: int) -> np.ndarray:
    st = np.zeros((3, 3, 3), bool)
    st[1] = ndimage.generate_binary_structure(2, 1)
    return ndimage.binary_dilation(mask, structure=st, iterations=it)


NOT_USED_FLAGS = {"dwi": "dwi_not_used", "flair": "flair_not_used"}
"""QC flag codes of a DWI/FLAIR input that was given but not used (``companion``)."""
COREGISTER_MIN_SLICES = 4
"""ITK's recursive Gaussian (``coregister``) needs 4 voxels along every axis: a 2-3 slice
perfusion with a DWI crashed the whole analysis."""


def _coregistered(
    path: str | Path | Sequence[str | Path],
    key: str,
    label: str,
    series: PerfusionSeries,
    base_img: np.ndarray,
    report: dict[str, Any],
    warnings: list[str],
    flags: list[dict[str, str]],
) -> np.ndarray | None:
    """Load a static series (DWI/ADC, FLAIR), check it (``companion``), register it rigidly
    to the perfusion baseline and return it on the perfusion grid; the transform goes into
    ``report[key]``.

    A series that cannot be read, is of another patient or (DWI) is not an ADC map is not
    used: a warning and a QC flag say why, and the analysis goes on without it (perfusion
    maps stand alone; the core then comes from rCBF).
    """
    instead = "; the core comes from rCBF" if key == "dwi" else ""

    def not_used(why: str) -> None:
        reason = f"{label} input not used: {why}{instead}"
        warnings.append(reason)
        flags.append({"code": NOT_USED_FLAGS[key], "reason": reason})

    loaded = load_volume(path, prefer=labelled_adc if key == "dwi" else None)
    if isinstance(loaded, Refusal):
        not_used(loaded.reason)
        return None
    why = companion_problem(key, series.slice_headers[0], loaded.header, loaded.values)
    if why is None and min(base_img.shape[0], loaded.values.shape[0]) < COREGISTER_MIN_SLICES:
        why = (
            f"too few slices to coregister (perfusion {base_img.shape[0]}, {label} "
            f"{loaded.values.shape[0]}; at least {COREGISTER_MIN_SLICES} each)"
        )
    if why is not None:
        not_used(why)
        return None
    geo = loaded.geometry
    fixed = to_sitk(
        base_img, series.origin, series.row_dir, series.col_dir, series.normal, series.spacing
    )
    moving = to_sitk(
        loaded.values,
        np.asarray(geo["origin"]),
        np.asarray(geo["row_dir"]),
        np.asarray(geo["col_dir"]),
        np.asarray(geo["normal"]),
        geo["spacing"],  # type: ignore[arg-type]
    )
    try:
        result = coregister(fixed, moving)
    except RuntimeError as exc:  # SimpleITK: a registration that cannot run is no crash
        not_used(f"coregistration failed ({str(exc).strip().splitlines()[-1][:200]})")
        return None
    report[key] = result.to_dict()
    return result.resampled


def analyse(
    inputs: str | Path | Sequence[str | Path],
    *,
    config: PerfusionConfig | None = None,
    dwi: str | Path | Sequence[str | Path] | None = None,
    out_dir: str | Path | None = None,
    progress: Progress | None = None,
    cancel: CancelToken | None = None,
    flair: str | Path | Sequence[str | Path] | None = None,
) -> PerfusionResult | Refusal:
    """Run the whole analysis; a refusal (not an exception) when the input is unusable."""
    config = config or PerfusionConfig()
    timings: dict[str, float] = {}

    @contextmanager
    def stage(name: str) -> Iterator[None]:
        if cancel is not None and cancel.is_set():
            raise Cancelled(name)
        if progress is not None:
            progress(STAGES.index(name) / len(STAGES), name)
        t0 = time.perf_counter()
        yield
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0

    try:
        return _run(inputs, config, dwi, flair, out_dir, stage, timings, progress)
    except Cancelled as exc:
        return Refusal(RefusalCode.CANCELLED, f"cancelled before stage {exc}")


def _run(
    inputs: str | Path | Sequence[str | Path],
    config: PerfusionConfig,
    dwi: str | Path | Sequence[str | Path] | None,
    flair: str | Path | Sequence[str | Path] | None,
    out_dir: str | Path | None,
    stage: Callable[[str], Any],
    timings: dict[str, float],
    progress: Progress | None,
) -> PerfusionResult | Refusal:
    with stage("load"):
        series = assemble(inputs, config)
    if isinstance(series, Refusal):
        return series
    warnings = list(series.warnings)
    modality = series.modality
    skip = config.dsc_skip_frames if modality == "MR" else 0
    frames = series.frames
    motion: MotionReport | None = None
    with stage("motion"):
        if config.motion_correction and frames.shape[0] > 1:
            motion = correct_motion(
                frames,
                series.spacing,
                modality,
                reference=min(skip, frames.shape[0] - 1),
                apply_min_mm=config.motion_apply_min_mm,
                severe_mm=config.severe_motion_mm,
            )
            if motion.implausible_frames:
                frames = _leave_out(series, motion.implausible_frames, config, warnings)
    native_pca: int | None = None
    local: np.ndarray | None = None
    raw: np.ndarray | None = None
    saturated: np.ndarray | None = None
    with stage("timing"):
        if modality == "MR":
            # the AIF is read from the acquired signal: MP-PCA fitted by tissue distorts an
            # artery's deep, narrow dip; frames in the Rician floor are marked saturated
            raw = frames.copy()
            floor = config.dsc_aif_floor_sd * _signal_noise_sd(raw)
            saturated = (raw < floor).astype(np.float32)
        if modality == "MR" and config.pca_denoise:
            if config.dsc_filter == "tips" and config.dsc_local_pca_block > 0:
                local = frames.copy()
                _local_pca(local, config.dsc_local_pca_min_components, config.dsc_local_pca_block)
            native_pca = _native_pca(frames, config.dsc_pca_min_components)
        grid, dt = uniform_grid(series.times)
        frames = resample_to_grid(frames, series.times, grid)
        if local is not None:
            local = resample_to_grid(local, series.times, grid)
        if raw is not None and saturated is not None:
            raw = resample_to_grid(raw, series.times, grid)
            # a grid frame interpolated from a saturated acquired frame is saturated too
            saturated = resample_to_grid(saturated, series.times, grid) > 1e-3
        series.frames = frames
    n_k, n_z, n_y, n_x = frames.shape
    with stage("mask"):
        pre = frames[skip : skip + 3].mean(axis=0)
        # slices whose skull ring is open (burr hole, craniectomy) are repaired or named
        found_brain = find_brain(pre, modality, series.spacing[1], config.ct_brain_hu)
        brain = found_brain.mask
        warnings.extend(found_brain.warnings)
        if brain.sum() < 100:
            return Refusal(
                RefusalCode.UNSUPPORTED,
                "no brain found in the perfusion images (is this a head perfusion?)",
            )
        mean_curve = frames[:, brain].mean(axis=1)
        baseline = detect_baseline(mean_curve, modality, skip)
        warnings.extend(baseline.warnings)
        base_img = frames[baseline.start : baseline.end].mean(axis=0)
        tissue = tissue_mask(brain, base_img, modality, config.ct_csf_max_hu)
    with stage("concentration"):
        search = _dilate2d(brain, 1)
        idx = np.nonzero(search)
        curves = frames[:, search].T.copy()  # (n, K)
        conc, s0 = to_concentration(curves, baseline, modality, series.echo_time_s)
        conc_local = None
        if local is not None:
            conc_local, _ = to_concentration(
                local[:, search].T.copy(), baseline, modality, series.echo_time_s
            )
            del local
        conc_aif, aif_valid = conc, None
        if raw is not None and saturated is not None:
            conc_aif, _ = to_concentration(
                raw[:, search].T.copy(), baseline, modality, series.echo_time_s
            )
            aif_valid = ~saturated[:, search].T
            del raw, saturated
        del curves
    with stage("aif"):
        try:
            # AIF/VOF search away from the brain edge (residual motion, skull partial volume)
            inner = ndimage.binary_erosion(brain, structure=_PLANE) if brain.sum() > 1000 else brain
            in_brain = inner[idx]
            if modality == "MR":
                # DSC: ΔR2* = -ln(S/S0)/TE of a low-signal voxel (skull, air, partial volume at
                # the edge) is noise-dominated and can out-score every artery at SNR 40: only
                # voxels with at least half the median brain baseline signal may be AIF/VOF.
                in_brain &= s0 >= 0.5 * float(np.median(s0[brain[idx]]))
            coords = np.stack(idx, axis=1)

            def pick() -> aif_mod.InputFunctions:
                rank, measure = conc_aif[in_brain], None
                pre = rank[:, baseline.start : baseline.end]
                if modality == "CT" and pre.shape[1] >= 2:
                    # select on a baseline from the odd pre-bolus frames, read the curves
                    # with one from the even frames: the baseline error (the largest noise
                    # of a curve's area) of the winners is then not the one they won by
                    rank = rank - pre[:, 1::2].mean(axis=1, keepdims=True)
                    measure = conc_aif[in_brain] - pre[:, 0::2].mean(axis=1, keepdims=True)
                return aif_mod.select(
                    rank,
                    coords[in_brain],
                    config.aif_voxels,
                    config.vof_voxels,
                    config.pve_correction,
                    config.max_pve_scale,
                    valid=None if aif_valid is None else aif_valid[in_brain],
                    measure=measure,
                )

            fns = pick()
            # arteries enhance before the brain average: end the baseline before the AIF rises,
            # otherwise its first enhanced frames raise S0 and shrink every curve's area
            aif_end = _aif_onset(fns.aif_raw, baseline.start)
            if aif_end < baseline.end:
                baseline.end = aif_end
                conc -= conc[:, baseline.start : baseline.end].mean(axis=1, keepdims=True)
                if conc_aif is not conc:
                    conc_aif -= conc_aif[:, baseline.start : baseline.end].mean(
                        axis=1, keepdims=True
                    )
                fns = pick()
        except ValueError as exc:
            return Refusal(RefusalCode.NO_BOLUS, f"no bolus: {exc}")
        warnings.extend(fns.warnings)
        # DSC: the unfiltered curves re-read the rCBF core's edge (refine_core_boundary)
        edge_curves = None
        if modality == "MR" and config.dsc_core_edge:
            edge_curves = (conc_aif, idx)
        conc_aif = conc  # free the raw-signal curves (MR) unless kept above
    with stage("denoise"):
        # denoising after AIF selection: arteries are a few voxels wide
        if modality == "CT":
            # CT: MP-PCA noise from all frames (signal.marchenko_pastur_sd); the median SD of
            # 3-5 pre-bolus frames read ~0.8 sigma and MP-PCA then kept every component
            noise_sd = mp_noise_sd(conc[brain[idx]])
        else:
            noise_sd = float(np.median(conc[:, baseline.start : baseline.end].std(axis=1)))
        # contrast-to-noise of the mean brain curve sets the oSVD regularisation (see below)
        # no curve is known better than its storage step (``storage_noise_sd``)
        floor = storage_noise_sd(series) if modality == "CT" else 0.0
        # curves with no noise but their rounding (a noise-free phantom): denoising cannot
        # remove it (identical in every voxel of a tissue), the residue shape test must
        # discount it (``residue_shape.box_weight``)
        rounding_sd = floor if modality == "CT" and noise_sd <= floor else 0.0
        cnr = float(conc[brain[idx]].mean(axis=0).max()) / max(noise_sd, floor, 1e-9)
        basis: np.ndarray | None = None
        if modality == "MR":
            warnings_pca = native_pca
        elif config.pca_denoise:
            # MP-PCA needs no pre-bolus frames: its noise comes from the eigenvalues
            basis = pca_basis(conc, noise_sd, min_keep=config.ct_pca_min_components)
            if basis is not None and basis.shape[1] > 0:
                conc = (conc @ basis) @ basis.T
                warnings_pca = basis.shape[1]
            else:
                basis = None
                warnings_pca = conc.shape[1]
        else:
            warnings_pca = None
        smoothing = config.smoothing_mm if modality == "CT" else config.dsc_smoothing_mm
        sigma = smoothing / series.spacing[1]
        tips = config.dsc_filter == "tips" if modality == "MR" else config.ct_filter == "tips"
        if sigma > 0.3 and tips:
            # edge-preserving: similar curves only (signal.tips_filter); it averages the
            # locally denoised curves, weighted by the similarity of their main components;
            # every voxel continues with its locally denoised curve (AIF/VOF already chosen)
            inside = tissue[idx]
            values = conc if conc_local is None else conc_local
            features_of = values
            if basis is not None:
                # CT: the filter is linear in the curves, so it runs on their MP-PCA
                # coefficients (a few per voxel instead of K frames) at the same result.
                # Similarity of the curves' shapes, not of their level: a CT baseline is
                # 3-5 frames, its mean error (sigma/2) shifts the whole curve and would rank
                # among the main components, so the filter would keep that noise apart
                # instead of averaging it
                features_of = (conc - conc.mean(axis=1, keepdims=True)) @ basis
                values = conc @ basis
            values = tips_filter(
                values,
                main_components(features_of, inside, config.dsc_tips_rank),
                idx,
                (n_z, n_y, n_x),
                inside,
                sigma,
                config.dsc_tips_strength,
                guide=s0 if modality == "MR" else None,
                max_offsets=TIPS_MAX_OFFSETS if modality == "CT" else None,
            )
            conc = values if basis is None else values @ basis.T
        elif sigma > 0.3:
            # normalised convolution inside the tissue: no mixing with skull, air, CSF or the
            # brain edge (whose ΔR2* is noise-dominated on DSC); other voxels keep their own
            # curves (AIF/VOF already chosen)
            smooth = _TissueSmoother(tissue, idx, sigma)
            for k in range(n_k):
                conc[smooth.inside, k] = smooth(conc[:, k])[smooth.inside]
        # denoising (MP-PCA + tissue smoothing) removes most of the voxel noise, so the
        # oSVD regularisation follows the CNR of the curves it deconvolves, on CT as on
        # DSC: measured on the raw CT curves (0.7-2 at 10 HU) it pinned the OI threshold
        # at its floor and oSVD truncated every residue (CBF 16-43 %, Tmax +3-4 s)
        after = conc[tissue[idx], baseline.start : baseline.end]
        if after.size and after.shape[1] >= 3:
            sd_after = float(np.median(after.std(axis=1)))
            cnr = float(conc[brain[idx]].mean(axis=0).max()) / max(sd_after, floor, 1e-9)
        k2 = None
        if modality == "MR" and config.leakage_correction:
            conc, k2 = leakage_correct(conc, dt)
    with stage("deconvolution"):
        oi = adaptive_oi(config, cnr, modality)
        # CT sampled every 2-3 s (shuttle mode, step-and-shoot): deconvolved on a finer grid
        # (``upsample_curves``); the denoising above ran on the acquired frames
        step = 1
        if modality == "CT" and config.ct_fine_dt_s > 0 and dt > CT_FINE_ABOVE_S * 1.001:
            step = int(np.ceil(dt / config.ct_fine_dt_s - 1e-6))
        dconc, daif, ddt = upsample_curves(conc, step), upsample_curves(fns.aif, step), dt / step
        window = None
        if modality == "MR":
            window = first_pass_window(conc[brain[idx]].mean(axis=0), baseline.end, dt)
        elif config.ct_cbv_first_pass:
            window = first_pass_window(
                dconc[brain[idx]].mean(axis=0), baseline.end * step, ddt, CT_CBV_MARGIN_S
            )
        correct = (
            config.truncation_correction if modality == "CT" else config.dsc_truncation_correction
        )
        kept = (
            (TMAX_LAG_FRACTION if modality == "CT" else DSC_TMAX_LAG_FRACTION) if correct else 0.0
        )
        flat, _dec = compute_maps(
            dconc,
            daif,
            ddt,
            # the oscillation index sums second differences over the samples: on a grid
            # ``step`` times finer the same noise passes a threshold ``step`` times lower
            # (2 s data on 1 s curves at 4 HU: r(CBF) 0.895 at oi, 0.92 at oi / 2)
            # and the residue-shape test (box or exponential) took some piecewise-linear
            # upsampled curves for boxes (white matter delayed by one 2 s frame: CBF 0.87x)
            replace(
                config, oi_threshold=oi / step, residue_shape=config.residue_shape and step == 1
            ),
            cbv_window=window,
            cbv_delayed=modality == "CT",
            smooth=_TissueSmoother(tissue, idx, TRUNCATION_GUIDE_PX),
            correct=correct,
            delayed_lag_fraction=kept,
            rounding_sd=rounding_sd,
        )
        del dconc, daif
        inside = tissue[idx]
        cbf_factor = np.float32(hematocrit_factor(config) * 6000.0)
        # curves with no noise but the storage rounding: CBF from the model fit
        # (``_noise_free_maps``), which the core (CT) is decided on anyway
        noise_free = (
            modality == "CT"
            and rounding_sd > 0
            and dt <= NOISE_FREE_FIT_MAX_DT_S
            and bool(inside.any())
        )
        shape = None if _dec.box_weight is None else _dec.box_weight[inside]
        fit = None
        if noise_free or (modality == "CT" and config.ct_core_cbf == "model" and dwi is None):
            fit = model_fit(conc[inside], fns.aif, dt, basis=basis, box_weight=shape)
        if noise_free and fit is not None:
            _noise_free_maps(flat, inside, fit, cbf_factor, shape)
        # what delayed tissue keeps of the modelled lag: an uncertainty of its Tmax (late
        # for a sharp onset, early for a dispersed one; DSC: late only, nothing taken off)
        lagged = _tmax_lag(
            _dec,
            flat["cbv"],
            inside,
            _TissueSmoother(tissue, idx, TRUNCATION_GUIDE_PX),
            config.threshold_tmax,
            float(cbf_factor),
        )
        tmax_lag = tmax_uncertainty = None
        lag_map = np.zeros((n_z, n_y, n_x), np.float32)
        if lagged is not None:
            tmax_lag = lagged[0]
            tmax_uncertainty = (1.0 - kept) * tmax_lag
            lag_map[idx] = (1.0 - kept) * lagged[1]
            del lagged
        maps: dict[str, np.ndarray] = {}
        for name, values in flat.items():
            vol = np.zeros((n_z, n_y, n_x), np.float32)
            vol[idx] = values
            vol[~brain] = 0
            maps[name] = vol
        maps["ttp"] = np.where(brain, maps["ttp"] + np.float32(grid[0]), 0).astype(np.float32)
        core_cbf = None
        if modality == "CT" and config.ct_core_cbf == "model" and dwi is None and fit is not None:
            # the core is decided on a model fit of the whole curve, not on the residue's
            # noisy, regularised maximum (config.ct_core_cbf, deconvolution.model_fit);
            # only tissue can be core or its healthy reference
            core_cbf = np.zeros((n_z, n_y, n_x), np.float32)
            core_cbf[tuple(i[inside] for i in idx)] = np.clip(fit[0] * cbf_factor, 0, None)
        del fit
        vessel_cbv = config.vessel_cbv
        if modality == "MR" and tissue.any():
            # relative on DSC (config.dsc_vessel_cbv_ratio): its CBV scale is not absolute
            typical = float(np.median(maps["cbv"][tissue]))
            vessel_cbv = max(vessel_cbv, config.dsc_vessel_cbv_ratio * typical)
        vessels = maps["cbv"] > vessel_cbv
        for v in fns.aif_voxels + fns.vof_voxels:
            vessels[v] = True
        before = int(tissue.sum())
        tissue &= ~vessels
        vessel_share = 1.0 - int(tissue.sum()) / max(before, 1)
        vessel_note = None
        if vessel_share > VESSEL_SHARE_FLAG:
            # vessels are a few per cent of the brain: more is tissue lost from every volume
            vessel_note = (
                f"{vessel_share:.0%} of the tissue read CBV above {vessel_cbv:.1f} ml/100 g "
                "and was left out as vessels: volumes may be too small"
            )
    coreg: dict[str, Any] = {}
    not_used: list[dict[str, str]] = []
    with stage("coregistration"):
        adc = flair_img = None
        if dwi is not None:
            adc = _coregistered(dwi, "dwi", "DWI", series, base_img, coreg, warnings, not_used)
        if flair is not None:
            flair_img = _coregistered(
                flair, "flair", "FLAIR", series, base_img, coreg, warnings, not_used
            )
    with stage("segmentation"):
        seg = segment(
            maps,
            tissue,
            brain,
            series.row_dir,
            series.voxel_ml,
            config,
            adc,
            baseline=base_img,
            pixel_mm=series.spacing[1],
            edge_curves=edge_curves,
            core_cbf=core_cbf,
        )
        del core_cbf
        del edge_curves
        coverage = series.spacing[0] * n_z
        summary = summarise(seg, series.voxel_ml, n_z, coverage, config)
    with stage("qc"):
        brain_curve = conc[brain[idx]].mean(axis=0)
        stats, flags = bolus_flags(
            fns.aif, brain_curve, (baseline.start, baseline.end), modality, config
        )
        flags = not_used + flags
        if series.repaired:
            flags.append(
                {
                    "code": "corrupt_images",
                    "reason": f"{len(series.repaired)} blank or corrupt image(s) replaced by "
                    "interpolation in time (time point, slice): "
                    + ", ".join(f"{t + 1}/{z + 1}" for t, z in series.repaired[:8]),
                }
            )
        if motion is not None and motion.severe:
            flags.append({"code": "severe_motion", "reason": motion.reason})
        if vessel_note is not None:
            flags.append({"code": "vessels_excluded", "reason": vessel_note})
        if found_brain.warnings:
            flags.append({"code": "brain_mask", "reason": "; ".join(found_brain.warnings)})
        if not summary["volumes_reliable"]:
            flags.append({"code": "coverage", "reason": summary["reliability_reason"]})
        for flag in flags:
            if flag["code"] == "bolus_truncated":
                # the scan ended before the bolus passed late tissue: its Tmax and CBF are
                # not measured, so neither are the volumes drawn from them
                mark_unreliable(summary, flag["reason"])
        if modality == "MR" and adc is None:
            # RAPID-class MR reads the core on DWI (ADC <= 620, issue 6); a DSC rCBF core
            # at clinical SNR is fragile (independent phantom, SNR 30: 4.4 vs 16.6 mL).
            why = "the DWI given was not used, see dwi_not_used" if dwi else "no DWI given"
            flags.append(
                {
                    "code": "core_without_dwi",
                    "reason": f"MR core from rCBF ({why}): an estimate; give the "
                    "DWI/ADC series for the reference MR core (ADC <= "
                    f"{config.threshold_adc:g} x10^-6 mm²/s)",
                }
            )
        if tmax_uncertainty is not None and tmax_uncertainty > TMAX_LAG_FLAG_S:
            late_only = kept == 0.0
            tmax_ranges(summary, maps["tmax"], seg.hypo, series.voxel_ml, lag_map,
                        late_only, config.threshold_tmax_severe)  # fmt: skip
            flags.append({"code": "tmax_resolution", "reason": tmax_reason(
                modality, tmax_uncertainty, late_only, summary, config
            )})  # fmt: skip
        noise = seg.reference.get("core_noise") or {}
        span = noise.get("core_ml_range")
        if span is not None:
            # the range is counted on the threshold's voxels before islands are removed;
            # the reported core is always inside it (it read 18.4 mL beside a range of
            # 19.2-24.2, outside probe 44), as the DEFUSE-3 decision already took it
            span = [min(span[0], summary["core_ml"]), max(span[1], summary["core_ml"])]
            summary["core_ml_range"] = span
            wide = span[1] - span[0] > max(
                CORE_NOISE_MIN_ML, CORE_NOISE_FRACTION * summary["core_ml"]
            )
            summary["core_reliable"] = not wide
            if wide:
                flags.append({"code": "core_noise", "reason": (
                    f"rCBF core {summary['core_ml']:.1f} mL is not reliable at this map noise: "
                    f"healthy tissue's rCBF spreads +-{noise['relative_sd']:.0%}, which puts the "
                    f"core anywhere from {span[0]:.1f} to {span[1]:.1f} mL; read the core on "
                    "DWI/ADC or on thinner-noise images"
                )})  # fmt: skip
        low, low_side, _ = hemispheres(brain, series.row_dir)
        if seg.low is not None:
            low = seg.low
        midline = seg.reference.get("midline", {})
        if midline and not midline.get("detected", True):
            flags.append({"code": "midline", "reason": midline.get("reason", "")})
        qc = {
            "flags": flags,
            "bolus": stats,
            "baseline_frames": [baseline.start, baseline.end],
            "bolus_arrival_s": round(float(grid[0] + baseline.arrival_index * dt), 2),
            "curves": {
                **fns.to_dict(dt, float(grid[0])),
                "brain_mean": [round(float(v), 4) for v in brain_curve],
            },
            "flowstats": hemisphere_stats(maps, tissue, low, low_side),
            "noise_sd": round(noise_sd, 4),
            "cnr": round(cnr, 2),
            "oi_threshold": round(oi, 4),
            "pca_components": warnings_pca,
            "leakage_k2_median": None if k2 is None else round(float(np.median(k2)), 6),
            "tmax_lag_s": None if tmax_lag is None else round(tmax_lag, 2),
            "tmax_uncertainty_s": None if tmax_uncertainty is None else round(tmax_uncertainty, 2),
        }
    result = PerfusionResult(
        series=series,
        maps=maps,
        brain=brain,
        tissue=tissue,
        core=seg.core,
        hypo=seg.hypo,
        summary=summary,
        inputs={"dwi": adc is not None, "flair": flair_img is not None},
        motion=motion,
        qc=qc,
        timings=timings,
        baseline_image=base_img,
        grid_start_s=float(grid[0]),
        dt=dt,
        warnings=warnings,
        coregistration=coreg or None,
        flair=flair_img,
        parameters=recorded(config, oi if config.method == "osvd" else None),
    )
    if out_dir is not None:
        if progress is not None:
            progress(STAGES.index("output") / len(STAGES), "output")
        write_outputs(result, Path(out_dir), config)
    if progress is not None:
        progress(1.0, "done")
    return result


def write_outputs(result: PerfusionResult, out_dir: Path, config: PerfusionConfig) -> None:
    """result.json plus, when configured, the DICOM objects (Conformance 8.1.3)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if config.write_dicom:
        from .dicom_out import write_dicom

        result.outputs = [
            str(p.relative_to(out_dir)) for p in write_dicom(result, out_dir, config.uid_root)
        ]
    result.outputs.append("result.json")
    result.timings["output"] = time.perf_counter() - t0
    text = json.dumps(_clean(result.to_dict()), indent=2, allow_nan=False, default=_json_default)
    (out_dir / "result.json").write_text(text)


def _clean(value: Any) -> Any:
    """JSON has no inf/NaN: they become null."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, float | np.floating) and not np.isfinite(value):
        return None
    return value


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(type(value))
