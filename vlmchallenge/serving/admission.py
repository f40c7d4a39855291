"""Admission control for the API process: a bounded number of requests in the server, and a deadline each.

LitServe 0.2.19's request queue is unbounded (a `multiprocessing.Manager().Queue()` per API path) and its
`timeout` only drops a request that *waited in the queue* too long, checked when a worker takes it; nothing
says "busy", so under overload latency grows without limit. This ASGI middleware, registered through
`LitServer(middlewares=...)`, answers `503` with `Retry-After` once `max_queue` requests are being served
(queued or running), and `504` when a request is not answered within `timeout_s` (docs/serving.md §1).
`GET` requests (`/health`, `/info`, the schema) are never refused, so a busy server still looks alive, and
their answers carry `X-Requests-In-Server: <n>`, the count admission compares with `max_queue`.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)


class AdmissionControl:
    def __init__(self, app: ASGIApp, max_queue: int, timeout_s: float | None, retry_after_s: int):
        if max_queue < 1:
            raise ValueError(f"max_queue: expected at least 1, got {max_queue}")
        self.app, self.max_queue, self.timeout_s, self.retry_after_s = (
            app,
            max_queue,
            timeout_s,
            retry_after_s,
        )
        self.in_server = 0  # one API process (`num_api_servers=1`), one event loop: a plain counter is exact

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] in ("GET", "HEAD", "OPTIONS"):

            async def counting_send(message: Message) -> None:
                if message["type"] == "http.response.start":
                    count = (b"x-requests-in-server", str(self.in_server).encode())
                    message = {**message, "headers": [*message.get("headers", []), count]}
                await send(message)

            await self.app(scope, receive, counting_send)
            return
        if self.in_server >= self.max_queue:
            log.warning("busy: %d requests in the server (max_queue); answered 503", self.in_server)
            busy = JSONResponse(
                {"detail": f"server busy: {self.in_server} requests in progress (max_queue); retry later"},
                status_code=503,
                headers={"Retry-After": str(self.retry_after_s)},
            )
            await busy(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        self.in_server += 1
        try:
            async with asyncio.timeout(self.timeout_s):
                await self.app(scope, receive, tracking_send)
        except TimeoutError:
            log.warning(
                "a %s %s took over %s s (timeout); answered 504",
                scope["method"],
                scope["path"],
                self.timeout_s,
            )
            if not started:  # once a response has begun, only closing the connection is left
                late = JSONResponse(
                    {"detail": f"no answer within {self.timeout_s:g} s (timeout)"}, status_code=504
                )
                await late(scope, receive, send)
        finally:
            self.in_server -= 1
