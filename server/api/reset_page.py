"""``GET /reset``: the page the mailed password-reset link opens (FAQ: "you will receive an
email with a link to reset your password"); the link was a 404 (probe 7).

One static page, no external assets: a form that posts the token from the link and the new
password to ``POST /api/v1/auth/password-reset/confirm``, where every rule is checked. The
page reads the token in the browser, so nothing from the request is echoed into it.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(tags=["accounts"])
_PAGE = (Path(__file__).parent / "web" / "reset.html").read_text(encoding="utf-8")
_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",  # the token is in the address: never pass it on
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; connect-src 'self'; "
    "style-src 'unsafe-inline'; script-src 'unsafe-inline'; form-action 'none'; "
    "frame-ancestors 'none'",
}


@router.get("/reset", response_class=HTMLResponse)
def reset_page() -> HTMLResponse:
    """The new-password form for a mailed reset link (``?token=`` is read by the page)."""
    return HTMLResponse(_PAGE, headers=_HEADERS)
