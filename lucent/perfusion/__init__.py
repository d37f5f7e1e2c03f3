"""Stroke perfusion engine: 4D CT/MR perfusion in; maps, core/penumbra, mismatch, QC out.

Pure numpy/scipy (+SimpleITK for rigid registration, highdicom/pydicom/pillow for output).
Issue 6; seed FAQ "VEOcore Perfusion Analysis"; seed Conformance Table 3 and 8.1.3.
"""

from .config import PerfusionConfig
from .model import PerfusionSeries, Refusal, RefusalCode
from .pipeline import PerfusionResult, analyse

__all__ = [
    "PerfusionConfig",
    "PerfusionResult",
    "PerfusionSeries",
    "Refusal",
    "RefusalCode",
    "analyse",
]
