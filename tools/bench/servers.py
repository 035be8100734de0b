"""The two servers measured side by side, each a subprocess on a free loopback port.

`OurServer` is `claims-realtime serve` on a fresh DATA_DIR (and, on PostgreSQL, a scratch
database); `BaselineServer` is tools.bench.baseline. Both answer the same questions: where to
create a channel, where to post a batch, which Socket.IO event says a subscriber is attached.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import httpx

from tools.bench import procstat

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PUBLISHER_KEY = "bench-publisher-key-0123456789abcdef"
START_TIMEOUT = 60.0


def free_port() -> int:
    """A port free on 127.0.0.1. With PORT_RANGE (`low-high`, below the kernel's ephemeral
    ports) it comes from that range: `make test` runs two test passes at once, and two
    processes asking the kernel for a free port can be handed the same one before either
    server binds it."""
    chosen = os.environ.get("PORT_RANGE")
    low, high = (int(end) for end in chosen.split("-")) if chosen else (0, 0)
    while True:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", random.randint(low, high) if chosen else 0))
            except OSError:
                continue  # taken: draw again
            return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Channel:
    """A created channel, and the routing key (organisation or user id) that feeds it."""

    channel_id: str
    websocket_url: str
    token: str
    key: str
    #: The fallback webhook's signing secret, when the channel was created with one.
    fallback_secret: str | None = None

    def for_node(self) -> dict[str, str]:
        return {
            "websocket_url": self.websocket_url,
            "token": self.token,
            "key": self.key,
            "channel_id": self.channel_id,
        }


@dataclass(frozen=True)
class ChannelSpec:
    """What to subscribe to: kind is "organisation" or "user"."""

    kind: str
    user_id: str
    organisation_id: str | None = None
    #: A fallback webhook set with the channel (our server only): where, and after how long.
    fallback_url: str | None = None
    fallback_after_seconds: int = 10

    @property
    def key(self) -> str:
        if self.kind == "organisation":
            assert self.organisation_id is not None
            return self.organisation_id
        return self.user_id


class BenchServer:
    """A server subprocess with a fresh working directory; use as a context manager."""

    #: "ours" or "baseline": how results are labelled.
    name = ""
    #: The Socket.IO event after which a subscriber is attached.
    ready_event = "connect"
    ready_path = "/"

    def __init__(self) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._tmp = Path(tempfile.mkdtemp(prefix=f"bench-{self.name}-"))
        self.log_path = self._tmp / "server.log"
        self.process: subprocess.Popen[bytes] | None = None

    # -- what differs between the two ---------------------------------------------------

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    @property
    def batch_url(self) -> str:
        raise NotImplementedError

    @property
    def publish_headers(self) -> dict[str, str]:
        return {"X-Publisher-Key": PUBLISHER_KEY}

    def subscribe_request(self, spec: ChannelSpec) -> tuple[str, dict[str, Any]]:
        """(path, JSON body) creating the channel `spec`."""
        raise NotImplementedError

    def prepare(self) -> None:
        """Anything to do before the process starts (e.g. migrate a database)."""

    def cleanup(self) -> None:
        """Anything to undo after the process stopped."""

    def database_pids(self) -> list[int]:
        """Processes of an external database doing this server's work (none by default)."""
        return []

    # -- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> BenchServer:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        self.prepare()
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it; closed below
        try:
            self.process = subprocess.Popen(
                self.command(),
                cwd=ROOT,
                env=self.environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C of the benchmark is handled by us, not it
            )
        finally:
            log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} server exited early:\n{self.log_tail()}")
            try:
                if httpx.get(self.base_url + self.ready_path, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} server not ready in {START_TIMEOUT}s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    # Kill the whole session (uvicorn workers too): we started all of it.
                    os.killpg(self.process.pid, signal.SIGKILL)
                    self.process.wait()
            self.process = None
        self.cleanup()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    @property
    def pid(self) -> int:
        assert self.process is not None, "not started"
        return self.process.pid

    def pids(self) -> list[int]:
        """The server process and its workers."""
        return procstat.tree(self.pid)

    def rss_kb(self) -> int:
        return procstat.rss_kb(self.pids())

    def allocated_blocks(self) -> int | None:
        """Python memory blocks the server's processes hold (live data, and cyclic garbage
        awaiting a collection), from GET /metrics (None if that fails)."""
        sums = self.metric_sums()
        value = sums.get("claims_realtime_python_allocated_blocks") if sums else None
        return None if value is None else int(value)

    def metrics_text(self) -> str:
        """GET /metrics as text; empty if the server has none (the baseline) or it fails."""
        try:
            response = httpx.get(self.base_url + "/metrics", timeout=5)
        except httpx.HTTPError:
            return ""
        return response.text if response.status_code == 200 else ""

    def metric_sums(self) -> dict[str, float] | None:
        """Each sample name of GET /metrics, summed over its labels (None if that fails)."""
        text = self.metrics_text()
        if not text:
            return None
        sums: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name = line.split("{", 1)[0].split(" ", 1)[0]
                sums[name] = sums.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
        return sums

    # -- channels ---------------------------------------------------------------------------

    def create_channels(self, specs: list[ChannelSpec], concurrency: int = 16) -> list[Channel]:
        """Create the channels over REST, `concurrency` requests at a time, in order."""
        return asyncio.run(self._create_channels(specs, concurrency))

    async def _create_channels(self, specs: list[ChannelSpec], concurrency: int) -> list[Channel]:
        limit = asyncio.Semaphore(concurrency)
        async with httpx.AsyncClient(base_url=self.base_url, timeout=60) as http:

            async def create(spec: ChannelSpec) -> Channel:
                path, body = self.subscribe_request(spec)
                async with limit:
                    response = await http.post(path, json=body)
                if response.status_code != 201:
                    raise RuntimeError(
                        f"{self.name}: creating a channel gave {response.status_code}: "
                        f"{response.text[:300]}"
                    )
                created = response.json()
                return Channel(
                    created["channel_id"],
                    created["websocket_url"],
                    created["channel_token"],
                    spec.key,
                    (created.get("fallback") or {}).get("secret"),
                )

            return list(await asyncio.gather(*(create(spec) for spec in specs)))


