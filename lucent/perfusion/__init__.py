"""Stroke perfusion engine: 4D CT/MR perfusion in; maps, core/penumbra, mismatch, QC out.

Pure numpy/scipy (+SimpleITK for rigid registration, highdicom/pydicom/pillow for output).
Issue 6; seed FAQ "VEOcore Perfusion Analysis"; seed Conformance Table 3 and 8.1.3.

The names below load on first use (PEP 562): the server's configuration reads
``PerfusionConfig`` at every start of every process (the server, each DICOM worker, each
command-line call), and importing the pipeline with it (scipy, SimpleITK, highdicom) cost
~0.7 s of each.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import PerfusionConfig
    from .model import PerfusionSeries, Refusal, RefusalCode
    from .pipeline import PerfusionResult, analyse

_WHERE = {
    "PerfusionConfig": "config",
    "PerfusionResult": "pipeline",
    "PerfusionSeries": "model",
    "Refusal": "model",
    "RefusalCode": "model",
    "analyse": "pipeline",
}

__all__ = [
    "PerfusionConfig",
    "PerfusionResult",
    "PerfusionSeries",
    "Refusal",
    "RefusalCode",
    "analyse",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
