"""Request body limits, enforced before any route reads a byte.

Starlette reads a body whole into memory when a route asks for it; nothing bounded it, so
four unauthenticated 300 MB POSTs to /auth/login took the server from 0.3 to 2.4 GB (outside
probe). JSON routes get a small limit; STOW-RS (which reads its multipart body part by
part, storing each part before the next is read) a large one: parts stored before a
chunked body goes over it stay stored (a resend replaces them), the answer is 413. A
declared Content-Length over the limit is answered 413 at once; a chunked body is counted
as it arrives and cut off the same way.

A body that stops arriving is cut off too: at most ``BODY_READ_TIMEOUT`` seconds may pass
between two pieces of it, then the answer is 408 Request Timeout and the connection is
closed (RFC 9110 15.5.9). uvicorn (server.cli runs the API with its defaults) has no body
timeout at all: a STOW-RS that declared 100000 bytes, sent 7 and stalled held its
connection and its request for good (no answer after 600 s, probe 49), and enough of them
take every connection a server has.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

JSON_LIMIT = 1 << 20
"""Every API body is a small JSON document; 1 MiB leaves ample room."""
STOW_LIMIT = 2 << 30
"""One STOW-RS request: 2 GiB (clients split larger studies into several requests)."""


BODY_READ_TIMEOUT = 60.0
"""Seconds a request body may stall between two pieces (a module constant, read at each
request; [api] has no setting for it yet). Generous for any client on a working network:
STOW-RS time spent storing a part does not count, only waiting for the client's bytes."""


def limit_for(method: str, path: str) -> int:
    if method == "POST" and path.rstrip("/").startswith("/dicom-web/studies"):
        return STOW_LIMIT
    return JSON_LIMIT


class TooLarge(Exception):
    pass


class BodyStalled(Exception):
    """No piece of the body came in ``BODY_READ_TIMEOUT`` seconds. Not a TimeoutError:
    that is an OSError, which the app answers as a storage outage (503)."""


def _timed(receive: Receive) -> Receive:
    """``receive`` with a limit on the wait for each piece of the body; once the body is
    complete, receive waits as long as it likes (a streaming answer listens on it for the
    client's disconnect for as long as it streams)."""
    complete = False

    async def timed() -> Message:
        nonlocal complete
        if complete:
            return await receive()
        try:
            message = await asyncio.wait_for(receive(), BODY_READ_TIMEOUT)
        except TimeoutError:
            raise BodyStalled from None
        if message["type"] != "http.request" or not message.get("more_body", False):
            complete = True
        return message

    return timed


class BodyLimit:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = limit_for(scope["method"], scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _refuse(send, limit)
            return
        receive = _timed(receive)
        if limit == JSON_LIMIT:
            try:
                await self._buffered(scope, receive, send, limit)
            except BodyStalled:
                await _stalled(send)
            return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise TooLarge
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except TooLarge:
            if not started:
                await _refuse(send, limit)
        except BodyStalled:
            if not started:
                await _stalled(send)

    async def _buffered(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        """Small bodies are read here first (at most ``limit`` bytes held), then replayed:
        FastAPI turns any error while it reads a body into a 400, so cutting one off in the
        middle could not answer 413."""
        messages: list[Message] = []
        seen = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            seen += len(message.get("body", b""))
            if seen > limit:
                await _refuse(send, limit)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _refuse(send: Send, limit: int) -> None:
    await _close_with(send, 413, f"request body larger than {limit // (1 << 20)} MiB")


async def _stalled(send: Send) -> None:
    """408: parts of a STOW-RS stored before the body stalled stay stored, as when it is
    cut off for size (a resend replaces them)."""
    detail = f"request body incomplete: nothing arrived for {BODY_READ_TIMEOUT:g} s"
    await _close_with(send, 408, detail)


async def _close_with(send: Send, status: int, detail: str) -> None:
    """An error answer that closes the connection: the rest of the body is not read."""
    body: dict[str, Any] = {"detail": detail}
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})
