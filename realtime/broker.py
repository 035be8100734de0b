"""Telling the other server processes what was just recorded, so that their sockets get it live.

The broker is chosen by REDIS_URL: none means one process and nothing to tell; `redis://`
publishes each recorded batch on a Redis pub/sub channel every process listens to.

Redis pub/sub is at-most-once, and Redis may be down: neither can lose an event, because
events are durable in the database before they are announced and every process reconciles
its sockets against the database (after an outage, and periodically). The broker only makes
delivery fast; the database makes it certain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

CHANNEL = "claims-realtime:recorded"

OnMessage = Callable[[bytes], None]
OnResync = Callable[[], Awaitable[None]]


class Broker:
    """One process alone: nothing to tell anyone."""

    #: Whether other processes may be listening (publishing is worth encoding for).
    distributed = False

    async def start(self, on_message: OnMessage, on_resync: OnResync) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def publish(self, payload: bytes) -> None:
        return None

    async def ping(self) -> bool:
        return True


class RedisBroker(Broker):
    """Fan-out through Redis pub/sub, surviving Redis outages by itself."""

    distributed = True

    def __init__(self, url: str, retry_seconds: float = 1.0) -> None:
        import redis.asyncio as redis

        # Short timeouts: ingestion must not hang on a Redis that went away.
        self._redis = redis.Redis.from_url(
            url, socket_connect_timeout=1, socket_timeout=2, health_check_interval=10
        )
        self._retry = retry_seconds
        self._task: asyncio.Task[None] | None = None
        #: False while the subscription is down: publishing is skipped, not retried.
        self.connected = False

    async def start(self, on_message: OnMessage, on_resync: OnResync) -> None:
        self._task = asyncio.create_task(self._listen(on_message, on_resync))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._redis.aclose()

    async def publish(self, payload: bytes) -> None:
        if not self.connected:
            return  # the others reconcile from the database when Redis is back
        try:
            await self._redis.publish(CHANNEL, payload)
        except Exception as exc:
            self._lost(exc)

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except Exception:
            return False

    def _lost(self, exc: BaseException) -> None:
        if self.connected:
            log.warning(
                "Redis fan-out lost (%s): events are still recorded; other processes' "
                "clients get them when Redis is back or when they reconnect",
                exc,
            )
        self.connected = False

    async def _listen(self, on_message: OnMessage, on_resync: OnResync) -> None:
        while True:
            try:
                async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    was_down = not self.connected
                    self.connected = True
                    log.info("Redis fan-out %s", "restored" if was_down else "ready")
                    # Whatever was announced while we were not listening is in the database.
                    await on_resync()
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            try:
                                on_message(message["data"])
                            except Exception:
                                log.exception("could not deliver a fan-out message")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._lost(exc)
                await asyncio.sleep(self._retry)


def create_broker(redis_url: str | None) -> Broker:
    """The broker REDIS_URL asks for (none: a single process)."""
    if not redis_url:
        return Broker()
    if redis_url.startswith(("redis://", "rediss://", "unix://")):
        return RedisBroker(redis_url)
    raise ValueError(f"REDIS_URL must be redis://, rediss:// or unix://, got {redis_url!r}")
