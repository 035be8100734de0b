"""The outbox benchmark's PostgreSQL side: the scratch outbox database, and a sampler of the
rows consumed (our server's /metrics) and waiting (the table) while a step runs."""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
import time
import uuid
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import httpx

from tools.bench.outbox_report import Sample
from tools.bench.outbox_writer import APPLICATION_NAME
from tools.bench.servers import BIN, ROOT, OurServer

TABLE = "claims_realtime_outbox"
#: The consumer's rows counter in /metrics (a line of its own: rejected rows are not counted).
CONSUMED = 'claims_realtime_outbox_rows_total{outcome="consumed"}'


class OutboxDatabase:
    """A scratch database beside `admin_url` holding the outbox (`outbox init`'s tables and
    trigger); dropped on exit. A context manager."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.name = f"bench_outbox_{uuid.uuid4().hex[:12]}"
        self.url = urlsplit(admin_url)._replace(path=f"/{self.name}").geturl()

    def __enter__(self) -> Self:
        asyncio.run(self._admin(f'CREATE DATABASE "{self.name}"'))
        try:
            done = subprocess.run(
                [str(BIN / "claims-realtime"), "outbox", "init"],
                cwd=ROOT,
                env={**os.environ, "OUTBOX_URL": self.url, "OUTBOX_TABLE": TABLE},
                capture_output=True,
                text=True,
                timeout=60,
            )
            if done.returncode != 0:
                raise RuntimeError(f"claims-realtime outbox init failed:\n{done.stderr[-2000:]}")
        except BaseException:
            self.drop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.drop()

    def drop(self) -> None:
        asyncio.run(self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))

    async def _admin(self, statement: str) -> None:
        """Run `statement` on the admin database; a failure as a RuntimeError that names the
        server (password left out), which the run records and goes on from."""
        import asyncpg

        try:
            connection = await asyncpg.connect(self.admin_url)
            try:
                await connection.execute(statement)
            finally:
                await connection.close()
        except (OSError, asyncpg.PostgresError) as exc:
            parts = urlsplit(self.admin_url)
            where = f"{parts.hostname}:{parts.port or 5432}{parts.path}"
            raise RuntimeError(f"outbox database on {where}: {exc}") from exc

    def waiting(self) -> int:
        """Rows in the outbox now."""
        return int(asyncio.run(self._fetch(f'SELECT count(*) FROM "{TABLE}"')))

    def consumer_pids(self, timeout: float = 10.0) -> list[int]:
        """The PostgreSQL backends of our consumer (every session on the outbox database but
        the writer's and ours), once there is one; none when PostgreSQL is elsewhere."""
        if urlsplit(self.url).hostname not in ("127.0.0.1", "localhost", "::1"):
            return []
        deadline = time.monotonic() + timeout
        while True:
            pids = asyncio.run(
                self._fetch(
                    "SELECT coalesce(array_agg(pid), '{}') FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                    f"AND application_name <> '{APPLICATION_NAME}'"
                )
            )
            if pids or time.monotonic() > deadline:
                return [int(pid) for pid in pids]
            time.sleep(0.2)

    async def _fetch(self, query: str) -> Any:
        import asyncpg

        connection = await asyncpg.connect(self.url)
        try:
            return await connection.fetchval(query)
        finally:
            await connection.close()


def metrics(server: OurServer) -> dict[str, float]:
    """Every sample of GET /metrics by its full name, labels included ({} if that fails)."""
    try:
        text = httpx.get(server.base_url + "/metrics", timeout=5).text
    except httpx.HTTPError:
        return {}
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


class Sampler:
    """A thread reading (monotonic ms, rows consumed so far, rows waiting) every `interval`
    while a step runs, with a connection and an HTTP client of its own. A context manager."""

    def __init__(
        self,
        server: OurServer,
        database: OutboxDatabase,
        interval: float,
        *,
        count_rows: bool = True,
    ) -> None:
        """`count_rows` False: rows consumed only (waiting is -1), sparing PostgreSQL a
        count(*) every `interval`, which costs much on a table of many (or many dead) rows."""
        self.server = server
        self.database = database
        self.interval = interval
        self.count_rows = count_rows
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        import asyncpg

        connection = await asyncpg.connect(self.database.url)
        try:
            async with httpx.AsyncClient(base_url=self.server.base_url, timeout=5) as http:
                while not self._stop.is_set():
                    began = time.monotonic()
                    text = (await http.get("/metrics")).text
                    waiting = -1
                    if self.count_rows:
                        query = f'SELECT count(*) FROM "{TABLE}"'
                        waiting = int(await connection.fetchval(query))
                    consumed = next(
                        (
                            float(line.rsplit(" ", 1)[1])
                            for line in text.splitlines()
                            if line.startswith(CONSUMED)
                        ),
                        0.0,
                    )
                    at = (began + time.monotonic()) * 500.0  # the midpoint, in ms
                    self.samples.append((at, consumed, waiting))
                    await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - began)))
        finally:
            await connection.close()

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
