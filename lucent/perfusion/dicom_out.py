"""Result DICOM objects.

- Secondary Capture series (seed Conformance 8.1.3): modality of the input, RGB 8 bit,
  Planar Configuration 0, Window 128/255, Pixel Spacing 1\\1, Conversion Type SYN, and the
  8.1.1 attributes (patient/study copied from the input, series date/time = now).
- The maps as quantitative objects: highdicom Parametric Map (float pixels, real-world value
  mapping with UCUM units, the true geometry of the perfusion grid).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.coding import Code
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from scipy import ndimage

from lucent.dicom.uids import make_uid

from .identity import copy_identity
from .maps import MAP_UNITS
from .orientation import image_markers, letters
from .parameters import derivation, method_text
from .render import render_map, render_overlay, render_report
from .segmentation import ratio_text
from .sr import highdicom_sources, structured_report

if TYPE_CHECKING:
    from .pipeline import PerfusionResult

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
HYPO_COLOUR = (0, 200, 0)
"""Tmax > 6 s (without the core) on every overlay; the core is CORE_COLOUR."""
CORE_COLOUR = (230, 0, 200)
BRAIN_OUTLINE = (255, 220, 0)
MANUFACTURER = "Lucent"
SOFTWARE_VERSION = "lucent-perfusion 0.1.0"
PERFORMER = "LUCENT^PERFUSION"
"""Performing Physician's Name: Conformance 8.1.1, "user that created the dataset"."""
BODY_PARTS = ("HEAD", "BRAIN")
"""Body Part Examined of the outputs: the source's when it is one of these, else HEAD. An
unpaired structure: without it dciodvfy asks for Laterality (General Series, Type 2C)."""

MAP_DISPLAY = {
    "cbf": ("CBF", 0.0, 80.0, "rainbow"),
    "cbv": ("CBV", 0.0, 6.0, "rainbow"),
    "mtt": ("MTT", 0.0, 16.0, "rainbow"),
    "tmax": ("Tmax", 0.0, 12.0, "tmax"),
    "ttp": ("TTP", 0.0, 60.0, "rainbow"),
}
TISSUE_ONLY = frozenset(("mtt", "tmax"))
"""Timing maps shown on brain tissue only: in CSF (no perfusion) they are noise, which drew
red speckle on the Tmax map across the ventricles and sulci (outside probe). CBF and CBV
keep the vessels and CSF the reader expects to see."""


def new_uid(root: str = "") -> str:
    """A UID under the configured organisation root (server: ``[server] uid_root``);
    pydicom's root when none is configured (stand-alone CLI)."""
    return make_uid(root) if root else str(generate_uid())


UCUM = {"ml/100g/min": "mL/min/(100.g)", "ml/100g": "mL/(100.g)", "s": "s"}


def stamp_series(ds: Dataset, ref: Dataset, now: _dt.datetime, modality: str) -> None:
    """What every output (SC, Parametric Map, SR) carries at series level and above, the
    same on each (Conformance 8.1.1): the source's patient and study (``identity``),
    series/content (and, where the IOD has them, acquisition) date and time = when it was
    made, manufacturer, software, institution; for images the performer and body part.
    The Enhanced SR IOD (PS3.3 A.35.2) has no General Acquisition module nor Performing
    Physician's Name or Body Part Examined, so the SR carries none of them."""
    copy_identity(ref, ds)
    # how the copied text and our own (mm², °) are encoded: the source's, else UTF-8
    ds.SpecificCharacterSet = ref.get("SpecificCharacterSet") or "ISO_IR 192"
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.SeriesDate = ds.ContentDate = date
    ds.SeriesTime = ds.ContentTime = time
    ds.Manufacturer = MANUFACTURER
    ds.SoftwareVersions = SOFTWARE_VERSION
    if ref.get("InstitutionName"):
        ds.InstitutionName = ref.InstitutionName
    if modality == "SR":
        return
    ds.AcquisitionDate, ds.AcquisitionTime = date, time
    ds.PerformingPhysicianName = PERFORMER
    part = str(ref.get("BodyPartExamined", "") or "").strip().upper()
    ds.BodyPartExamined = part if part in BODY_PARTS else BODY_PARTS[0]


def _common(
    ref: Dataset, modality: str, series_uid: str, number: int, description: str, now: _dt.datetime
) -> Dataset:
    """Series-level attributes of an SC series. No Frame of Reference: the SC Image IOD has
    it only with the Image Plane module (PS3.3 A.8.1), and a rendered page (title bar,
    colour bar, upscaled map) has no position in the patient; the source's FoR UID on it
    told a viewer it could link it to the perfusion slices."""
    ds = Dataset()
    stamp_series(ds, ref, now, modality)
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = number
    ds.SeriesDescription = description
    ds.Modality = modality
    return ds


