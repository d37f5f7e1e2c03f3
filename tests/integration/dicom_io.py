"""Helpers for ingest tests: send with DCMTK storescu, read the stored copy back."""

from __future__ import annotations

import io
import subprocess
from collections.abc import Sequence
from pathlib import Path

from pydicom import dcmread

from tests.data import transfer_syntaxes as ts_samples
from tests.support.peers import dcmtk_tool, dicom_env


def storescu(
    host: str, port: int, aet: str, files: Sequence[Path], *extra: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """storescu with Nagle off; ``-v`` prints one status per file we can check."""
    return subprocess.run(
        [dcmtk_tool("storescu"), "-v", "-aec", aet, "-to", "60", *extra, host, str(port),
         *[str(f) for f in files]],
        capture_output=True, text=True, env=dicom_env(True), timeout=timeout,
    )  # fmt: skip


def storescu_as_stored(
    host: str, port: int, aet: str, files: Sequence[Path], workdir: Path
) -> None:
    """Send each file in its own transfer syntax: a storescu profile of the files' (SOP
    class, transfer syntax) pairs, one association per 100 files (a profile holds at most
    128 contexts). Asserts storescu succeeded."""
    for start in range(0, len(files), 100):
        batch = files[start : start + 100]
        pairs = []
        for f in batch:
            meta = dcmread(f, stop_before_pixels=True).file_meta
            pairs.append((str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID)))
        profile = ts_samples.write_storescu_config(workdir / "profile.cfg", pairs)
        done = storescu(host, port, aet, batch, *profile)
        assert done.returncode == 0, done.stderr[-2000:]


def dataset_bytes(part10: bytes) -> bytes:
    """The data set as it travelled on the wire: everything after the file meta group."""
    ds = dcmread(io.BytesIO(part10), stop_before_pixels=True, specific_tags=[0x00020010])
    return part10[132 + 12 + int(ds.file_meta.FileMetaInformationGroupLength) :]
