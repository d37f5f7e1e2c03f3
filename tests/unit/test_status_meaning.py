"""What a DIMSE status means, for a person (PS3.4 B.2.3, PS3.7 C): one table for the
statuses we send and those we read (outside probe 26: a peer's A700 without an Error
Comment was recorded with an empty reason)."""

from __future__ import annotations

import pytest

from lucent.net import status


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (0xA700, "Refused: Out of resources"),
        (0xA7FF, "Refused: Out of resources"),
        (0xA901, "Error: Data Set does not match SOP Class"),
        (0xC000, "Error: Cannot understand"),
        (0xCFFF, "Error: Cannot understand"),
        (0x0122, "Refused: SOP Class not supported"),
        (0x0124, "Refused: Not authorized"),
        (0x0110, "Failure: Processing failure"),
        (0xB000, "Warning: Coercion of data elements"),
        (0xB006, "Warning: Elements discarded"),
        (0xB007, "Warning: Data Set does not match SOP Class"),
        (0xBABC, "Warning"),
        (0xD123, "Failure: unknown status"),
    ],
)
def test_meaning(code: int, text: str) -> None:
    assert status.meaning(code) == text


def test_describe_adds_the_code_and_the_error_comment() -> None:
    assert status.describe(0xA700) == "Refused: Out of resources (0xA700)"
    assert status.describe(0xA700, " disk full ") == "Refused: Out of resources (0xA700): disk full"


def test_our_own_refusals_read_by_their_range() -> None:
    """Our SCP's specific codes fall in the ranges a peer's SCU reads (Conformance 4.2)."""
    assert status.meaning(status.OUT_OF_RESOURCES_QUOTA).startswith("Refused: Out of resources")
    assert status.meaning(status.UID_CONFLICT) == "Error: Cannot understand"
    assert status.meaning(status.DUPLICATE_REJECTED).startswith("Error: Data Set")