def _save(ds: Dataset, path: Path) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.save_as(path, enforce_file_format=True)
    return path


def secondary_capture(
    base: Dataset,
    rgb: np.ndarray,
    instance: int,
    derivation: str,
    uid_root: str = "",
    orientation: tuple[str, str] | None = None,
) -> Dataset:
    """One RGB SC image, attributes as Conformance 8.1.3 lists them.

    ``orientation``: Patient Orientation (row, column direction letters) of a page that
    shows a slice (General Image, Type 2C: required when the image has no Image
    Orientation (Patient)); empty on report pages."""
    ds = Dataset()
    ds.update(base)
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = new_uid(uid_root)
    ds.InstanceNumber = instance
    ds.PatientOrientation = list(orientation) if orientation else ""
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.ConversionType = "SYN"
    ds.DerivationDescription = derivation
    ds.BurnedInAnnotation = "NO"
    ds.Rows, ds.Columns = int(rgb.shape[0]), int(rgb.shape[1])
    ds.PhotometricInterpretation = "RGB"
    ds.SamplesPerPixel = 3
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelRepresentation = 0
    ds.PlanarConfiguration = 0
    ds.WindowCenter, ds.WindowWidth = 128, 255
    ds.PixelSpacing = [1.0, 1.0]
    ds.PixelData = np.ascontiguousarray(rgb, np.uint8).tobytes()
    return ds


def _series(
    result: PerfusionResult, number: int, description: str, now: _dt.datetime, uid_root: str
) -> Dataset:
    ref = result.series.slice_headers[0]
    return _common(ref, result.series.modality, new_uid(uid_root), number, description, now)


OUTPUT_FAILURES = "output_failures"
"""Key in ``result.qc`` (and so in result.json) listing outputs that could not be made."""


def write_dicom(result: PerfusionResult, out_dir: Path, uid_root: str = "") -> list[Path]:
    """Write every result object under ``out_dir``; file names are our own counters.

    Every new UID is made under ``uid_root`` (the organisation root of the server config).
    Each output (one SC series, one Parametric Map, the SR) is made on its own: one that
    fails leaves no files behind and is listed in ``result.qc["output_failures"]`` (what and
    why) and in the warnings, and the others are still written. Nothing is dropped silently:
    the CLI reports such a result as partial.
    """
    now = _dt.datetime.now()
    out_dir = out_dir / "dicom"
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    counter = iter(range(1, 1_000_000))
    n_z = result.maps["cbf"].shape[0]
    brain = result.brain
    failures: list[dict[str, str]] = result.qc.setdefault(OUTPUT_FAILURES, [])
    params = result.parameters
    s = result.series
    orientation = (letters(s.row_dir), letters(s.col_dir))
    markers = image_markers(s.row_dir, s.col_dir)

    def save(ds: Dataset) -> None:
        paths.append(_save(ds, out_dir / f"R{next(counter):05d}.dcm"))

    def attempt(output: str, make: Callable[[], None]) -> None:
        first = len(paths)
        try:
            make()
        except Exception as exc:  # noqa: BLE001 - recorded in result.json, never swallowed
            for path in paths[first:]:
                path.unlink(missing_ok=True)
            del paths[first:]
            reason = f"{type(exc).__name__}: {exc}"
            failures.append({"output": output, "reason": reason})
            result.warnings.append(f"output not written: {output}: {reason}")

    # colour maps, one SC series per map
    def colour_map(k: int, name: str) -> None:
        label, vmin, vmax, table = MAP_DISPLAY[name]
        base = _series(result, 9001 + k, f"Perfusion {label} (colour)", now, uid_root)
        shown = result.tissue if name in TISSUE_ONLY else brain
        for z in range(n_z):
            rgb = render_map(
                result.maps[name][z],
                vmin,
                vmax,
                table,
                f"{label}  {slice_text(result, z)}",
                MAP_UNITS[name],
                shown[z],
                markers=markers,
            )
            what = derivation(f"{label} map", params)
            save(secondary_capture(base, rgb, z + 1, what, uid_root, orientation))

    for k, name in enumerate(MAP_DISPLAY):
        attempt(f"secondary capture {name} colour map", lambda k=k, name=name: colour_map(k, name))

    # overlays
    def overlays() -> None:
        lo, hi = (
            (0.0, 80.0)
            if result.series.modality == "CT"
            else (
                0.0,
                float(np.percentile(result.baseline_image[brain], 99)) if brain.any() else 1.0,
            )
        )
        base = _series(result, 9010, "Perfusion core/hypoperfusion overlay", now, uid_root)
        vols = result.summary
        hypo_text = f"{_tmax_label(params)} {vols['hypoperfusion_ml']:.1f} mL"
        core_text = f"core {vols['core_ml']:.1f} mL ({vols['core_source']})"
        what = derivation("core/hypoperfusion overlay", params, thresholds=True)
        for z in range(n_z):
            rgb = render_overlay(
                result.baseline_image[z],
                (lo, hi),
                [
                    (result.hypo[z] & ~result.core[z], HYPO_COLOUR, hypo_text),
                    (result.core[z], CORE_COLOUR, core_text),
                ],
                f"Core / hypoperfusion  {slice_text(result, z)}",
                markers=markers,
            )
            save(secondary_capture(base, rgb, z + 1, what, uid_root, orientation))

    attempt("secondary capture core/hypoperfusion overlay", overlays)
    if result.flair is not None:
        # FLAIR on the perfusion grid with outlines: the reader checks the coregistration
        # (seed FAQ: it can fail) and sees the lesions against FLAIR in one picture
        attempt(
            "secondary capture FLAIR overlay",
            lambda: write_flair_overlay(result, now, uid_root, save),
        )

    # summary and QC pages
    def pages() -> None:
        base = _series(result, 9020, "Perfusion summary and QC", now, uid_root)
        what = derivation("perfusion summary and QC", params, thresholds=True)
        for i, page in enumerate(summary_pages(result)):
            save(secondary_capture(base, page, i + 1, what, uid_root))

    attempt("secondary capture summary and QC pages", pages)
    # quantitative maps
    for k, name in enumerate(MAP_DISPLAY):
        attempt(
            f"parametric map {name}",
            lambda k=k, name=name: save(parametric_map(result, name, 9030 + k, uid_root, now)),
        )

    # the summary as an Enhanced SR (volumes, DEFUSE-3, QC, AIF/VOF), own series
    def report() -> None:
        sr = structured_report(result, new_uid(uid_root), new_uid(uid_root), 9040)
        stamp_series(sr, result.series.slice_headers[0], now, "SR")
        save(sr)

    attempt("enhanced SR summary", report)
    return paths


