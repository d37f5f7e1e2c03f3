"""DA, TM and DT values (PS3.5 Table 6.2-1): parsed and checked, for stored data and queries.

A stored value that names no calendar day or clock time ("2020-13-45") is an invalid value:
the archive refuses the instance (Conformance 4.1.3.2) instead of indexing a truncated
"2020-13-" that range matching then sorts among real dates. ACR-NEMA's "YYYY.MM.DD" and
"HH:MM:SS" are taken on receipt, as PS3.5 6.2 recommends for backward compatibility.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable

DA = re.compile(r"\d{8}")
ACR_NEMA_DA = re.compile(r"\d{4}\.\d{2}\.\d{2}")
TM = re.compile(r"\d{2}(?::?\d{2}(?::?\d{2}(?:\.\d{1,6})?)?)?")
DT = re.compile(
    r"\d{4}(?:\d{2}(?:\d{2}(?:\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,6})?)?)?)?)?)?(?:[+-]\d{4})?"
)
EXPECTED = {
    "DA": "YYYYMMDD",
    "TM": "HHMMSS[.FFFFFF] (minutes and seconds optional)",
    "DT": "YYYYMMDDHHMMSS[.FFFFFF][&ZZXX] (trailing parts optional)",
}


def parse_date(text: str) -> tuple[int, int, int]:
    """(year, month, day) of YYYYMMDD; ValueError when no such day exists."""
    day = datetime.date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    return (day.year, day.month, day.day)


def parse_time(text: str) -> tuple[int, int, float]:
    """(hours, minutes, seconds) of HH[MM[SS[.F]]] (colons allowed); ValueError when out of
    range."""
    digits = text.replace(":", "")
    hh = int(digits[:2])
    mm = int(digits[2:4]) if len(digits) >= 4 else 0
    ss = float(digits[4:]) if len(digits) > 4 else 0.0
    if hh > 23 or mm > 59 or ss >= 61:  # 60: leap second
        raise ValueError(text)
    return (hh, mm, ss)


def parse_datetime(text: str) -> tuple[float, ...]:
    """The parts of a DT value, each checked; the UTC offset must be -1200..+1400."""
    stamp, offset = text, ""
    if len(text) > 4 and text[-5] in "+-":
        stamp, offset = text[:-5], text[-5:]
    year = int(stamp[:4])
    month = int(stamp[4:6]) if len(stamp) >= 6 else 1
    day = int(stamp[6:8]) if len(stamp) >= 8 else 1
    datetime.date(year, month, day)
    clock = parse_time(stamp[8:]) if len(stamp) > 8 else (0, 0, 0.0)
    if offset:
        minutes = int(offset[1:3]) * 60 + int(offset[3:])
        if int(offset[3:]) > 59 or not -720 <= (-minutes if offset[0] == "-" else minutes) <= 840:
            raise ValueError(text)
    return (year, month, day, *clock)


_STORED: dict[str, list[tuple[re.Pattern[str], Callable[[str], object]]]] = {
    "DA": [(DA, parse_date), (ACR_NEMA_DA, lambda t: parse_date(t.replace(".", "")))],
    "TM": [(TM, parse_time)],
    "DT": [(DT, parse_datetime)],
}


def stored_value_ok(vr: str, text: str) -> bool:
    """Whether one stored value of ``vr`` (padding stripped) names a real date/time."""
    value = text.strip()
    for pattern, parse in _STORED[vr]:
        if pattern.fullmatch(value):
            try:
                parse(value)
            except ValueError:
                return False
            return True
    return False
