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

import httpx

from lucent.api import schemas
from lucent.api.client import ApiError

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
    """Run the filter's queries and merge (one query when no text is typed): one page of
    each, at most ``limit`` studies per query. The browser pages with :class:`StudyPages`.

    The server leaves this user's hidden studies out unless ``show_hidden`` is set.
    """
    out: list[schemas.StudyOut] = []
    extra = {"show_hidden": "true"} if show_hidden else {}
    for q in flt.queries():
        out.extend(client.studies(limit=limit, **q, **extra))
    return out


#: /api/v1/studies answers at most this many studies per request (its ``limit`` maximum).
SERVER_PAGE_MAX = 1000


def _study_key(s: schemas.StudyOut) -> str:
    return s.study_uid or f"{s.patient_id}:{s.reason}"


class StudyPages:
    """The browser's study list, page by page, so that every study can be reached.

    The browser showed ``search(limit=500)``: the newest 500 studies and nothing to say that
    more existed (probe 22: 591 studies, 91 unreachable). Each of the filter's queries is
    paged with the server's ``offset``/``limit`` and its ``total``; ``more()`` fetches the
    next page of every query not yet exhausted, and ``summary()`` says "N of TOTAL studies"
    whenever the list is not complete.

    With typed text the result is the union of three queries (name, ID, accession) that may
    overlap: until every query is exhausted TOTAL is an upper bound ("up to").
    """

    def __init__(self, client: Any, page: int = SERVER_PAGE_MAX) -> None:
        self.client = client
        self.page = max(1, min(page, SERVER_PAGE_MAX))
        self.studies: list[schemas.StudyOut] = []
        self._queries: list[dict[str, Any]] = []
        self._offsets: list[int] = []
        self._totals: list[int | None] = []
        self._seen: set[str] = set()

    def first(self, flt: Filter, show_hidden: bool = False) -> list[schemas.StudyOut]:
        """Start over with a new filter: the first page of each query."""
        extra = {"show_hidden": "true"} if show_hidden else {}
        queries = [{**q, **extra} for q in flt.queries()]
        pages = [self._fetch(q, 0) for q in queries]  # all or nothing: errors leave state
        self._queries, self._offsets = queries, [0] * len(queries)
        self._totals = [None] * len(queries)
        self.studies, self._seen = [], set()
        for k, page in enumerate(pages):
            self._take(k, page)
        return self.studies

    def more(self) -> list[schemas.StudyOut]:
        """The next page of every query that has more; returns the studies new to the list."""
        before = len(self.studies)
        for k, q in enumerate(self._queries):
            if self._query_has_more(k):
                self._take(k, self._fetch(q, self._offsets[k]))
        return self.studies[before:]

    def all(self) -> list[schemas.StudyOut]:
        """Every page (the "load all" button); at most total / page requests per query."""
        while self.has_more:
            if not self.more() and not self.has_more:
                break
        return self.studies

    def _fetch(self, query: dict[str, Any], offset: int) -> schemas.Page[schemas.StudyOut]:
        page: schemas.Page[schemas.StudyOut] = self.client.studies_page(
            offset=offset, limit=self.page, **query
        )
        return page

    def _take(self, k: int, page: schemas.Page[schemas.StudyOut]) -> None:
        self._offsets[k] += len(page.items)
        total = page.total
        if total is None or not page.items:
            # No total from the server: a short (or empty) page is the last one.
            total = self._offsets[k] if len(page.items) < self.page else None
        self._totals[k] = total
        for s in page.items:
            key = _study_key(s)
            if key not in self._seen:
                self._seen.add(key)
                self.studies.append(s)

    def _query_has_more(self, k: int) -> bool:
        total = self._totals[k]
        return total is None or self._offsets[k] < total

    @property
    def has_more(self) -> bool:
        return any(self._query_has_more(k) for k in range(len(self._queries)))

    @property
    def total(self) -> int | None:
        """Studies the filter matches: exact when complete or when there is one query, else
        an upper bound (the loaded ones plus what each query still has); None: unknown."""
        if not self.has_more:
            return len(self.studies)
        if any(t is None for t in self._totals):
            return None
        if self._exact:
            return sum(int(t or 0) for t in self._totals)
        rest = sum(int(t or 0) - o for t, o in zip(self._totals, self._offsets, strict=True))
        return len(self.studies) + rest

    @property
    def _exact(self) -> bool:
        """At most one query matches anything: no overlap, so its total is the total."""
        return sum(1 for t in self._totals if t) <= 1

    def summary(self) -> str:
        """ "N studies", or "N of TOTAL studies" when more exist than are listed."""
        n = len(self.studies)
        noun = "study" if n == 1 else "studies"
        if not self.has_more:
            return f"{n} {noun}"
        total = self.total
        if total is None:
            return f"{n} studies shown, more available"
        bound = "" if self._exact else "up to "
        return f"{n} of {bound}{total} studies"


def unreachable_message(exc: BaseException, server: str = "") -> str | None:
    """A reason a person can act on when the server cannot be reached (or fails), else None.

    A stopped server made every search raise httpx.ConnectError inside a Qt slot: nothing in
    the window changed, and the tree kept unfiltered rows under an active filter bar.
    """
    where = f" at {server}" if server else ""
    if isinstance(exc, httpx.TimeoutException):
        return (
            f"The Lucent server{where} does not answer (timed out). Check that it is running "
            "and not overloaded; the list is retried automatically."
        )
    if isinstance(exc, httpx.TransportError):
        return (
            f"Cannot reach the Lucent server{where}. Check that the server is running "
            "(lucent-server run, or its service) and the network; the list is retried "
            "automatically."
        )
    if isinstance(exc, ApiError) and exc.status >= 500:
        return (
            f"The Lucent server{where} failed ({exc.status}: {exc.detail}). See the server "
            "log; the list is retried automatically."
        )
    return None


def format_date(value: str) -> str:
    if len(value) == 8 and value.isdigit():
        return f"{value[:4]}-{value[4:6]}-{value[6:]}"
    return value


def _format_group(group: str) -> str:
    """One PN component group "Family^Given^Middle^Prefix^Suffix" → "Family, Given Middle"."""
    parts = [p.strip() for p in group.split("^")]
    family = parts[0] if parts else ""
    rest = " ".join(p for p in parts[1:] if p)
    if family and rest:
        return f"{family}, {rest}"
    return family or rest


def format_name(value: str) -> str:
    """DICOM PN → what a person reads (browser rows, viewer overlay).

    A PN has up to three component groups, alphabetic=ideographic=phonetic (PS3.5 6.2.1.2),
    and any may be empty: "=山田^花子" (ISO 2022 IR 87) has only the ideographic one, which
    showed as a blank name. The first non-empty group is shown; with both alphabetic and
    ideographic, "alphabetic (ideographic)", so neither reader loses the name.
    """
    groups = [_format_group(g) for g in (value or "").split("=")[:3]]
    groups += [""] * (3 - len(groups))
    alphabetic, ideographic, phonetic = groups
    if alphabetic and ideographic and ideographic != alphabetic:
        return f"{alphabetic} ({ideographic})"
    return alphabetic or ideographic or phonetic
