"""Request body limits, enforced before any route reads a byte.

Starlette reads a body whole into memory when a route asks for it; nothing bounded it, so
four unauthenticated 300 MB POSTs to /auth/login took the server from 0.3 to 2.4 GB (outside
probe). JSON routes get a small limit; STOW-RS (which reads its multipart body part by
part, storing each part before the next is read) a large one: parts stored before a
chunked body goes over it stay stored (a resend replaces them), the answer is 413. A
declared Content-Length over the limit is answered 413 at once; a chunked body is counted
as it arrives and cut off the same way.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

JSON_LIMIT = 1 << 20
"""Every API body is a small JSON document; 1 MiB leaves ample room."""
STOW_LIMIT = 2 << 30
"""One STOW-RS request: 2 GiB (clients split larger studies into several requests)."""


def limit_for(method: str, path: str) -> int:
    if method == "POST" and path.rstrip("/").startswith("/dicom-web/studies"):
        return STOW_LIMIT
    return JSON_LIMIT


class TooLarge(Exception):
    pass


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
        if limit == JSON_LIMIT:
            await self._buffered(scope, receive, send, limit)
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
    body: dict[str, Any] = {"detail": f"request body larger than {limit // (1 << 20)} MiB"}
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})