_FULL_COLLECTIONS = "claims_realtime_python_full_collections_total"


class OurServer(BenchServer):
    """`claims-realtime serve` with DATA_DIR in a fresh directory."""

    name = "ours"
    ready_event = "recovery"
    ready_path = "/api/v1/health/ready"

    def __init__(
        self,
        database_url: str | None = None,
        redis_url: str | None = None,
        workers: int = 1,
        env: dict[str, str] | None = None,
    ) -> None:
        """`env`: settings added to the server's environment (e.g. WEBHOOK_ALLOWED_HOSTS)."""
        super().__init__()
        self.given_database_url = database_url
        self.database_url = database_url
        self.redis_url = redis_url
        self.workers = workers
        self.extra_env = dict(env or {})
        self._scratch: str | None = None

    def command(self) -> list[str]:
        command = [str(BIN / "claims-realtime"), "serve", "--host", "127.0.0.1"]
        command += ["--port", str(self.port)]
        if self.workers > 1:
            command += ["--workers", str(self.workers)]
        return command

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        for name in ("DATABASE_URL", "REDIS_URL", "PUBLIC_URL"):
            env.pop(name, None)  # nothing from the caller's shell leaks into the measurement
        for name in [name for name in env if name.startswith(("WEBHOOK_", "OUTBOX_"))]:
            env.pop(name)
        env.update(DATA_DIR=str(self._tmp), PUBLISHER_KEY=PUBLISHER_KEY, LOG_LEVEL="WARNING")
        env.update(self.extra_env)
        if self.database_url:
            env["DATABASE_URL"] = self.database_url
        if self.redis_url:
            env["REDIS_URL"] = self.redis_url
        return env

    @property
    def batch_url(self) -> str:
        return f"{self.base_url}/api/v1/claim-events/batch"

    def app_pids(self) -> list[int]:
        """The processes that run the app: the server itself, or with --workers N its
        uvicorn workers (not the supervisor, which does not handle SIGUSR2)."""
        if self.workers == 1:
            return [self.pid]
        return [pid for pid in procstat.descendants(self.pid) if procstat.is_spawned_worker(pid)]

    def live_blocks_after_collection(self, timeout: float = 10.0) -> int | None:
        """Ask every app process for a full garbage collection (SIGUSR2) and answer the
        Python blocks live right after it, summed; None if they did not all answer in time.
        Unlike the plain block count, this holds no cyclic garbage: it grows only with a
        leak."""
        before = self.metric_sums() or {}
        count = before.get(_FULL_COLLECTIONS, 0.0)
        pids = self.app_pids()
        for pid in pids:
            os.kill(pid, signal.SIGUSR2)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.05)
            sums = self.metric_sums() or {}
            if sums.get(_FULL_COLLECTIONS, 0.0) >= count + len(pids):
                return int(sums["claims_realtime_python_blocks_after_full_collection"])
        return None

    def subscribe_request(self, spec: ChannelSpec) -> tuple[str, dict[str, Any]]:
        path = f"/api/v1/realtime-subscriptions/{spec.kind}"
        body: dict[str, Any] = {"user_id": spec.user_id}
        if spec.kind == "organisation":
            body["organisation_id"] = spec.organisation_id
        if spec.fallback_url is not None:
            body["fallback"] = {
                "url": spec.fallback_url,
                "after_seconds": spec.fallback_after_seconds,
            }
        return path, body

    def prepare(self) -> None:
        url = self.given_database_url
        if not url or not url.startswith(("postgres://", "postgresql://")):
            return
        # A fresh server means a fresh database: a scratch one beside the given one, if we
        # may create databases there; otherwise the given database as it is.
        self._scratch = asyncio.run(_create_scratch_database(url))
        if self._scratch is None:
            print(
                f"warning: cannot create a scratch database on {_redacted(url)}; "
                "using it as it is (earlier runs' rows included)",
                file=sys.stderr,
            )
        self.database_url = self._scratch or url
        migrate = subprocess.run(
            [str(BIN / "claims-realtime"), "migrate"],
            cwd=ROOT,
            env=self.environment(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if migrate.returncode != 0:
            raise RuntimeError(f"claims-realtime migrate failed:\n{migrate.stderr[-2000:]}")

    def database_pids(self) -> list[int]:
        """PostgreSQL backends serving this server, when PostgreSQL runs on this machine (their
        CPU is the server's too); none on SQLite, which runs inside the server process."""
        if not self.database_url or not self.database_url.startswith(("postgres", "postgresql")):
            return []
        if urlsplit(self.database_url).hostname not in ("127.0.0.1", "localhost", "::1"):
            return []
        name = urlsplit(self.database_url).path.lstrip("/")
        pids = asyncio.run(_backend_pids(self.database_url, name))
        return [pid for pid in pids if Path(f"/proc/{pid}").exists()]

    def cleanup(self) -> None:
        if self._scratch is not None:
            asyncio.run(_drop_database(self.given_database_url or "", self._scratch))
            self._scratch = None


class BaselineServer(BenchServer):
    """tools.bench.baseline: bare python-socketio fan-out, no storage."""

    name = "baseline"
    ready_event = "connect"
    ready_path = "/health"

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "tools.bench.baseline",
            "--port",
            str(self.port),
            "--publisher-key",
            PUBLISHER_KEY,
        ]

    @property
    def batch_url(self) -> str:
        return f"{self.base_url}/events/batch"

    def subscribe_request(self, spec: ChannelSpec) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {"kind": spec.kind, "user_id": spec.user_id}
        if spec.organisation_id is not None:
            body["organisation_id"] = spec.organisation_id
        return "/channels", body


# -- PostgreSQL scratch databases -------------------------------------------------------------


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}:{parts.port or 5432}{parts.path}"


async def _create_scratch_database(url: str) -> str | None:
    import asyncpg

    name = f"bench_{uuid.uuid4().hex[:12]}"
    try:
        connection = await asyncpg.connect(url)
    except (OSError, asyncpg.PostgresError) as exc:
        raise RuntimeError(f"cannot connect to {_redacted(url)}: {exc}") from exc
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    except asyncpg.PostgresError:
        return None
    finally:
        await connection.close()
    return urlsplit(url)._replace(path=f"/{name}").geturl()


async def _backend_pids(url: str, name: str) -> list[int]:
    import asyncpg

    connection = await asyncpg.connect(url)
    try:
        rows = await connection.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
    finally:
        await connection.close()
    return [int(row["pid"]) for row in rows]


async def _drop_database(admin_url: str, scratch_url: str) -> None:
    import asyncpg

    name = urlsplit(scratch_url).path.lstrip("/")
    connection = await asyncpg.connect(admin_url)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()
