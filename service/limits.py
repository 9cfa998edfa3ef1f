"""Request-body limits per route, applied while the body streams in: a body over its route's
limit is answered 413 before the rest is read (by its Content-Length when it says, else as soon
as the bytes received pass the limit), so no route parses more than it may.
"""

import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from service.settings import Settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def route_limits(settings: Settings) -> list[tuple[re.Pattern[str], int]]:
    """(path pattern, bytes) for POST/PUT bodies, most specific first."""
    return [
        (re.compile(r"^/v1/datasets$"), settings.max_upload_bytes),
        (re.compile(r"^/v1/models/[^/]+(/predict|:predict)$"), settings.max_predict_bytes),
        (re.compile(r"^/v2/models/.+/infer$"), settings.max_predict_bytes),
        (re.compile(r".*"), settings.max_body_bytes),  # specs and every other body
    ]


class BodyLimit:
    """ASGI middleware enforcing `route_limits` on every request with a body."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.limits = route_limits(settings)

    def limit_for(self, path: str) -> int:
        return next(limit for pattern, limit in self.limits if pattern.match(path))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "DELETE", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _too_large(send, limit)
            return
        received = 0
        refused = False

        async def counted() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit and not refused:
                    refused = True  # answer now; the route sees the client gone
                    await _too_large(send, limit)
                    return {"type": "http.disconnect"}
            return message

        async def unless_refused(message: Message) -> None:
            if not refused:
                await send(message)

        await self.app(scope, counted, unless_refused)


async def _too_large(send: Send, limit: int) -> None:
    message = f"The request body is larger than this route takes ({limit} bytes)."
    body = json.dumps(
        {"error": {"code": "payload_too_large", "message": message, "details": []}}
    ).encode()
    headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})