def _outline(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask)


def write_flair_overlay(
    result: PerfusionResult, now: _dt.datetime, uid_root: str, save: Callable[[Dataset], None]
) -> None:
    """SC series: coregistered FLAIR with the perfusion brain, hypoperfusion and core outlines."""
    assert result.flair is not None
    flair = result.flair
    n_z = flair.shape[0]
    inside = flair[result.brain] if result.brain.any() else flair.ravel()
    window = (0.0, float(np.percentile(inside, 99.5)) * 1.2 or 1.0)
    reg = (result.coregistration or {}).get("flair", {})
    base = _series(result, 9011, "Perfusion on FLAIR (coregistered)", now, uid_root)
    hypo_text = f"{_tmax_label(result.parameters)} {result.summary['hypoperfusion_ml']:.1f} mL"
    core_text = f"core {result.summary['core_ml']:.1f} mL"
    s = result.series
    orientation = (letters(s.row_dir), letters(s.col_dir))
    what = derivation("FLAIR coregistered to perfusion, outlines", result.parameters, True)
    for z in range(n_z):
        rgb = render_overlay(
            flair[z],
            window,
            [
                (_outline(result.brain[z]), BRAIN_OUTLINE, "perfusion brain outline (check fit)"),
                (_outline(result.hypo[z]), HYPO_COLOUR, hypo_text),
                (_outline(result.core[z]), CORE_COLOUR, core_text),
            ],
            f"FLAIR  {slice_text(result, z)}  shift {reg.get('translation_mm')} mm  "
            f"rotation {reg.get('rotation_deg')}°",
            markers=image_markers(s.row_dir, s.col_dir),
        )
        save(secondary_capture(base, rgb, z + 1, what, uid_root, orientation))


def _tmax_label(params: dict[str, Any]) -> str:
    return f"Tmax > {params.get('threshold_tmax', 6.0):g} s"


def slice_text(result: PerfusionResult, z: int) -> str:
    """ "slice 4/8  position 12.5 mm": the position along the slice normal, as Slice
    Location reads on the source images, so a page can be matched to its source slice."""
    s = result.series
    location = float(np.dot(s.slice_position(z), s.normal))
    return f"slice {z + 1}/{result.maps['cbf'].shape[0]}  position {location:.1f} mm"


