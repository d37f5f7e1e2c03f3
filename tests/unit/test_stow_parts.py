"""STOW-RS multipart parsing (server.api.dicomweb_stow._parts): one part at a time.

The whole body used to be read and split, about three copies of it held at once (a 300 MB
upload took ~1 GB, outside probe 18); parts now come out while the body still arrives."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable

import pytest

from server.api.dicomweb_stow import _parts

DELIM = b"--XyZ"


def _body(payloads: Iterable[bytes], preamble: bytes = b"", epilogue: bytes = b"") -> bytes:
    out = preamble
    for p in payloads:
        out += DELIM + b"\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n"
    return out + DELIM + b"--\r\n" + epilogue


def _collect(chunks: list[bytes], consumed: list[int] | None = None) -> list[bytes]:
    async def stream() -> AsyncIterator[bytes]:
        for i, c in enumerate(chunks):
            if consumed is not None:
                consumed.append(i)
            yield c

    async def run() -> list[bytes]:
        out = []
        async for part in _parts(stream(), DELIM):
            out.append((part, len(consumed or [])))
        return out

    got = asyncio.run(run())
    if consumed is not None:
        consumed[:] = [n for _, n in got]
    return [p for p, _ in got]


def _split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 64, 1 << 20])
def test_parts_whatever_the_chunking(size: int) -> None:
    payloads = [b"DICM" * 50, b"\r\n--X\r\n" * 3, b"", bytes(range(256)) * 4]
    body = _body(payloads, preamble=b"ignored preamble --Xy", epilogue=b"epilogue --XyZ")
    assert _collect(_split(body, size)) == payloads


def test_a_part_comes_out_before_the_body_has_ended() -> None:
    payloads = [bytes([i]) * 10_000 for i in range(5)]
    chunks = _split(_body(payloads), 1000)
    seen: list[int] = []
    assert _collect(chunks, seen) == payloads
    # each part is yielded soon after its closing delimiter arrived, not at the end
    assert seen[0] < len(chunks) // 4 and seen == sorted(seen)


def test_a_body_cut_short_yields_what_it_holds_and_no_closing_is_needed() -> None:
    body = DELIM + b"\r\n\r\nfirst\r\n" + DELIM + b"\r\n\r\nsecond, cut"
    assert _collect(_split(body, 4)) == [b"first", b"second, cut"]


def test_no_delimiter_no_part_and_headerless_chunks_are_skipped() -> None:
    assert _collect([b"no boundary here at all"]) == []
    body = DELIM + b"no header block" + DELIM + b"\r\n\r\nok\r\n" + DELIM + b"--"
    assert _collect([body]) == [b"ok"]
