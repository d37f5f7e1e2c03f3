"""QIDO-RS keys of a level below the one searched (PS3.18 8.3.4.1, relational matching).

``/studies?SeriesInstanceUID=X``, ``/studies?SOPInstanceUID=Y`` and
``/series?SOPInstanceUID=Y`` answered every study (series): the index matches series and
instance keys only at their own level, and the key was then dropped without a Warning. A
study (series) now matches when it holds a series (instance) that matches those keys, as
``/studies?Modality=CT`` already did. The keys are resolved here to the UIDs of the
matching parents, which the index then matches as a UID list.

The right home for this is the index query (a subquery, as for Modality): until it is
there, the parents are listed here, at most ``MAX_PARENTS`` of them.
"""

from __future__ import annotations

import dataclasses

from fastapi import HTTPException
from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from server.index import queries
from server.index.models import Instance, Series, Study

#: Filter fields matched at series and at instance level.
SERIES_FIELDS = ("series_uid", "series_number", "series_description")
INSTANCE_FIELDS = ("sop_instance_uid", "sop_class_uid", "instance_number")

#: Most parents a lower-level key may select (a UID list of that size goes into SQL).
MAX_PARENTS = 10000


def _set(f: queries.Filter, fields: tuple[str, ...]) -> bool:
    return any(getattr(f, name) for name in fields)


def narrow(db: Session, level: str, f: queries.Filter) -> queries.Filter | None:
    """``f`` with its series/instance keys below ``level`` turned into the parents' UID
    list; None when no parent matches (the answer is empty)."""
    series_keys = level == "STUDY" and _set(f, SERIES_FIELDS)
    instance_keys = level in ("STUDY", "SERIES") and _set(f, INSTANCE_FIELDS)
    if not (series_keys or instance_keys):
        return f
    parent = Study.study_uid if level == "STUDY" else Series.series_uid
    where: list[ColumnElement[bool]] = []
    stmt = select(parent).select_from(Series).join(Study, Series.study_pk == Study.id)
    if series_keys:
        where += queries._series_clauses(f)  # noqa: SLF001 - same matching as the index
    if instance_keys:
        stmt = stmt.join(Instance, Instance.series_pk == Series.id)
        where += queries._instance_clauses(f)  # noqa: SLF001
    if f.pools is not None:
        where.append(Study.pool.in_(f.pools))
    current = f.study_uid if level == "STUDY" else f.series_uid
    if current:  # already a UID list: intersect in SQL
        where.append(parent.in_([u for u in current.split("\\") if u]))
    stmt = stmt.where(*where).distinct().limit(MAX_PARENTS + 1)
    uids = list(db.scalars(stmt))
    if not uids:
        return None
    if len(uids) > MAX_PARENTS:
        raise HTTPException(
            400,
            f"the series/instance keys match more than {MAX_PARENTS} parents: "
            "add a key of the level searched",
        )
    joined = "\\".join(uids)
    if level == "STUDY":
        return dataclasses.replace(f, study_uid=joined)
    return dataclasses.replace(f, series_uid=joined)
