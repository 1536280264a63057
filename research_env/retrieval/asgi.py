"""The service's hot path on the bare ASGI interface: POST routes that take the body's bytes and return JSON bytes,
answered before FastAPI's middleware stack (10-15% of the server's samples under load, in py-spy profiles).

:class:`FastRoutesApp` is still a FastAPI app (lifespan, ``/health``, 404s, Ray Serve's ingress): only the POST
routes registered in ``fast_routes`` skip its middleware, routing and ``Request`` objects.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI

#: What a route answers: status, JSON body, extra headers.
Reply = tuple[int, bytes, dict[str, str] | None]
#: A fast route: the request body in, its reply out.
FastRoute = Callable[[bytes], Awaitable[Reply]]
#: The reply to an exception a route raised other than :class:`BadRequest`; ``None`` for a bug (500, logged).
ErrorReply = Callable[[Exception], Reply | None]

_JSON = (b"content-type", b"application/json")


class BadRequest(Exception):
    """A request the service refuses: answered with ``status`` and ``{"detail": detail}``."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


def json_reply(status: int, content: Any, headers: dict[str, str] | None = None) -> Reply:
    """Compact JSON as Starlette's ``JSONResponse`` writes it (UTF-8, no NaN)."""
    body = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
    return status, body, headers


class _ClientGone(Exception):
    """The client disconnected before its body arrived: nobody to answer."""


class FastRoutesApp(FastAPI):
    """FastAPI with POST routes served straight from the ASGI scope.

    ``fast_routes`` maps a path to its route; bodies over ``max_body_bytes`` get 413; a :class:`BadRequest`
    becomes its status and detail, other exceptions go through ``error_reply``. Other methods on those paths
    get 405, as from FastAPI.
    """

    def __init__(self, *, max_body_bytes: int, error_reply: ErrorReply, **fastapi_options: Any) -> None:
        super().__init__(**fastapi_options)
        self.fast_routes: dict[str, FastRoute] = {}
        self.max_body_bytes, self.error_reply = max_body_bytes, error_reply

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        route = self.fast_routes.get(scope["path"]) if scope["type"] == "http" else None
        if route is None:
            await super().__call__(scope, receive, send)
        elif scope["method"] != "POST":
            await _send(send, 405, b'{"detail":"Method Not Allowed"}', {"Allow": "POST"})
        else:
            await self._answer(route, scope, receive, send)

    async def _answer(self, route: FastRoute, scope: dict, receive: Callable, send: Callable) -> None:
        try:
            status, body, headers = await route(await self._read_body(scope, receive))
        except _ClientGone:
            return
        except BadRequest as e:
            # after a 413 the rest of the body is unread: close rather than read it to keep the connection alive
            headers = {"Connection": "close"} if e.status == 413 else None
            status, body, headers = json_reply(e.status, {"detail": e.detail}, headers)
        except Exception as e:
            reply = self.error_reply(e)
            if reply is None:  # a bug: answer as Starlette would, and let uvicorn log the traceback
                await _send(send, 500, b"Internal Server Error", None, (b"content-type", b"text/plain; charset=utf-8"))
                raise
            status, body, headers = reply
        await _send(send, status, body, headers)

    async def _read_body(self, scope: dict, receive: Callable) -> bytes:
        """The body, refused with 413 once it is seen to exceed ``max_bytes`` (never read whole first)."""
        limit = self.max_body_bytes
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit():
                    raise BadRequest(400, f"Content-Length {value[:40].decode('latin-1')!r} is not a byte count")
                if int(value) > limit:
                    raise BadRequest(413, _too_large(int(value), limit))
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BadRequest(413, _too_large(size, limit, at_least=True))
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(size: int, max_bytes: int, at_least: bool = False) -> str:
    return (
        f"request body of {'at least ' if at_least else ''}{size:,} bytes exceeds the service's limit of "
        f"{max_bytes:,} bytes (--max-body-bytes); split the queries over several requests"
    )


async def _send(
    send: Callable, status: int, body: bytes, headers: dict[str, str] | None, content_type: tuple = _JSON
) -> None:
    raw = [content_type, (b"content-length", b"%d" % len(body))]
    if headers:
        raw += [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
