"""Report pages wrap long lines at the page edge (outside probe 39: the summary page's QC
warning "CT Tmax of delayed tissue is uncertain ..." ran off the right edge, so it could not
be read in full on the PACS)."""

from __future__ import annotations

import numpy as np

from lucent.perfusion.render import render_report

LONG = (
    "  CT Tmax of delayed tissue is uncertain by +-1.1 s: the deconvolution is strongly "
    "regularised at this contrast-to-noise and the residue's peak moves later the noisier "
    "the curve is; compare with the source images"
)


def _text_rows(page: np.ndarray) -> np.ndarray:
    """Rows holding drawn text (any bright pixel)."""
    return (page.max(axis=2) > 100).any(axis=1)


def test_a_long_line_wraps_inside_the_page() -> None:
    page = render_report("Perfusion summary", ["QC:", LONG, "Research use: check the maps."])
    h, w, _ = page.shape
    bright = page.max(axis=2) > 100
    assert not bright[:, w - 12 :].any()  # nothing reaches the right edge
    one_line = render_report("Perfusion summary", ["QC:", "  short", "Research use: check."])
    # the long warning takes more than one text line: more rows carry text
    assert _text_rows(page).sum() > _text_rows(one_line).sum() + 10
    # continuation lines stand right of the first line's start (a hanging indent)
    first_col = np.argmax(bright[:, :100].any(axis=0))
    assert first_col <= 20


def test_short_lines_are_drawn_as_before() -> None:
    page = render_report("T", ["a line", "  indented"])
    bright = page.max(axis=2) > 100
    assert bright[56:100].any()
