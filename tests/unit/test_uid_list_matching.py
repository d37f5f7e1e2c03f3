"""List of UID matching (PS3.4 C.2.2.2.2) as the C-FIND SCP and the API build it."""

from __future__ import annotations

from server.index.models import Study
from server.index.queries import match_uid_list


def test_blank_and_separator_only_lists_match_everything() -> None:
    # "\" reached an IndexError (a 500 in the API, an aborted C-FIND on the Q/R SCP).
    for value in ("", "\\", " \\ ", "\\\\"):
        assert match_uid_list(Study.study_uid, value) is None


def test_one_uid_is_equality_and_several_are_a_list() -> None:
    one = match_uid_list(Study.study_uid, " 1.2.3 ")
    assert one is not None and str(one.compile(compile_kwargs={"literal_binds": True})).endswith(
        "= '1.2.3'"
    )
    many = match_uid_list(Study.study_uid, "1.2.3\\\\4.5")
    assert many is not None
    assert "IN ('1.2.3', '4.5')" in str(many.compile(compile_kwargs={"literal_binds": True}))
