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
