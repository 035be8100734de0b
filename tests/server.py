"""A real server process (`claims-realtime serve` on a free port) and helpers to drive it."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import httpx

from tests.helpers import PUBLISHER_KEY, ROOT, WEBHOOK_SECRET_KEY
from tools.bench.servers import free_port

__all__ = ["CLI", "Server", "free_port"]

CLI = str(Path(sys.executable).parent / "claims-realtime")


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the test process dies, however it dies, so that a
    killed test run leaves no server behind (Linux prctl PR_SET_PDEATHSIG)."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)


class Server:
    """One `claims-realtime serve` process; restartable on the same port and data."""

    def __init__(self, data_dir: Path, *args: str, **env: str) -> None:
        self.port = free_port()
        self.data_dir = data_dir
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "DATA_DIR": str(data_dir),
            "PUBLISHER_KEY": PUBLISHER_KEY,
            "WEBHOOK_SECRET_KEY": WEBHOOK_SECRET_KEY,
            "LOG_LEVEL": "WARNING",
        }
        self.env.pop("DATABASE_URL", None)  # default: a SQLite file under data_dir
        self.env.update(env)
        #: Extra `claims-realtime serve` arguments (e.g. --workers 2).
        self.args = list(args)
        #: The program and its working directory (test_wheel: an installed copy, elsewhere).
        self.cli = CLI
        self.cwd: Path = ROOT
        #: What answers 200 once the server is up (the list needs a token in AUTH_MODE=jwt).
        self.ready_path = "/api/v1/realtime-subscriptions"
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "server.log"
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        self.started_at = datetime.now(UTC)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [self.cli, "serve", "--host", "127.0.0.1", "--port", str(self.port), *self.args],
            cwd=self.cwd,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log_path.read_text()}")
            try:
                probe = httpx.get(f"{self.base_url}{self.ready_path}", timeout=1)
                if probe.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not start:\n{self.log_path.read_text()}")

    def stop(self, *, kill: bool = False) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- HTTP helpers -----------------------------------------------------------------------

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, timeout=15)

    async def subscribe(self, kind: str, **body: Any) -> dict[str, Any]:
        async with self.client() as http:
            response = await http.post(f"/api/v1/realtime-subscriptions/{kind}", json=body)
        assert response.status_code == 201, response.text
        return dict(response.json())

    async def publish(self, **event: Any) -> dict[str, Any]:
        async with self.client() as http:
            response = await http.post(
                "/api/v1/claim-events", json=event, headers={"X-Publisher-Key": PUBLISHER_KEY}
            )
        assert response.status_code == 202, response.text
        return dict(response.json())

    async def publish_batch(self, events: list[dict[str, Any]]) -> httpx.Response:
        async with self.client() as http:
            return await http.post(
                "/api/v1/claim-events/batch",
                json={"events": events},
                headers={"X-Publisher-Key": PUBLISHER_KEY},
            )
