"""UIDs this suite creates: always under the organisation root from the config."""

from __future__ import annotations

from pydicom.uid import generate_uid


def normalise_root(root: str) -> str:
    """``root`` as a UID prefix: with its trailing dot ("1.2.3" → "1.2.3."), as
    :func:`pydicom.uid.generate_uid` requires ("The 'prefix' is not valid for use with a UID").
    The server config applies it at load; every UID maker here applies it too."""
    return root if root.endswith(".") else root + "."


def make_uid(root: str) -> str:
    """A new UID under ``root`` (e.g. "1.2.826.0.1.3680043.10.1455."), at most 64 chars."""
    return str(generate_uid(prefix=normalise_root(root)))
