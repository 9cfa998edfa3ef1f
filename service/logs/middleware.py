"""Request ids: each request gets one (the caller's `X-Request-ID` when it is short and safe,
else a fresh one), every log line written while it is served carries it, and every answer
echoes it, errors included."""

import json
import re
import uuid

from fastapi import Request

from service.limits import ASGIApp, Message, Receive, Scope, Send
from service.logs.context import bind, close_scope, open_scope

HEADER = "X-Request-ID"
SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
# path parameters that name a job or a model (a batch prediction is the job of the same id)
PATH_IDS = {"job_id": "job_id", "batch_id": "job_id", "model_id": "model_id"}
SAFE_PATH_ID = re.compile(r"^[A-Za-z0-9._:@-]{1,200}$")  # an id, or a model's NAME@ALIAS


def request_id(given: bytes | None) -> str:
    """The caller's id when it is 1 to 64 letters, digits or `._:-`; else a new one (an id is
    written into every log line, so nothing else may pass)."""
    text = given.decode("latin-1") if given else ""
    return text if SAFE_ID.match(text) else uuid.uuid4().hex


class RequestIds:
    """ASGI middleware: opens the request's log scope and sets `X-Request-ID` on the answer.

    An exception no handler answered gets the error body here (with the header), and goes on
    to the server, which logs it with its traceback inside the same scope.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(dict(scope["headers"]).get(HEADER.lower().encode()))
        header = (HEADER.lower().encode(), rid.encode())
        started = False

        async def with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                named = [(k, v) for k, v in message.get("headers", []) if k != header[0]]
                message["headers"] = [*named, header]
            await send(message)

        # not reset when the app raises: the server logs the exception in this scope
        token = open_scope(request_id=rid)
        try:
            await self.app(scope, receive, with_id)
        except Exception:
            if not started:
                await _internal_error(with_id, rid)
            raise
        close_scope(token)


async def _internal_error(send: Send, rid: str) -> None:
    message = f"An unexpected error; the server's log has it under request id {rid}."
    body = json.dumps({"error": {"code": "internal_error", "message": message, "details": []}})
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 500, "headers": headers})
    await send({"type": "http.response.body", "body": body.encode()})


async def bind_path_ids(request: Request) -> None:
    """A dependency of every route: the job and model ids of the path join the log scope."""
    params = request.path_params
    found = {PATH_IDS[name]: str(value) for name, value in params.items() if name in PATH_IDS}
    bind(**{field: value for field, value in found.items() if SAFE_PATH_ID.match(value)})
