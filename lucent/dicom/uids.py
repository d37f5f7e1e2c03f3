"""UIDs this suite creates: always under the organisation root from the config."""

from __future__ import annotations

from pydicom.uid import generate_uid


def make_uid(root: str) -> str:
    """A new UID under ``root`` (e.g. "1.2.826.0.1.3680043.10.1455."), at most 64 chars."""
    prefix = root if root.endswith(".") else root + "."
    return str(generate_uid(prefix=prefix))
