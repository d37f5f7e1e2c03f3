"""An instance's archive objects written while its PDUs are still arriving (Store SCP).

With one association the sender waits for each C-STORE response, so everything done between
the last PDU and the response is time lost to the whole transfer: sealing the 0.5 MB pixel
object, writing it, and above all flushing it to disk. The Pixel Data value of an
uncompressed image is nearly all its bytes, and it comes last. So, once its element header
has arrived, the metadata object (everything before it) is sealed and flushed on a writer
thread, and each following fragment is sealed and written into the pixel object at once, its
disk writeback started; when the last fragment is in, only the tail is left to flush while
the data set is parsed and validated.

Nothing here decides that an instance is stored. ``ServerContext.store`` adopts the objects
only when the full parse puts Pixel Data exactly where the walk did and nothing follows it;
otherwise, or when the instance is refused, they are removed. Like every reserved object, one
that a crash leaves unindexed is removed by recovery.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial

from lucent.dicom import walk
from server.archive import crypto, recovery
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
        pool: str,
        source: str,
        dataset_start: int,
        transfer_syntax: str,
    ) -> None:
        self._keys = keys
        self._storage = storage
        self._pool = pool
        self._source = source
        self._pos = dataset_start
        self._transfer_syntax = transfer_syntax
        self._state = "seeking"  # seeking | streaming | complete | off
        self.base: str | None = None
        self.span = (0, 0)
        self._received = dataset_start  # the file meta is in ``data`` before any fragment
        self._done = 0  # pixel bytes before this offset are sealed and written
        self._pixels: ObjectStream | None = None
        self._sealer: crypto.Sealer | None = None
        self._meta_durable: Callable[[], None] | None = None
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
        label = recovery.Label(self._pool, self._source, at, True).encode()
        seal = partial(crypto.seal, self._keys, bytes(view[:at]), label)
        self._meta_durable = self._storage.start_put_all(
            [(new_key("m", base), seal)], reserved=True
        )
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

    def durable(self) -> None:
        """Wait until both objects are on disk (raises what a write raised)."""
        if self._meta_durable is not None:
            self._meta_durable()
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
