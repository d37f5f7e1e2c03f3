"""Checks of the static series given with a perfusion series (``--dwi`` ADC map, ``--flair``).

Issue 6: "Optional DWI (ADC) and FLAIR series of the same patient". An ADC map decides the
MR core (ADC <= 620 x10^-6 mm²/s), so any other series given in its place is a patient
safety matter: a plain CT head (HU 20-40) or a DWI trace image (signal ~400) reads as
"ADC below 620" in the whole brain (core 591 mL instead of 11.5, DEFUSE-3 "not met", outside
probe), and another patient's ADC map gives that patient's core. A series that fails these
checks is not used; the analysis goes on with the rCBF core and says loudly why (what
RAPID-class products do with an unusable DWI), rather than refusing the whole perfusion.
"""

from __future__ import annotations

import unicodedata
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from .series import image_type

ADC_TISSUE_MEDIAN = (400.0, 1600.0)
"""Median of the non-zero voxels of a head ADC map (x10^-6 mm²/s): brain tissue lies near
600-1000, CSF near 3000, so the mixture's median lies well inside this range; a map in
10^-3 mm²/s (0.8) or 10^-5 (80) does not, nor a T2/DWI image of most scanners."""
ADC_CSF_MIN = 1500.0
ADC_CSF_OVER_MEDIAN = 1.8
"""In an ADC map free water (CSF, ~3000) is the brightest tissue: the 99th percentile is at
least this and this many times the median. In a diffusion-weighted image CSF is dark."""


def labelled_adc(ds: Dataset) -> bool:
    """Image Type names an ADC map (Siemens, GE, Philips: a value "ADC")."""
    return any(v == "ADC" or v.startswith("ADC_") for v in image_type(ds))


def _fold(text: str) -> str:
    """Letters and digits only, without accents or case: 'Müller-Lüdenscheidt ' and
    'MUELLER LUDENSCHEIDT' still differ (ue), but 'Müller' and 'MULLER' do not."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if c.isalnum()).casefold()


def _name(value: Any) -> tuple[str, str]:
    """(family, given) of a PN, alphabetic group only, folded."""
    alphabetic = str(value or "").split("=")[0]
    parts = alphabetic.split("^")
    return _fold(parts[0]), _fold(parts[1]) if len(parts) > 1 else ""


def _same_name(a: Any, b: Any) -> bool:
    (fa, ga), (fb, gb) = _name(a), _name(b)
    if ga and gb:  # given names: "John" matches "John Paul" and "J"
        return fa == fb and (ga.startswith(gb) or gb.startswith(ga))
    # a side without given name: the same family name, or the same letters ("DOE JOHN")
    return fa == fb or fa + ga == fb + gb


def _text(ds: Dataset, key: str) -> str:
    return str(ds.get(key, "") or "").strip()


def _issuer(ds: Dataset) -> tuple[str, str]:
    """(Issuer of Patient ID, Universal Entity ID of its qualifiers), folded."""
    uid = ""
    seq = ds.get("IssuerOfPatientIDQualifiersSequence")
    if seq:
        uid = str(seq[0].get("UniversalEntityID", "") or "").strip()
    return _text(ds, "IssuerOfPatientID").casefold(), uid.casefold()


def patient_mismatch(perfusion: Dataset, other: Dataset) -> str | None:
    """Why ``other`` is not (or cannot be shown to be) the perfusion's patient, or None.

    Patient ID must be equal (case and surrounding spaces aside) and so must the issuer
    where both series name one; name (family name, and given name where both have one;
    case, accents, spaces and punctuation aside) and birth date (digits) must agree where
    both are present. Without any identifier on either side the identity cannot be confirmed.
    """
    pid_a, pid_b = _text(perfusion, "PatientID"), _text(other, "PatientID")
    if pid_a.casefold() != pid_b.casefold():
        return (
            f"another patient: Patient ID {pid_b or '(none)'!r}, the perfusion series has "
            f"{pid_a or '(none)'!r}"
        )
    for index, what in ((0, "Issuer of Patient ID"), (1, "issuer's Universal Entity ID")):
        ia, ib = _issuer(perfusion)[index], _issuer(other)[index]
        if ia and ib and ia != ib:
            return f"another patient: same Patient ID {pid_a!r} but another {what}"
    name_a, name_b = _text(perfusion, "PatientName"), _text(other, "PatientName")
    if _fold(name_a) and _fold(name_b) and not _same_name(name_a, name_b):
        return f"another patient: same Patient ID {pid_a!r} but another Patient's Name"
    birth_a = "".join(c for c in _text(perfusion, "PatientBirthDate") if c.isdigit())
    birth_b = "".join(c for c in _text(other, "PatientBirthDate") if c.isdigit())
    if birth_a and birth_b and birth_a != birth_b:
        return f"another patient: same Patient ID {pid_a!r} but another Patient's Birth Date"
    if not pid_a and not (_fold(name_a) and _fold(name_b)) and not (birth_a and birth_b):
        return "the patient cannot be confirmed: neither series has a Patient ID"
    return None


def adc_problem(header: Dataset, values: np.ndarray) -> str | None:
    """Why a series is not an ADC map in 10^-6 mm²/s, or None.

    An MR series; not labelled as a diffusion-weighted image (Image Type TRACE..., or a
    Diffusion b-value > 0 without "ADC"); and values of an ADC map (module constants),
    checked also when Image Type says ADC, because a map stored in other units would put
    the 620 threshold anywhere.
    """
    modality = _text(header, "Modality").upper()
    if modality != "MR":
        return f"not an ADC map: a {modality or 'non-MR'} series (an ADC map is MR)"
    kinds = image_type(header)
    b_value = header.get((0x0018, 0x9087))
    b = float(b_value.value) if b_value is not None and b_value.value not in (None, "") else 0.0
    if not labelled_adc(header) and (any(k.startswith("TRACE") for k in kinds) or b > 0):
        label = "\\".join(kinds) or "-"
        return (
            f"not an ADC map: a diffusion-weighted image (Image Type {label}"
            f"{f', b = {b:g} s/mm²' if b else ''})"
        )
    v = values[np.isfinite(values)]
    v = v[v > 0]
    if v.size < 100:
        return "not an ADC map: (almost) no positive values"
    median, p99 = (float(x) for x in np.percentile(v, [50, 99]))
    lo, hi = ADC_TISSUE_MEDIAN
    if not lo <= median <= hi:
        return (
            f"not an ADC map in 10^-6 mm²/s: median value {median:.3g} (brain tissue is "
            "600-1000; another unit or another kind of image)"
        )
    if p99 < max(ADC_CSF_MIN, ADC_CSF_OVER_MEDIAN * median):
        return (
            f"not an ADC map: no free water (99th percentile {p99:.0f}, median {median:.0f}; "
            "CSF is ~3000 x10^-6 mm²/s on an ADC map, dark on a diffusion-weighted image)"
        )
    return None


def problem(kind: str, perfusion: Dataset, header: Dataset, values: np.ndarray) -> str | None:
    """Why the ``kind`` ("dwi" or "flair") series must not be used with this perfusion."""
    why = patient_mismatch(perfusion, header)
    if why is not None:
        return why
    if kind == "dwi":
        return adc_problem(header, values)
    modality = _text(header, "Modality").upper()
    if modality != "MR":
        return f"not a FLAIR series: a {modality or 'non-MR'} series (FLAIR is MR)"
    return None
