"""Session expiry in the browser (probe 32): with the login dialog cancelled, no study list
is left under an active filter bar; the browser says it is signed out and offers a login."""

from __future__ import annotations

from typing import Any

from lucent.api.client import LucentClient
from tests.gui import scenes


def test_cancelled_login_leaves_the_signed_out_state(
    qtbot: Any, server: Any, scene: scenes.Scene, artifacts: Any, monkeypatch: Any
) -> None:
    from workstation.qt.main_window import MainWindow

    client = server.client()  # a session of the test's own: revoked below
    win = MainWindow(client)
    qtbot.addWidget(win)
    win.resize(1400, 900)
    win.show()
    qtbot.waitExposed(win)
    panel = win.browser
    panel.refresh()
    assert panel.visible_study_uids()
    # the session is revoked elsewhere (logout with the same token)
    other = LucentClient(client.base_url)
    other.token = client.token
    other.logout()
    asked: list[int] = []

    def cancel() -> None:
        asked.append(1)
        return None

    monkeypatch.setattr(win, "login_again", cancel)
    panel.search.setText(f"Guitest{scene.suffix}^Bernd")
    panel.refresh()  # what the debounce timer does
    assert asked == [1]
    assert panel.filter_label.isVisible()
    assert panel.visible_study_uids() == [] and panel.tree.topLevelItemCount() == 0
    assert panel.signed_out and panel.banner.isVisible()
    assert "Signed out" in panel.banner.text()
    assert "signed out" in panel.count_label.text()
    assert panel.retry_button.isVisible()
    win.grab().save(str(artifacts / "s13_signed_out.png"))
    # logging in again (the banner's button) shows the filtered list
    fresh = server.client()
    monkeypatch.setattr(win, "login_again", lambda: fresh.token)
    panel.retry_button.click()
    assert not panel.signed_out and not panel.banner.isVisible()
    uids = panel.visible_study_uids()
    assert uids and all(
        s.patient_name.startswith(f"Guitest{scene.suffix}^Bernd")
        for s in panel.studies
        if s.study_uid in uids
    )
    client.close()
