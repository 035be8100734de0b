"""The process that makes fallback webhook requests (started by realtime.webhook_sender).

It reads each request as two lines on stdin: `{"id", "url", "webhook_id", "secret"}`, then
the body (compact JSON, which holds no newline of its own). It signs the body per Standard
Webhooks with the `standardwebhooks` package, POSTs it (no redirects, only public addresses
unless the host is allowed, the answer's body never read) and writes `{"id", "status",
"error", "seconds"}` on stdout. Requests run concurrently, up to the configured limit;
replies come in the order requests finish. When stdin closes (the server stopped, or died)
what is in flight is abandoned and the process exits.

    python -m claims_realtime.realtime.webhook_process '{"timeout": 5, "concurrency": 32,
        "allowed_hosts": ["127.0.0.1"]}'
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import json
import socket
import sys
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from standardwebhooks.webhooks import Webhook

from claims_realtime.models.errors import InvalidInput
from claims_realtime.models.webhook_urls import check_url, refused_address

#: Longest request line read: a body holds an event's data (JSON-escaped once more here).
MAX_LINE_BYTES = 16 * 1024 * 1024


class PublicOnlyResolver(AbstractResolver):
    """Resolves as usual, then keeps only public addresses, unless the host is allowed: a
    name checked when the fallback was set may point inside the network by now."""

    def __init__(self, allowed_hosts: tuple[str, ...]) -> None:
        self._inner = DefaultResolver()
        self._allowed = allowed_hosts

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        if host.lower() in self._allowed:
            return found
        public = [r for r in found if not refused_address(ipaddress.ip_address(r["host"]))]
        if not public:
            # With an errno, aiohttp's connection error carries the text (its strerror).
            raise OSError(errno.EACCES, f"{host} resolves only to addresses that are not public")
        return public

    async def close(self) -> None:
        await self._inner.close()


class Poster:
    """Signs and POSTs webhook requests over one connection pool."""

    def __init__(self, *, timeout: float, concurrency: int, allowed_hosts: tuple[str, ...]):
        self.timeout = timeout
        self.allowed_hosts = allowed_hosts
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                resolver=PublicOnlyResolver(allowed_hosts), limit=concurrency
            ),
            timeout=aiohttp.ClientTimeout(total=timeout),
            headers={"User-Agent": "claims-realtime"},
        )

    async def post(self, request: dict[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        status, error = await self._post(request)
        return {
            "id": request["id"],
            "status": status,
            "error": error,
            "seconds": time.perf_counter() - started,
        }

    async def _post(self, request: dict[str, Any]) -> tuple[int | None, str | None]:
        url, message_id = request["url"], request["webhook_id"]
        try:
            check_url(url, self.allowed_hosts)  # a literal address skips DNS
        except InvalidInput as exc:
            return None, exc.detail[:200]
        body = request["body"]
        now = datetime.now(UTC)  # the wall clock: receivers check the timestamp against theirs
        headers = {
            "Content-Type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": Webhook(request["secret"]).sign(message_id, now, body),
        }
        try:
            async with self.session.post(
                url, data=body, headers=headers, allow_redirects=False
            ) as response:
                return response.status, None  # the status is all that counts
        except TimeoutError:
            return None, f"no answer within {self.timeout:g} s"
        except (aiohttp.ClientError, OSError) as exc:
            return None, (str(exc) or type(exc).__name__)[:200]


async def serve(options: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    requests = asyncio.StreamReader(limit=MAX_LINE_BYTES)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(requests), sys.stdin)
    replies, _ = await loop.connect_write_pipe(asyncio.Protocol, sys.stdout)
    poster = Poster(
        timeout=float(options["timeout"]),
        concurrency=int(options["concurrency"]),
        allowed_hosts=tuple(options["allowed_hosts"]),
    )

    async def answer(request: dict[str, Any]) -> None:
        reply = await poster.post(request)
        replies.write(json.dumps(reply, separators=(",", ":")).encode() + b"\n")

    in_flight: set[asyncio.Task[None]] = set()
    try:
        while line := await requests.readline():
            request = json.loads(line)
            request["body"] = (await requests.readline()).rstrip(b"\n")
            task = asyncio.create_task(answer(request))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
    finally:
        for task in in_flight:
            task.cancel()
        await asyncio.gather(*in_flight, return_exceptions=True)
        await poster.session.close()


def main() -> None:
    asyncio.run(serve(json.loads(sys.argv[1])))


if __name__ == "__main__":
    main()