def summary_pages(result: PerfusionResult) -> list[np.ndarray]:
    """Summary (volumes, DEFUSE-3, method and thresholds), qcontrol_bolus,
    qcontrol_flowstats, motion report."""
    v, qc, p = result.summary, result.qc, result.parameters
    d3 = v["defuse3"]
    ratio = ratio_text(v)
    tmax, severe = _tmax_label(p), f"Tmax > {p.get('threshold_tmax_severe', 10.0):g} s"
    lines = [
        f"Core ({v['core_source']}): {v['core_ml']:.1f} mL",
        f"Hypoperfusion ({tmax}): {v['hypoperfusion_ml']:.1f} mL",
        f"Mismatch volume: {v['mismatch_ml']:.1f} mL    Mismatch ratio: {ratio}",
        f"Hypoperfusion intensity ratio ({severe} / {tmax}): {v['hypoperfusion_intensity_ratio']}",
        f"DEFUSE-3 imaging criteria: {d3['verdict'].replace('_', ' ')}",
        *[f"  failed: {c}" for c in d3["failed_criteria"]],
        *[f"  not decided: {c}" for c in d3.get("uncertain_criteria", [])],
        "" if v["volumes_reliable"] else f"NOT RELIABLE: {v['reliability_reason']}",
        f"Islands removed: core {v['islands_removed']['core']['count']} "
        f"({v['islands_removed']['core']['volume_ml']} mL), hypoperfusion "
        f"{v['islands_removed']['hypoperfusion']['count']} "
        f"({v['islands_removed']['hypoperfusion']['volume_ml']} mL)",
        *(
            [
                f"Deconvolution: {method_text(p)}",
                f"Thresholds: core rCBF < {p['threshold_core']:.0%} (ADC <= "
                f"{p['threshold_adc']:g} x10^-6 mm²/s with DWI), {tmax}, severe {severe},",
                f"  islands < {p['min_island_ml']:g} mL removed",
            ]
            if p
            else []
        ),
        "QC:",
        *([f"  {f['reason']}" for f in qc["flags"]] or ["  no warnings"]),
        "Research use: check the maps against the source images before relying on them.",
    ]
    pages = [render_report("Perfusion summary", lines)]
    curves = qc["curves"]
    plot = [("AIF", curves["aif"], (255, 80, 80))]
    if curves["vof"] is not None:
        plot.append(("VOF", curves["vof"], (80, 160, 255)))
    scale = max(max(curves["aif"]), 1e-9) / max(max(curves["brain_mean"]), 1e-9)
    plot.append(
        (f"brain mean x{scale:.0f}", [c * scale for c in curves["brain_mean"]], (80, 220, 80))
    )
    b = qc["bolus"]
    pages.append(
        render_report(
            "qcontrol_bolus",
            [
                f"AIF peak {b['aif']['peak']:.1f}, peak-to-noise {b['aif']['peak_to_noise']}",
                f"Brain peak {b['brain']['peak']:.2f}, peak-to-noise {b['brain']['peak_to_noise']}",
                f"AIF voxels (z,y,x): {curves['aif_voxels_zyx'][:4]}",
                f"AIF partial-volume scale (VOF area / AIF area): {curves['pve_scale']}",
                f"Bolus arrival {qc['bolus_arrival_s']} s, baseline frames {qc['baseline_frames']}",
            ],
            plot,
            curves["time_s"],
        )
    )
    stats = qc["flowstats"]
    rows = []
    for name, entry in stats.items():
        left, right = entry.get("left"), entry.get("right")
        rows.append(
            f"{name.upper():5s} left {_fmt(left):28s} right {_fmt(right):28s} "
            f"L/R {entry.get('left_right_ratio', '-')}"
        )
    pages.append(
        render_report(
            "qcontrol_flowstats (median [p10-p90] per hemisphere)",
            [*rows, _reference_line(v)],
        )
    )
    if result.motion is not None:
        m = result.motion
        pages.append(
            render_report(
                "Motion correction report",
                [
                    f"max displacement {m.max_displacement_mm:.2f} mm, max framewise displacement "
                    f"{m.max_fd_mm:.2f} mm, frames resampled: {len(m.corrected_frames)}",
                    m.reason or "no severe motion",
                ],
                [
                    ("displacement (mm)", m.displacement_mm, (255, 200, 0)),
                    ("framewise displacement (mm)", m.framewise_displacement_mm, (0, 200, 255)),
                ],
                None,
                "frame",
            )
        )
    return pages


