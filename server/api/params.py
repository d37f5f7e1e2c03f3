"""Bounds and shapes of the values the API takes in paths and queries.

Found by the OpenAPI fuzzer (tests/integration/test_api_fuzz.py):

* Row ids, offsets and counts go into SQL as 64-bit integers (SQLite INTEGER, PostgreSQL
  BIGINT). A larger number in a path or query made SQLite raise ``OverflowError`` when the
  value was bound: a 500 instead of "no such node". Declaring the range lets FastAPI answer
  422 and shows the range in /openapi.json.
* A UID in a path names one object. A backslash in it made the index match a UID *list*
  (PS3.4 C.2.2.2.2, meant for query keys), and a value that is blank after stripping made
  the index's list matching fail with IndexError (a 500).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import HTTPException, Path, Query

INT64_MAX = 2**63 - 1
#: Paging offsets: far beyond any archive, and offset + limit still fits in 64 bits.
MAX_OFFSET = 2**31 - 1

RowId = Annotated[int, Path(ge=0, le=INT64_MAX, description="row id (64-bit)")]
OptionalRowId = Annotated[int | None, Query(ge=0, le=INT64_MAX)]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET)]


def row_id_or_404(value: int, what: str) -> int:
    """An id from a request body (schemas without bounds): out of range names nothing."""
    if not 0 <= value <= INT64_MAX:
        raise HTTPException(404, f"no {what} {value}")
    return value


def single_uid(value: str, what: str) -> str:
    """A UID from a path: exactly one, not a list and not blank (else it names nothing)."""
    if "\\" in value or not value.strip():
        raise HTTPException(404, f"no such {what}")
    return value


def uid_list(value: str) -> str:
    """A UID-list query value with its empty entries dropped ('' = universal matching)."""
    return "\\".join(u.strip() for u in value.split("\\") if u.strip())
