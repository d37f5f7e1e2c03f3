"""QIDO-RS date and time query values (PS3.18 8.3.4.1, PS3.4 C.2.2.2.5 range matching).

``StudyDate=garbage`` or ``StudyDate=2020-13-45`` used to answer 200 with no match, so a
client could not tell a typo from an empty archive. A DA, TM or DT value must be one value
or a range (``A-B``, ``A-``, ``-B``) of values of its VR (PS3.5 Table 6.2-1) naming a real
calendar date and clock time; anything else is a 400 that says what was expected.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from fastapi import HTTPException

from lucent.dicom import temporal

_ISO_DA = re.compile(r"\d{4}-\d{2}-\d{2}")  # not DICOM, but the index has always taken it

_EXPECTED = {
    "DA": "YYYYMMDD, or a range YYYYMMDD-YYYYMMDD (either end may be left out)",
    "TM": "HHMMSS[.FFFFFF] (minutes and seconds optional), or a range of those",
    "DT": "YYYYMMDDHHMMSS[.FFFFFF][&ZZXX] (trailing parts optional), or a range of those",
}


def _single(vr: str, value: str, *, in_range: bool = False) -> tuple[float, ...] | None:
    """The parsed value, or None when it is not one value of ``vr``. ISO dates
    (2024-01-31) are taken alone, never as the end of a range, which they would make
    ambiguous (the index splits a range at its first '-')."""
    checks: list[tuple[re.Pattern[str], Callable[[str], tuple[float, ...]]]] = {
        "DA": [(temporal.DA, temporal.parse_date)] + ([] if in_range else [(_ISO_DA, _iso_date)]),
        "TM": [(temporal.TM, temporal.parse_time)],
        "DT": [(temporal.DT, temporal.parse_datetime)],
    }[vr]
    for pattern, parse in checks:
        if pattern.fullmatch(value):
            try:
                return parse(value)
            except ValueError:
                return None
    return None


def _iso_date(text: str) -> tuple[float, ...]:
    return temporal.parse_date(text.replace("-", ""))


def check(param: str, vr: str, value: str) -> None:
    """400 unless ``value`` is universal ('' or '*'), one ``vr`` value, or a range of them.

    DT ranges are split at each '-' in turn, as a '-' may also start a UTC offset. A date
    range whose end comes before its start can match nothing: 400 too."""
    if vr not in _EXPECTED:
        return
    text = value.strip()
    if text in ("", "*") or _single(vr, text) is not None:
        return
    for i, ch in enumerate(text):
        if ch != "-":
            continue
        low, high = text[:i].strip(), text[i + 1 :].strip()
        if not (low or high):
            continue
        start = _single(vr, low, in_range=True) if low else ()
        end = _single(vr, high, in_range=True) if high else ()
        if start is None or end is None:
            continue
        if vr == "DA" and start and end and start > end:
            raise HTTPException(400, f"{param}: the range {text[:64]} ends before it begins")
        return
    raise HTTPException(400, f"invalid {vr} value for {param}: {text[:64]!r}; {_EXPECTED[vr]}")
