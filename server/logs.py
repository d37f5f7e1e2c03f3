"""Logging of the server's processes: one format per process kind, and the noise filtered.

The main process (API, jobs) and every DICOM worker set up their logging here, so what one
filters the others filter too.
"""

from __future__ import annotations

import logging


class DecoderTracebacks(logging.Filter):
    """pydicom logs each decoding plugin's failure with its traceback at ERROR before it
    raises the error that names them all, which we answer with (WADO-RS 406, a failed
    sub-operation): a 12-bit JPEG that no plugin reads left three tracebacks in the log per
    request (probe 40). The messages stay, as warnings, without the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info:
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


_DECODERS = "pydicom.pixels.decoders.base"


def configure(level: str, process: str) -> None:
    """Root logging at ``level`` with ``process`` ("main", "worker 2") in every line."""
    logging.basicConfig(
        level=level.upper(),
        format=f"%(asctime)s %(levelname)s [{process}] %(name)s: %(message)s",
    )
    quiet_decoder_tracebacks()


def quiet_decoder_tracebacks() -> None:
    """Install :class:`DecoderTracebacks` once (idempotent: modules and tests call it)."""
    decoders = logging.getLogger(_DECODERS)
    if not any(isinstance(f, DecoderTracebacks) for f in decoders.filters):
        decoders.addFilter(DecoderTracebacks())
