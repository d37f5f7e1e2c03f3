"""Settings of one perfusion analysis.

Every threshold a neuroradiologist may want to change lives here, with the literature
value as default (issue 6; seed FAQ "VEOcore Perfusion Analysis").
"""

from __future__ import annotations

import math
import numbers
import typing
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

Method = Literal["osvd", "ssvd", "tikhonov"]
METHOD_NAMES = {"osvd": "oSVD", "ssvd": "sSVD", "tikhonov": "Tikhonov SVD"}
"""How result pages, the SR and Derivation Description name a deconvolution method."""

_OPEN, _CLOSED = False, True
RANGES: dict[str, tuple[float, bool, float, bool]] = {
    "threshold_core": (0.0, _OPEN, 1.0, _OPEN),
    "threshold_tmax": (0.0, _OPEN, math.inf, _OPEN),
    "threshold_tmax_severe": (0.0, _OPEN, math.inf, _OPEN),
    "threshold_adc": (50.0, _CLOSED, 3000.0, _OPEN),
    "min_island_ml": (0.0, _CLOSED, math.inf, _OPEN),
    "min_time_points": (3, _CLOSED, math.inf, _OPEN),
    "max_matrix": (16, _CLOSED, math.inf, _OPEN),
    "aif_voxels": (1, _CLOSED, math.inf, _OPEN),
    "vof_voxels": (1, _CLOSED, math.inf, _OPEN),
    "min_slices": (1, _CLOSED, math.inf, _OPEN),
    "dsc_tips_rank": (1, _CLOSED, math.inf, _OPEN),
    "oi_threshold": (0.0, _OPEN, math.inf, _OPEN),
    "oi_min": (0.0, _OPEN, math.inf, _OPEN),
    "dsc_vessel_cbv_ratio": (1.0, _OPEN, math.inf, _OPEN),
    "dsc_oi_threshold": (0.0, _OPEN, math.inf, _OPEN),
    "ssvd_threshold": (0.0, _OPEN, 1.0, _OPEN),
    "tikhonov_lambda": (0.0, _OPEN, math.inf, _OPEN),
    "hematocrit_large": (0.0, _OPEN, 1.0, _OPEN),
    "hematocrit_small": (0.0, _OPEN, 1.0, _OPEN),
    "density_g_per_ml": (0.0, _OPEN, math.inf, _OPEN),
    "max_pve_scale": (1.0, _CLOSED, math.inf, _OPEN),
    "truncation_fraction": (0.0, _OPEN, 1.0, _OPEN),
    "min_midline_symmetry": (0.0, _CLOSED, 1.0, _CLOSED),
    "defuse3_ratio_min": (0.0, _OPEN, math.inf, _OPEN),
}
"""Allowed ranges (low, low included, high, high included) of settings whose other values
are meaningless: an rCBF fraction outside (0, 1) makes the core empty or the whole brain,
a NaN compares false with every voxel (core 0 mL, DEFUSE-3 "met"). ``threshold_adc`` is in
10^-6 mm²/s: below 50 it was almost certainly given in 10^-3 mm²/s (0.62), above 3000
(free water) every voxel, CSF included, would be core. Every other number must be finite
and, except the HU settings, not negative."""
_SIGNED = frozenset(("ct_brain_hu", "ct_csf_max_hu"))


