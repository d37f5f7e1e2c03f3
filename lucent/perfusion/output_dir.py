"""The output folder of a stand-alone analysis (``lucent-perfusion analyse --out``).

A scripted user re-runs the same command into the same folder and reads what is there:
files an earlier run left behind would be taken for this run's results (a second study's
maps next to the first's, or a whole earlier result beside a refusal). So the folder is
checked before any work and what an earlier run of ours wrote is removed; files we do not
name are left alone.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

RESULT_JSON = "result.json"
DICOM_DIR = "dicom"
OUR_DICOM = re.compile(r"^R\d{5}\.dcm$")
"""File names ``dicom_out.write_dicom`` gives its objects (our own counters)."""


class OutputDirError(ValueError):
    """The output folder cannot be used; the message says why, naming the path."""


def prepare(out: Path, dicom_files: bool = True) -> list[Path]:
    """Make ``out`` usable and remove an earlier run's outputs; returns what was removed.

    Raises ``OutputDirError`` (nothing removed) when ``out`` is a file, ``out/dicom`` is one
    and DICOM files are to be written (``dicom_files``), or ``out`` cannot be created or
    written. Our files in ``out/dicom`` go also when none are to be written: they would be
    taken for this run's.
    """
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"--out {out} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputDirError(
            f"--out {out}: cannot create the folder ({exc.strerror or exc})"
        ) from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise OutputDirError(f"--out {out}: the folder is not writable")
    dicom, result = out / DICOM_DIR, out / RESULT_JSON
    if dicom_files and dicom.exists() and not dicom.is_dir():
        raise OutputDirError(f"--out {out}: {dicom} is a file, not a folder")
    if result.exists() and not result.is_file():
        raise OutputDirError(f"--out {out}: {result} is not a file")
    removed: list[Path] = []
    try:
        if result.exists():
            result.unlink()
            removed.append(result)
        if dicom.is_dir():
            for path in sorted(dicom.iterdir()):
                if OUR_DICOM.match(path.name) and path.is_file():
                    path.unlink()
                    removed.append(path)
    except OSError as exc:
        raise OutputDirError(
            f"--out {out}: cannot remove an earlier result ({exc.strerror or exc})"
        ) from None
    return removed
