"""HEAD for every GET route (RFC 9110 9.3.2): the same status and headers, no body.

FastAPI routes answer only the methods they declare, so a HEAD (link checkers, DICOMweb
clients asking for a resource's size or type) was 405. The request runs as the GET it
stands for, through the same rights check, and the body is dropped on the way out.
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HeadAsGet:
    """ASGI middleware: HEAD runs as GET; its response body is not sent."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                if not message.get("more_body", False):
                    await send({"type": "http.response.body", "body": b""})
                return
            await send(message)

        get: dict[str, Any] = dict(scope)
        get["method"] = "GET"
        await self.app(get, receive, headers_only)