@dataclass(frozen=True)
class PerfusionConfig:
    """Typed settings; ``from_dict`` accepts the same keys (CLI, server job payload)."""

    # --- input assembly ---
    min_time_points: int = 10
    """Fewer frames per slice cannot sample a bolus passage: refuse."""
    max_matrix: int = 256
    """Bin in-plane by an integer factor until rows/cols <= this. 512² CTP pixels (~0.45 mm)
    are noise-dominated; RAPID-class products compute on a 256² grid for the same reason."""

    # --- motion ---
    motion_correction: bool = True
    motion_apply_min_mm: float = 0.5
    """Frames displaced less than this are not resampled (saves interpolation blur/time)."""
    severe_motion_mm: float = 3.0
    """Displacement from the reference (or framewise displacement / 2) flagged as severe."""

    # --- preprocessing ---
    smoothing_mm: float = 5.0
    """CT: in-plane sigma (mm) of the spatial weight of ``ct_filter`` on the concentration
    curves inside tissue. A CT perfusion voxel (0.5-1 mm, 5 mm slices) has a noise of ~10 HU
    against a white-matter peak of ~10 HU; its 3-5 pre-bolus frames leave a baseline error of
    sigma/2 on the whole curve (the CBV noise). Was 1 mm: below 0.3 pixel on a 256² grid
    of 3.75 mm pixels no smoothing ran at all."""
    dsc_smoothing_mm: float = 7.0
    """DSC-MR: in-plane Gaussian sigma (mm) of the spatial weight of ``dsc_filter``, larger than
    on CT because a DSC voxel's contrast-to-noise is far lower than a CT voxel's."""
    dsc_filter: Literal["tips", "gaussian"] = "tips"
    """DSC-MR spatial denoising. "tips": edge-preserving, averages only curves similar in time
    and in pre-contrast signal (``signal.tips_filter``; a Gaussian blur of the thin cortical
    ribbon and of a small core alone caps the CBF/CBV correlation with truth near 0.88).
    "gaussian": the plain normalised convolution of CT."""
    ct_filter: Literal["tips", "gaussian"] = "tips"
    """CT spatial denoising of the concentration curves with sigma ``smoothing_mm``: "tips"
    is the edge-preserving time-intensity-profile-similarity filter that Mendrik et al.
    (Phys Med Biol 2011) designed for CT perfusion (``signal.tips_filter``); "gaussian" the
    normalised convolution inside tissue."""
    dsc_tips_strength: float = 0.25
    """How fast the weight falls with curve distance beyond the noise floor (smaller: sharper
    edges, less averaging)."""
    dsc_tips_rank: int = 3
    """Main temporal components compared by the DSC similarity filter."""
    ct_fine_dt_s: float = 1.0
    """CT sampled coarser than 1.5 s (shuttle/jog mode: 3 s per slab; step-and-shoot 2 s
    cycles) is deconvolved on curves linearly interpolated to this interval (0: off). At
    3 s a 5 s-MTT grey-matter residue is two samples: oSVD read normal grey matter at
    22.7 of 60 ml/100g/min noise-free (2 s: 40.6) and the core 69 % small; on 1 s curves
    56.1 (62.5). Denoising runs on the acquired frames before (its noise model needs them)."""
    ct_cbv_first_pass: bool = True
    """CT: integrate CBV over the first pass (bolus arrival to the brain's mean curve back
    below 10 % of its peak, plus 5 s and each voxel's Tmax; ``maps.cbv_areas``), not the
    whole acquisition: the per-voxel baseline error enters every integrated frame, and
    recirculation stays out. Outside phantom at 5 HU: CBV correlation with truth 0.83 ->
    0.89 (3 HU: 0.905 -> 0.944), noise-free medians unchanged."""
    dsc_core_edge: bool = True
    """DSC rCBF core: re-read the voxels on the core's edge from their unfiltered curves
    (``segmentation.refine_core_boundary``): the filter averages a core's edge with its rim."""
    dsc_local_pca_block: int = 24
    """DSC: in-plane block (pixels) of the local MP-PCA that denoises the curves the filter
    averages (0: the slice-wide PCA curves); local subspaces keep a penumbra's own shape."""
    dsc_local_pca_min_components: int = 4
    pca_denoise: bool = True
    """Keep only temporal principal components above the noise (MP-PCA, Veraart 2016)."""
    dsc_pca_min_components: int = 6
    """DSC: temporal components always kept by the per-slice MP-PCA (small regions with their
    own bolus timing, e.g. a penumbra, fall below a slice-wide noise edge)."""
    ct_pca_min_components: int = 6
    """CT: temporal components always kept by the MP-PCA: at realistic noise the slice-wide
    edge kept 4, which bent a small core's late, long curve (delay 8 s, MTT 15 s) towards
    normal tissue (core CBF 1.6x truth)."""
    ct_brain_hu: tuple[float, float] = (-5.0, 85.0)
    ct_csf_max_hu: float = 12.0
    """Baseline HU at or below this is CSF: excluded from tissue (core false positives)."""
    vessel_cbv: float = 8.0
    """CBV (ml/100 g) above this is a vessel, not tissue (excluded from statistics/volumes)."""
    dsc_vessel_cbv_ratio: float = 4.0
    """DSC-MR: a vessel's CBV is also above this multiple of the tissue's median CBV. DSC CBV
    has no fixed absolute scale (AIF partial volume and saturation, the relaxivity of blood):
    an outside phantom whose AIF saturated read grey matter at 10-16 ml/100 g, the fixed
    ``vessel_cbv`` took it for vessels, and hypoperfusion read 20.6 of 84.8 mL."""
    dsc_skip_frames: int = 2
    """DSC: first frames are not in T1 steady state; never used as baseline."""

    # --- AIF / VOF ---
    aif_voxels: int = 6
    vof_voxels: int = 6
    pve_correction: bool = True
    """Scale the AIF so its area matches the VOF (partial-volume correction, e.g. Knutsson 2010)."""
    max_pve_scale: float = 4.0
    dsc_aif_floor_sd: float = 3.0
    """DSC: AIF/VOF frames whose signal is below this many noise SDs are saturated (the
    magnitude signal reads the Rician floor, ~1.25 SD, not the tissue): they are left out
    of the AIF score and reconstructed by a gamma-variate fit (``aif`` docstring)."""

    # --- deconvolution ---
    method: Method = "osvd"
    oi_threshold: float = 0.035
    """CT: oscillation index threshold of oSVD. Wu et al. (MRM 2003) used 0.095, which trades
    noise against a truncation that lowers CBF by 15-35 %; with that loss corrected
    (``truncation_correction``) a lower threshold costs no accuracy and removes more noise:
    independent phantom, integer HU, every delay within 10 % at 0.035 (0.68-0.86 at 0.095
    uncorrected)."""
    oi_adaptive: bool = True
    """Lower the OI threshold when the contrast-to-noise ratio is low (``maps.adaptive_oi``)."""
    oi_cnr_ref: float = 100.0
    """CNR (peak of the mean brain curve / voxel noise SD) at and above which ``oi_threshold``
    applies unchanged."""
    oi_min: float = 0.03
    """Lowest adaptive OI threshold."""
    truncation_correction: bool = True
    """CT: correct CBF and Tmax for the peak a regularised (oSVD, Tikhonov) deconvolution
    loses at the voxel's MTT (``deconvolution.correct_truncation``); off: the raw residue
    peak. Integer-HU phantoms (what scanners store): uncorrected CBF 0.68-0.86 of truth,
    Tmax +1-3 s and the core missed (0-8 of 16.6 mL; 0 of 11.5 mL); corrected within 10 %,
    0.3 s and exact. The residue model (exponential or box) comes from ``residue_shape``."""
    residue_shape: bool = True
    """Choose per voxel between the exponential and the box (plug-flow) residue model of the
    truncation correction by which one's tissue curve fits (``residue_shape``)."""
    dsc_oi_threshold: float = 0.095
    """DSC-MR: oSVD OI threshold (Wu 2003's value)."""
    dsc_truncation_correction: bool = True
    """DSC-MR: the CT truncation correction of CBF, and of the Tmax of healthy tissue
    (delayed tissue: ``maps.DSC_TMAX_LAG_FRACTION``). Independent DSC phantom, noise free:
    CBF 0.81/0.82 of truth, MTT 1.24x and Tmax +1.7 s uncorrected, within 10 % and 0.2 s
    corrected. Was off while the full Tmax lag was taken off delayed tissue too (our DSC
    phantom's hypoperfusion -25 %)."""
    ssvd_threshold: float = 0.2
    """Relative singular-value threshold of standard SVD (Ostergaard 1996: 20 %)."""
    tikhonov_lambda: float = 0.1
    """Relative Tikhonov regularisation (fraction of the largest singular value)."""
    hematocrit_large: float = 0.45
    hematocrit_small: float = 0.25
    density_g_per_ml: float = 1.04
    leakage_correction: bool = True
    """DSC only: Boxerman-Weisskoff (AJNR 2006) correction of contrast leakage."""

    # --- segmentation ---
    threshold_core: float = 0.3
    """CT core: rCBF below this fraction of healthy contralateral tissue (RAPID: 30 %)."""
    reference: Literal["homologous", "contralateral_median"] = "homologous"
    """Healthy reference of rCBF. "homologous": per voxel, the healthy tissue at its mirror
    position across the detected mid-sagittal plane (grey matter against grey matter);
    "contralateral_median": one median over healthy contralateral tissue, a grey/white
    mixture that lands on whichever tissue is the majority (``segmentation`` docstring)."""
    ct_core_cbf: Literal["model", "deconvolution"] = "model"
    """CT: the CBF that decides the core (rCBF < ``threshold_core``), for the voxel and its
    healthy reference alike. "model": a least-squares fit of CBF, MTT and delay to the whole
    curve (``deconvolution.model_fit``); "deconvolution": the CBF map (maximum of the oSVD
    residue, truncation-corrected). At ordinary CT noise (5 HU) the maximum of a regularised
    residue reads normal grey matter 17 % low and a low-flow core 40-80 % high, so a core at
    25 % of normal crossed 30 %: outside phantom, 71 mL core read 35-41 mL (model 60-68),
    white-matter core at 25 % -58 % (model -26 %), grey-matter core at 25 % -75 % (model
    -16 %); noise-free a box residue +16 % (model 0 %). The fit follows the residue shape the
    voxel shows (``residue_shape.box_weight``): a short exponential mimics a whole-HU box curve
    at twice its height (outside box phantom at 1.5 s: core 42.5 mL for 20.2 before, 20.2
    after). The CBF map stays the deconvolution's."""
    reference_smoothing_mm: float = 5.0
    """In-plane Gaussian sigma of the homologous reference: averages noise and the mm-scale
    asymmetry of gyri while staying within a tissue class."""
    min_midline_symmetry: float = 0.8
    """Below this left-right symmetry of the brain image, the mid-sagittal plane is not
    trusted: the brain's centroid column is used and QC warns."""
    threshold_adc: float = 620.0
    """MR core: ADC <= this (x10^-6 mm²/s) when DWI is given."""
    threshold_tmax: float = 6.0
    threshold_tmax_severe: float = 10.0
    """Numerator of the hypoperfusion intensity ratio (Tmax>10 s / Tmax>6 s)."""
    min_island_ml: float = 0.5
    """Connected components smaller than this are removed and reported (FAQ: 1-2 mL
    lesions can vanish during mask generation)."""
    min_coverage_mm: float = 40.0
    min_slices: int = 8
    """Below either, volumes and DEFUSE-3 are marked not reliable (FAQ: 4-slice scanners)."""

    # --- DEFUSE-3 (Albers et al., NEJM 2018) ---
    defuse3_core_max_ml: float = 70.0
    defuse3_ratio_min: float = 1.8
    defuse3_mismatch_min_ml: float = 15.0

    # --- QC ---
    bolus_low_ct_hu: float = 100.0
    bolus_low_mr_r2: float = 10.0
    min_peak_to_noise: float = 5.0
    truncation_fraction: float = 0.35
    """Bolus truncated if the last frame still holds more than this fraction of the peak."""

    # --- output ---
    write_dicom: bool = True
    uid_root: str = ""
    """Organisation UID root for result objects (server: ``[server] uid_root``); empty =
    pydicom's root."""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Refuse a setting of the wrong type or out of its range, naming it (ValueError).

        One place for the CLI, ``--config`` files and the server's job payload: a bad
        threshold used to run the whole analysis and then either crash or give a plausible
        but wrong verdict (``--threshold-core nan``: core 0 mL, DEFUSE-3 met).
        """
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            value = getattr(self, f.name)
            kind = hints[f.name]
            _check_type(f.name, value, kind)
            if kind is float or kind is int:
                _check_range(f.name, value)
            elif f.name == "ct_brain_hu":
                object.__setattr__(self, f.name, tuple(value))  # a JSON list
                lo, hi = self.ct_brain_hu
                if not lo < hi:
                    raise ValueError(f"ct_brain_hu must be [low, high], low < high, got {value}")
        if not self.threshold_tmax_severe > self.threshold_tmax:
            raise ValueError(
                f"threshold_tmax_severe ({self.threshold_tmax_severe:g} s) must be above "
                f"threshold_tmax ({self.threshold_tmax:g} s): the hypoperfusion intensity "
                "ratio divides the first volume by the second"
            )

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PerfusionConfig:
        """Build from a plain mapping, rejecting unknown keys (typos must not pass silently)
        and, through ``__post_init__``, values of the wrong type or range (ValueError)."""
        if not isinstance(values, dict):
            kind = type(values).__name__
            raise ValueError(f"perfusion settings must be an object of key/value pairs, not {kind}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown perfusion setting(s): {', '.join(unknown)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_type(name: str, value: object, kind: Any) -> None:
    """``value`` is of the annotated type (ints count as floats; bools never as numbers)."""
    ok: bool
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    elif kind is str:
        ok = isinstance(value, str)
    elif typing.get_origin(kind) is Literal:
        choices = typing.get_args(kind)
        if value not in choices:
            raise ValueError(
                f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}"
            )
        return
    elif typing.get_origin(kind) is tuple:
        ok = (
            isinstance(value, tuple | list)
            and len(value) == len(typing.get_args(kind))
            and all(
                isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
                for v in value
            )
        )
    elif typing.get_origin(kind) is dict:
        ok = isinstance(value, dict)
    else:  # pragma: no cover - a new annotation needs a rule here
        raise TypeError(f"no type check for {name}: {kind}")
    if not ok:
        what = getattr(typing.get_origin(kind) or kind, "__name__", str(kind))
        raise ValueError(f"{name} must be {_ARTICLE.get(what, what)}, got {value!r}")


_ARTICLE = {
    "bool": "true or false",
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "dict": "an object",
    "tuple": "two numbers [low, high]",
}
_UNITS = {"threshold_adc": " (x10^-6 mm²/s, e.g. 620)", "threshold_core": " (a fraction, e.g. 0.3)"}


def _check_range(name: str, value: float) -> None:
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if name in RANGES:
        lo, lo_in, hi, hi_in = RANGES[name]
        below = value < lo if lo_in else value <= lo
        above = value > hi if hi_in else value >= hi
        if below or above:
            low = f"{'>=' if lo_in else '>'} {lo:g}"
            high = "" if math.isinf(hi) else f" and {'<=' if hi_in else '<'} {hi:g}"
            unit = _UNITS.get(name, "")
            raise ValueError(f"{name} must be {low}{high}{unit}, got {value:g}")
    elif value < 0 and name not in _SIGNED:
        raise ValueError(f"{name} must not be negative, got {value:g}")
