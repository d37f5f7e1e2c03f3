"""Case-insensitive text matching that folds every script, the same on SQLite and PostgreSQL.

SQLite's ``upper()`` folds ASCII letters only, and PostgreSQL's follows the database locale
(``C`` folds ASCII only): "Schädel nativ" typed exactly did not find "Schädel nativ"
(outside probe), because the pattern was folded in Python ("SCHÄDEL") and the column in SQL
("SCHäDEL"). ``folded(column)`` folds like ``str.upper``: a Python function on SQLite, the
ICU root collation on PostgreSQL.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from sqlalchemy import String
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

SQLITE_FUNCTION = "lucent_fold"


DOTTED_I = "\u0130\u0131"
"""Turkish İ (dotted capital) and ı (dotless small): ``upper`` keeps İ and maps i to I, so
"çiçek" did not find "ÇİÇEK" (outside probe). Both become i before folding, everywhere."""
_UNDOTTED = str.maketrans(DOTTED_I, "ii")


def fold_text(value: Any) -> Any:
    """What ``folded`` computes, for SQLite (registered on every connection) and Python."""
    return value.translate(_UNDOTTED).upper() if isinstance(value, str) else value


class folded(FunctionElement[str]):  # noqa: N801 - reads like the SQL function it is
    type = String()
    inherit_cache = True
    name = "folded"


@compiles(folded)
def _folded_default(element: folded, compiler: Any, **kw: Any) -> str:
    return f"upper({_undotted(compiler.process(element.clauses, **kw))})"


@compiles(folded, "sqlite")
def _folded_sqlite(element: folded, compiler: Any, **kw: Any) -> str:
    return f"{SQLITE_FUNCTION}({compiler.process(element.clauses, **kw)})"


@compiles(folded, "postgresql")
def _folded_postgresql(element: folded, compiler: Any, **kw: Any) -> str:
    inner = _undotted(compiler.process(element.clauses, **kw))
    if not getattr(compiler.dialect, "lucent_icu", True):  # see server.index.db
        return f"upper({inner})"
    return f'upper(({inner}) COLLATE "und-x-icu")'


def _undotted(sql: str) -> str:
    """SQL mapping İ and ı to i, as ``fold_text`` does (``translate`` is standard SQL)."""
    return f"translate({sql}, '{DOTTED_I}', 'ii')"


NAME_KEY_LENGTH = 256
"""Room for a 64-character name whose fold grew: casefold turns "ß" into "ss", "ﬃ" into
"ffi"; with NFC no character becomes more than three (NFKC could make 18, "ﷺ")."""


def name_key(name: str) -> str:
    """The key names are unique by regardless of case (remote nodes, migration 0011).

    Computed here, not by SQL ``lower()``: SQLite folds ASCII only (and PostgreSQL by its
    locale), so "MÜNCHEN" and "münchen" were two nodes on SQLite, one on PostgreSQL
    with a UTF-8 locale. Unicode caseless matching
    (NFC, casefold; İ and ı as i, as ``fold_text``): "Straße" and "STRASSE", a composed
    and a decomposed "ü", are one name to the administrator reading the list.
    """
    folded = unicodedata.normalize("NFC", name.strip().translate(_UNDOTTED)).casefold()
    return unicodedata.normalize("NFC", folded)
