"""Study browser state: search filter, date presets, hidden data (FAQ), tree rows.

FAQ: "Make sure that the search field is empty. By deleting the filter entry, all records
will be displayed again" — so ``Filter.active`` drives a visible "filter active" state and
``clear()`` is one click. Names match case-insensitively (the FAQ's "schmidt"/"Schmidt").
FAQ: hidden studies/series come back with "Show hidden data" in the settings; the server keeps
the per-user list (/api/v1/hidden), so hiding follows the user to every workstation.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from lucent.api import schemas

DATE_PRESETS = ("Any date", "Today", "Yesterday", "Last 7 days", "Last 30 days")


def date_range(preset: str, today: dt.date | None = None) -> str:
    """The DICOM date range (YYYYMMDD-YYYYMMDD) of a preset; "" for any date."""
    today = today or dt.date.today()
    fmt = "%Y%m%d"
    if preset == "Today":
        return today.strftime(fmt)
    if preset == "Yesterday":
        return (today - dt.timedelta(days=1)).strftime(fmt)
    if preset in ("Last 7 days", "Last 30 days"):
        days = 7 if preset == "Last 7 days" else 30
        return f"{(today - dt.timedelta(days=days - 1)).strftime(fmt)}-{today.strftime(fmt)}"
    return ""


@dataclass
class Filter:
    text: str = ""
    date_preset: str = "Any date"
    modality: str = ""

    @property
    def active(self) -> bool:
        return bool(self.text.strip() or self.modality.strip()) or self.date_preset != "Any date"

    def clear(self) -> None:
        self.text, self.date_preset, self.modality = "", "Any date", ""

    def describe(self) -> str:
        parts = []
        if self.text.strip():
            parts.append(f'"{self.text.strip()}"')
        if self.date_preset != "Any date":
            parts.append(self.date_preset.lower())
        if self.modality.strip():
            parts.append(self.modality.strip().upper())
        return "Filter active: " + ", ".join(parts) if parts else ""

    def queries(self, today: dt.date | None = None) -> list[dict[str, Any]]:
        """Server queries whose union is the result: name OR patient ID OR accession.

        Plain text matches anywhere in the name (``*text*``), case-insensitively; text with
        wildcards is sent as typed.
        """
        base: dict[str, Any] = {}
        dr = date_range(self.date_preset, today)
        if dr:
            base["study_date"] = dr
        if self.modality.strip():
            base["modality"] = self.modality.strip().upper()
        text = self.text.strip()
        if not text:
            return [base]
        pattern = text if ("*" in text or "?" in text) else f"*{text}*"
        return [
            {**base, "patient_name": pattern, "case_insensitive": True},
            {**base, "patient_id": pattern},
            {**base, "accession_number": pattern},
        ]


class HiddenStore:
    """This user's hidden studies/series, kept by the server (/api/v1/hidden, FAQ).

    The server leaves hidden items out of /studies and /series for this user on every
    device; "Show hidden data" asks with ``show_hidden`` and restores items one by one.
    The sets mirror the server so rows can be greyed without another request.
    """

    def __init__(self, client: Any) -> None:
        self.client = client
        self.studies: set[str] = set()
        self.series: set[str] = set()
        self.reload()

    def reload(self) -> None:
        items = self.client.hidden_items()
        self.studies = {h.uid for h in items if h.level == "study"}
        self.series = {h.uid for h in items if h.level == "series"}

    def _set(self, level: str, uid: str, hidden: bool) -> None:
        if hidden:
            self.client.hide(level, uid)
        else:
            self.client.unhide(level, uid)
        target = self.studies if level == "study" else self.series
        (target.add if hidden else target.discard)(uid)

    def hide_study(self, uid: str, hidden: bool = True) -> None:
        self._set("study", uid, hidden)

    def hide_series(self, uid: str, hidden: bool = True) -> None:
        self._set("series", uid, hidden)

    def restore_all(self) -> None:
        """Unhide everything this user has hidden."""
        self.client.unhide()
        self.studies, self.series = set(), set()


@dataclass
class PatientRow:
    patient_id: str
    name: str
    birth_date: str
    studies: list[schemas.StudyOut] = field(default_factory=list)


def group(
    studies: list[schemas.StudyOut], hidden: HiddenStore, show_hidden: bool
) -> list[PatientRow]:
    """Patient → studies (placeholders included, with their reason); hidden ones left out."""
    patients: dict[tuple[str, str], PatientRow] = {}
    seen: set[str] = set()
    for s in studies:
        key = s.study_uid or f"{s.patient_id}:{s.reason}"
        if key in seen:
            continue
        seen.add(key)
        if not show_hidden and s.study_uid in hidden.studies:
            continue
        row = patients.setdefault(
            (s.patient_id, s.patient_name), PatientRow(s.patient_id, s.patient_name, s.birth_date)
        )
        row.studies.append(s)
    for row in patients.values():
        row.studies.sort(key=lambda s: (s.study_date, s.study_time), reverse=True)
    return sorted(patients.values(), key=lambda r: (r.name.casefold(), r.patient_id))


def visible_series(
    series: list[schemas.SeriesOut], hidden: HiddenStore, show_hidden: bool
) -> list[schemas.SeriesOut]:
    return [s for s in series if show_hidden or s.series_uid not in hidden.series]


def search(
    client: Any, flt: Filter, limit: int = 500, show_hidden: bool = False
) -> list[schemas.StudyOut]:
    """Run the filter's queries and merge (one query when no text is typed).

    The server leaves this user's hidden studies out unless ``show_hidden`` is set.
    """
    out: list[schemas.StudyOut] = []
    extra = {"show_hidden": "true"} if show_hidden else {}
    for q in flt.queries():
        out.extend(client.studies(limit=limit, **q, **extra))
    return out


def format_date(value: str) -> str:
    if len(value) == 8 and value.isdigit():
        return f"{value[:4]}-{value[4:6]}-{value[6:]}"
    return value


def format_name(value: str) -> str:
    """DICOM PN "Family^Given^Middle" → "Family, Given Middle"."""
    parts = [p for p in value.split("=")[0].split("^")]
    if len(parts) >= 2 and parts[1]:
        return f"{parts[0]}, {' '.join(p for p in parts[1:] if p)}"
    return parts[0] if parts else value
