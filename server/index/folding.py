"""Text comparison that behaves the same on SQLite and PostgreSQL whatever the locale.

``folded``: case-insensitive matching that folds every script.

SQLite's ``upper()`` folds ASCII letters only, and PostgreSQL's follows the database locale
(``C`` folds ASCII only): "Schädel nativ" typed exactly did not find "Schädel nativ"
(outside probe), because the pattern was folded in Python ("SCHÄDEL") and the column in SQL
("SCHäDEL"). ``folded(column)`` folds like ``str.upper``: a Python function on SQLite, the
ICU root collation on PostgreSQL.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import String
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

SQLITE_FUNCTION = "lucent_fold"


def fold_text(value: Any) -> Any:
    """What ``folded`` computes, for SQLite (registered on every connection) and Python."""
    return value.upper() if isinstance(value, str) else value


class folded(FunctionElement[str]):  # noqa: N801 - reads like the SQL function it is
    type = String()
    inherit_cache = True
    name = "folded"


@compiles(folded)
def _folded_default(element: folded, compiler: Any, **kw: Any) -> str:
    return f"upper({compiler.process(element.clauses, **kw)})"


@compiles(folded, "sqlite")
def _folded_sqlite(element: folded, compiler: Any, **kw: Any) -> str:
    return f"{SQLITE_FUNCTION}({compiler.process(element.clauses, **kw)})"


@compiles(folded, "postgresql")
def _folded_postgresql(element: folded, compiler: Any, **kw: Any) -> str:
    return f'upper(({compiler.process(element.clauses, **kw)}) COLLATE "und-x-icu")'


class bytewise(FunctionElement[str]):  # noqa: N801
    """The column compared code point by code point, not by the database's collation.

    Date/time range bounds end in U+FFFF ("0830" spans 083000-0830 and beyond): under a
    PostgreSQL en_US collation that character sorts as nothing, so StudyTime=0830 found no
    study at 08:30:15 and 0800-0900 missed 09:00:00 (outside probe). SQLite compares
    bytewise anyway."""

    type = String()
    inherit_cache = True
    name = "bytewise"


@compiles(bytewise)
def _bytewise_default(element: bytewise, compiler: Any, **kw: Any) -> str:
    return compiler.process(element.clauses, **kw)  # type: ignore[no-any-return]


@compiles(bytewise, "postgresql")
def _bytewise_postgresql(element: bytewise, compiler: Any, **kw: Any) -> str:
    return f'({compiler.process(element.clauses, **kw)}) COLLATE "C"'
