"""Spellings the case-insensitive search sends to a case-sensitive PACS (probe 37)."""

from __future__ import annotations

import pytest

from lucent.net.scu import name_variants


@pytest.mark.parametrize(
    ("pattern", "title"),
    [
        ("schm?dt*", "Schm?dt*"),
        ("s*midt*", "S*midt*"),
        ("SCHM?DT^ANNA", "Schm?dt^Anna"),
        ("*schmidt", "*Schmidt"),
        ("müller-lüdenscheidt^hans peter", "Müller-Lüdenscheidt^Hans Peter"),
        ("o'brien^anna=yamada", "O'Brien^Anna=Yamada"),
    ],
)
def test_title_case_only_after_name_separators(pattern: str, title: str) -> None:
    assert title in name_variants(pattern)


def test_plain_search_answered_in_another_case_hides_nothing() -> None:
    """A PACS that answered 'schmidt*' with 'Schmidt^Anna' ignores case: no note."""
    from lucent.net.scu import FindResult, _judge_plain

    result = FindResult(rows=[{"PatientName": "Schmidt^Anna"}])
    _judge_plain("schmidt*", None, result)
    assert result.case_sensitive is False and not result.hidden_matches_possible
    result = FindResult(rows=[{"PatientName": "schmidt^anna"}])
    _judge_plain("schmidt*", None, result)
    assert result.case_sensitive is None and result.hidden_matches_possible
