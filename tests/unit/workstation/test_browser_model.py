"""Study browser state: filter active/clear (FAQ), date presets, hidden data (FAQ)."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

from lucent.api import schemas
from workstation.model import browser


def _study(uid: str, name: str, date: str = "20240101", **kw: object) -> schemas.StudyOut:
    return schemas.StudyOut(
        study_uid=uid, patient_id=f"ID-{name}", patient_name=name, birth_date="", study_date=date,
        study_time="", description="", accession_number="", referring_physician="", study_id="",
        modalities=["CT"], series_count=1, instance_count=1, pool="DEFAULT", **kw,
    )  # fmt: skip


def test_filter_active_and_clear() -> None:
    f = browser.Filter()
    assert not f.active and f.queries() == [{}]
    f.text = "schmidt"
    assert f.active and "schmidt" in f.describe()
    q = f.queries()
    assert q[0] == {"patient_name": "*schmidt*", "case_insensitive": True}
    assert {"patient_id": "*schmidt*"} in q
    f.clear()
    assert not f.active and f.describe() == ""


def test_date_presets() -> None:
    today = dt.date(2024, 3, 10)
    assert browser.date_range("Today", today) == "20240310"
    assert browser.date_range("Yesterday", today) == "20240309"
    assert browser.date_range("Last 7 days", today) == "20240304-20240310"
    assert browser.date_range("Any date", today) == ""
    f = browser.Filter(date_preset="Last 7 days", modality="ct")
    assert f.queries(today) == [{"study_date": "20240304-20240310", "modality": "CT"}]


class _HiddenRoutes:
    """The three /api/v1/hidden calls of LucentClient, kept in memory (model logic only;
    the GUI test runs the same against the real server)."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], object] = {}

    def hidden_items(self) -> list[object]:
        return list(self.items.values())

    def hide(self, level: str, uid: str) -> None:
        self.items[(level, uid)] = SimpleNamespace(level=level, uid=uid)

    def unhide(self, level: str = "", uid: str = "") -> None:
        for key in list(self.items):
            if (not level or key[0] == level) and (not uid or key[1] == uid):
                del self.items[key]


def test_hidden_data_lives_on_the_server_and_show_hidden_restores() -> None:
    routes = _HiddenRoutes()
    store = browser.HiddenStore(routes)
    store.hide_study("1.2.3")
    store.hide_series("1.2.3.4")
    assert set(routes.items) == {("study", "1.2.3"), ("series", "1.2.3.4")}
    again = browser.HiddenStore(routes)  # another workstation of the same user
    assert again.studies == {"1.2.3"} and again.series == {"1.2.3.4"}
    studies = [_study("1.2.3", "A^B"), _study("1.2.4", "A^B"), _study("", "X^Y", placeholder=True,
               reason="no pixel data")]  # fmt: skip
    rows = browser.group(studies, again, show_hidden=False)
    uids = [s.study_uid for r in rows for s in r.studies]
    assert "1.2.3" not in uids and "1.2.4" in uids
    assert any(s.placeholder and s.reason == "no pixel data" for r in rows for s in r.studies)
    rows = browser.group(studies, again, show_hidden=True)
    assert "1.2.3" in [s.study_uid for r in rows for s in r.studies]
    again.hide_study("1.2.3", hidden=False)
    assert "1.2.3" not in browser.HiddenStore(routes).studies
    again.restore_all()
    assert routes.items == {} and not again.series


def test_format() -> None:
    assert browser.format_name("Schmidt^Anna^Maria") == "Schmidt, Anna Maria"
    assert browser.format_date("20240102") == "2024-01-02"


def test_format_name_shows_the_first_non_empty_component_group() -> None:
    """Probe 22: "=山田^花子" (ideographic group only, ISO 2022 IR 87) showed blank."""
    assert browser.format_name("=山田^花子") == "山田, 花子"
    assert browser.format_name("==やまだ^はなこ") == "やまだ, はなこ"
    both = "Yamada^Tarou=山田^太郎=やまだ^たろう"
    assert browser.format_name(both) == "Yamada, Tarou (山田, 太郎)"
    assert browser.format_name("Müller^Jürgen") == "Müller, Jürgen"
    assert browser.format_name("Smith^John^^Dr") == "Smith, John Dr"
    assert browser.format_name("Anonymous") == "Anonymous"
    assert browser.format_name("^Given") == "Given"
    assert browser.format_name("") == ""


class _PagedStudies:
    """/api/v1/studies paging (offset, limit, total) over an in-memory list per query."""

    def __init__(self, by_query: dict[str, list[schemas.StudyOut]]) -> None:
        self.by_query = by_query
        self.calls: list[tuple[str, int, int]] = []

    def studies_page(self, offset: int = 0, limit: int = 100, **q: object) -> schemas.Page:
        key = next((k for k in ("patient_name", "patient_id", "accession_number") if k in q), "")
        rows = self.by_query.get(key, [])
        self.calls.append((key, offset, limit))
        return schemas.Page[schemas.StudyOut](
            items=rows[offset : offset + limit], offset=offset, limit=limit, total=len(rows)
        )


def test_every_study_is_reachable_page_by_page_and_the_count_says_so() -> None:
    """Probe 22: 591 studies, the browser showed the newest 500 and no count."""
    everything = [_study(f"1.2.{k}", f"P^{k:04d}") for k in range(591)]
    client = _PagedStudies({"": everything})
    pages = browser.StudyPages(client, page=500)
    pages.first(browser.Filter())
    assert len(pages.studies) == 500 and pages.has_more
    assert pages.summary() == "500 of 591 studies"
    new = pages.more()
    assert len(new) == 91 and not pages.has_more
    assert {s.study_uid for s in pages.studies} == {s.study_uid for s in everything}
    assert pages.summary() == "591 studies"
    assert client.calls == [("", 0, 500), ("", 500, 500)]
    assert browser.StudyPages(client, page=5000).page == browser.SERVER_PAGE_MAX


def test_typed_text_pages_each_query_and_merges_overlaps() -> None:
    by_name = [_study(f"1.3.{k}", f"Smith^{k}") for k in range(7)]
    by_id = [by_name[5], _study("1.3.99", "Other^X")]  # overlaps a later name page once
    client = _PagedStudies({"patient_name": by_name, "patient_id": by_id})
    pages = browser.StudyPages(client, page=3)
    pages.first(browser.Filter(text="smith"))
    assert len(pages.studies) == 5  # 3 by name + 2 by ID
    assert pages.summary() == "5 of up to 9 studies"  # 1 overlap not known yet
    pages.all()
    assert not pages.has_more and pages.summary() == "8 studies"
    only_name = browser.StudyPages(_PagedStudies({"patient_name": by_name}), page=3)
    only_name.first(browser.Filter(text="smith"))
    assert only_name.summary() == "3 of 7 studies"  # ID/accession match nothing: exact


def test_unreachable_server_gives_an_actionable_message() -> None:
    import httpx

    from lucent.api.client import ApiError

    msg = browser.unreachable_message(httpx.ConnectError("refused"), "http://127.0.0.1:8750")
    assert msg is not None and "Cannot reach the Lucent server at http://127.0.0.1:8750" in msg
    assert "running" in msg
    assert "timed out" in (browser.unreachable_message(httpx.ReadTimeout("slow")) or "")
    assert "503" in (browser.unreachable_message(ApiError(503, "busy")) or "")
    assert browser.unreachable_message(ApiError(404, "no such study")) is None
    assert browser.unreachable_message(ValueError("bug")) is None