def _reference_line(volumes: dict[str, Any]) -> str:
    """How rCBF was referenced, for the flow-statistics page."""
    ref = volumes.get("reference") or {}
    if ref.get("method") == "homologous":
        mid = ref.get("midline", {})
        return (
            f"reference CBF: mirror-image healthy tissue (median {volumes['reference_cbf']} in "
            f"hypoperfused tissue), midline {mid.get('angle_deg', 0)} deg, symmetry "
            f"{mid.get('symmetry', 0)}"
        )
    return f"reference CBF (healthy contralateral): {volumes['reference_cbf']}"


def _fmt(e: dict[str, float] | None) -> str:
    return "-" if not e else f"{e['median']:.2f} [{e['p10']:.2f}-{e['p90']:.2f}]"


def map_sources(headers: list[Dataset]) -> list[Dataset]:
    """The source images a Parametric Map references, as highdicom accepts them.

    highdicom takes exactly one multi-frame source (an Enhanced CT/MR perfusion gives the
    same instance for every slice: it raised "Only one source image should be provided",
    and the maps were lost) or single-frame images of one series with one matrix (a
    perfusion merged from several series: those of the first series).
    """
    unique = list({id(h): h for h in headers}.values())
    first = unique[0]
    if int(first.get("NumberOfFrames", 1) or 1) > 1:
        return [first]
    same = (first.get("SeriesInstanceUID"), first.get("Rows"), first.get("Columns"))
    return [
        h for h in unique if (h.get("SeriesInstanceUID"), h.get("Rows"), h.get("Columns")) == same
    ]


def parametric_map(
    result: PerfusionResult,
    name: str,
    number: int,
    uid_root: str = "",
    now: _dt.datetime | None = None,
) -> Dataset:
    """One map as a highdicom Parametric Map on the perfusion grid (true geometry), with the
    series-level attributes of every output (``stamp_series``) and the method in its
    Content Description and each frame's Derivation Description (PS3.3 C.7.6.16.2.6)."""
    s = result.series
    values = np.ascontiguousarray(result.maps[name], np.float32)
    unit = MAP_UNITS[name]
    mapping = hd.pm.RealWorldValueMapping(
        lut_label=name.upper(),
        lut_explanation=f"{name.upper()} ({unit})",
        unit=Code(UCUM[unit], "UCUM", unit),
        value_range=(float(values.min()), float(values.max()) or 1.0),
        slope=1.0,
        intercept=0.0,
    )
    positions = [
        hd.PlanePositionSequence(
            hd.CoordinateSystemNames.PATIENT, [float(v) for v in s.slice_position(z)]
        )
        for z in range(values.shape[0])
    ]
    label, vmin, vmax, _ = MAP_DISPLAY[name]
    pm = hd.pm.ParametricMap(
        source_images=highdicom_sources(map_sources(s.slice_headers)),
        pixel_array=values,
        series_instance_uid=new_uid(uid_root),
        series_number=number,
        sop_instance_uid=new_uid(uid_root),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name="lucent-perfusion",
        software_versions=SOFTWARE_VERSION,
        device_serial_number="0",
        contains_recognizable_visual_features=False,
        real_world_value_mappings=[mapping],
        voi_lut_transformations=[
            hd.VOILUTTransformation(window_center=(vmin + vmax) / 2, window_width=vmax - vmin)
        ],
        content_label=label.upper(),
        content_description=f"{label} map, {method_text(result.parameters)}"[:64]
        if result.parameters
        else f"{label} map",
        pixel_measures=hd.PixelMeasuresSequence(
            pixel_spacing=[s.spacing[1], s.spacing[2]],
            slice_thickness=s.spacing[0],
            spacing_between_slices=s.spacing[0],
        ),
        plane_orientation=hd.PlaneOrientationSequence(
            hd.CoordinateSystemNames.PATIENT, [*map(float, s.row_dir), *map(float, s.col_dir)]
        ),
        plane_positions=positions,
    )
    pm.SeriesDescription = f"Perfusion {label} (quantitative)"
    # Content Identification Macro (PS3.3 Table 10-12): Content Creator's Name is Type 2,
    # present and empty for a machine-made map; highdicom leaves it out without a name
    if "ContentCreatorName" not in pm:
        pm.ContentCreatorName = ""
    stamp_series(pm, s.slice_headers[0], now or _dt.datetime.now(), s.modality)
    if result.parameters:
        # highdicom references the source slice of each frame in a per-frame Derivation
        # Image item: the method goes there (a shared one too is an error, PS3.3 C.7.6.16)
        text = derivation(f"{label} map", result.parameters)
        for frame in pm.PerFrameFunctionalGroupsSequence:
            for item in frame.get("DerivationImageSequence", []):
                item.DerivationDescription = text
    return pm
