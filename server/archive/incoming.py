"""An instance's archive objects written while its PDUs are still arriving (Store SCP).

With one association the sender waits for each C-STORE response, so everything done between
the last PDU and the response is time lost to the whole transfer: sealing the 0.5 MB pixel
object, writing it, and above all flushing it to disk. The Pixel Data value of an
uncompressed image is nearly all its bytes, and it comes last. So, once its element header
has arrived, each following fragment is sealed and written into the pixel object at once,
its disk writeback started; when the last fragment is in, only the tail is left to flush
while the data set is parsed and validated.

Nothing here decides that an instance is stored. The metadata object, which recovery needs
to file an instance again, is only written by ``ServerContext.store`` once the whole data
set has arrived and passed validation, as on the normal path: a pixel object alone is never
indexed, and recovery removes it after a crash ("pixel data without metadata"). An earlier
version wrote the metadata as soon as the Pixel Data header arrived, and after a kill -9
recovery filed instances that were never completed, never answered, or would have been
refused (outside probe 33). ``store`` adopts the pixel object only when the full parse puts
Pixel Data exactly where the walk did and nothing follows it; otherwise, or when the
instance is refused, it is removed.
"""

from __future__ import annotations

import contextlib
import io
import logging
from concurrent.futures import Future

from lucent.dicom import walk
from server.archive import crypto
from server.archive.storage import RESERVED_KINDS, FileSystemStorage, ObjectStream, new_key

log = logging.getLogger("lucent.archive")
CHUNK = 128 << 10
"""Pixel bytes sealed and written at a time: senders with small PDUs (Orthanc's 16 KB) would
otherwise cost a write and a writeback call per fragment."""


class IncomingObjects:
    """Feeds one instance's fragments into its archive objects; see the module docstring."""

    def __init__(
        self,
        keys: crypto.KeyRing,
        storage: FileSystemStorage,
        *,
        dataset_start: int,
        transfer_syntax: str,
    ) -> None:
        self._keys = keys
        self._storage = storage
        self._pos = dataset_start
        self._transfer_syntax = transfer_syntax
        self._state = "seeking"  # seeking | streaming | complete | off
        self.base: str | None = None
        self.span = (0, 0)
        self._received = dataset_start  # the file meta is in ``data`` before any fragment
        self._done = 0  # pixel bytes before this offset are sealed and written
        self._pixels: ObjectStream | None = None
        self._sealer: crypto.Sealer | None = None
        self._pixels_durable: Future[None] | None = None
        self.claimed = False

    @property
    def complete(self) -> bool:
        return self._state == "complete"

    def feed(self, data: io.BytesIO, fragment: bytes | memoryview) -> None:
        """Take the fragment just appended to ``data`` (the instance so far, file meta
        first). Never raises: on any trouble the objects are dropped and the normal path
        stores the instance."""
        self._received += len(fragment)
        if self._state not in ("seeking", "streaming"):
            return
        try:
            if self._state == "seeking":
                with data.getbuffer() as view:
                    self._seek(view)
            elif self._received > self.span[1]:
                self.abandon()  # elements after Pixel Data: not the object layout assumed here
            elif self._received == self.span[1] or self._received - self._done >= CHUNK:
                with data.getbuffer() as view:
                    self._advance(view)
        except Exception as exc:  # disk full, a swept reserved file: store the slow way
            log.debug("writing an instance while it arrives stopped: %s", exc)
            self.abandon()

    def _seek(self, view: memoryview) -> None:
        found, at, length = walk.pixel_value_ahead(view, self._pos, self._transfer_syntax)
        if found == walk.Ahead.MORE:
            self._pos = at
            return
        if found == walk.Ahead.NO or length == 0:
            self._state = "off"
            return
        self.span = (at, at + length)
        self._state = "streaming"
        self.base = base = self._storage.reserve()
        self._pixels = self._storage.stream(new_key("p", base))
        self._sealer = crypto.Sealer(self._keys)
        self._pixels.write(self._sealer.head)
        self._done = at
        if len(view) > self.span[1]:
            self.abandon()  # elements after Pixel Data: not the object layout assumed here
        else:
            self._advance(view)

    def _advance(self, view: memoryview) -> None:
        """Seal and write the Pixel Data bytes received since the last call."""
        end = self.span[1]
        assert self._pixels is not None and self._sealer is not None
        upto = min(len(view), end)
        if upto > self._done:
            self._pixels.write(self._sealer.update(view[self._done : upto]))
            self._done = upto
        if upto == end:
            self._pixels.write(self._sealer.finish())
            self._pixels_durable = self._pixels.finish()
            self._pixels = None
            self._state = "complete"

    def fits(self, data_length: int, span: tuple[int, int] | None) -> bool:
        """Do the written objects hold this instance: whole, and Pixel Data where ``span``
        (the walk's or the parse's) says, with nothing after it?"""
        return self.complete and span == self.span and data_length == self.span[1]

    @property
    def written(self) -> int:
        """Bytes of the archive disk this instance's pixel object already takes."""
        return self.span[1] - self.span[0] if self.base is not None else 0

    def durable(self) -> None:
        """Wait until the pixel object is on disk (raises what a write raised)."""
        if self._pixels_durable is not None:
            self._pixels_durable.result()

    def abandon(self) -> None:
        """Drop the objects (refused instance, association gone, trailer): wait for the
        writes in flight, then delete; idempotent."""
        self._state = "off"
        if self._pixels is not None:
            self._pixels.close()
            self._pixels = None
        base, self.base = self.base, None
        if base is None:
            return
        with contextlib.suppress(Exception):
            self.durable()
        for kind in RESERVED_KINDS:
            with contextlib.suppress(OSError):
                self._storage.delete(new_key(kind, base))
