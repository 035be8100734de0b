"""Driving the load generators: subscribers.mjs (long-lived), publisher.mjs and the outbox
writer (per run)."""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from tools.bench.servers import ROOT, Channel

HERE = Path(__file__).resolve().parent
SUBSCRIBERS = HERE / "subscribers.mjs"
SOAK_SUBSCRIBERS = HERE / "soak_subscribers.mjs"
PUBLISHER = HERE / "publisher.mjs"


class GeneratorError(RuntimeError):
    """The load generator failed (not the server): the run cannot be trusted."""


def node_executable() -> str:
    """Node and the npm socket.io-client, or a clear error saying what is missing."""
    node = shutil.which("node")
    if node is None:
        raise GeneratorError("`node` is not on PATH: install Node.js 20")
    if not (ROOT / "node_modules" / "socket.io-client" / "package.json").is_file():
        raise GeneratorError("node_modules/socket.io-client is missing: run `npm ci`")
    return node


def node_version() -> str:
    try:
        return subprocess.run(
            [node_executable(), "--version"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (GeneratorError, OSError, subprocess.SubprocessError):
        return "unavailable"


class SubscriberPool:
    """One subscribers.mjs process holding a socket per channel; use as a context manager."""

    def __init__(
        self,
        channels: list[Channel],
        *,
        ready_event: str,
        storm: bool = False,
        concurrency: int = 100,
        last_sequence: int | None = None,
        ack: bool = True,
        timeout_s: float = 60.0,
        script: Path = SUBSCRIBERS,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """`script` is the Node program (subscribers.mjs, or soak_subscribers.mjs for the soak
        run); `extra` is added to its config."""
        self._dir = tempfile.TemporaryDirectory(prefix="bench-subs-")
        config_path = Path(self._dir.name) / "config.json"
        config_path.write_text(
            json.dumps(
                {
                    "channels": [channel.for_node() for channel in channels],
                    "ready_event": ready_event,
                    "connect": "storm" if storm else "paced",
                    "concurrency": concurrency,
                    "last_sequence": last_sequence,
                    "ack": ack,
                    "timeout_s": timeout_s,
                    **(extra or {}),
                }
            )
        )
        self.timeout_s = timeout_s
        self.script_name = script.name
        self._stderr_path = Path(self._dir.name) / "stderr.txt"
        self._stderr = open(self._stderr_path, "wb")  # noqa: SIM115 - closed in close()
        self.process = subprocess.Popen(
            [node_executable(), str(script), str(config_path)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            bufsize=1,
        )
        # stdout is read by a thread so that every wait can have a deadline.
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    @property
    def pid(self) -> int:
        return self.process.pid

    def _expect(self, kind: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise GeneratorError(
                    f"{self.script_name}: no {kind!r} within {timeout:.0f}s{self._stderr_tail()}"
                ) from None
            if line is None:
                raise GeneratorError(f"{self.script_name} exited{self._stderr_tail()}")
            message = json.loads(line)
            if message.get("kind") == kind:
                return dict(message)

    def _stderr_tail(self) -> str:
        self._stderr.flush()
        text = self._stderr_path.read_text(errors="replace")[-2000:]
        return f"\nnode stderr:\n{text}" if text.strip() else ""

    def _send(self, command: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()

    def wait_attached(self) -> dict[str, Any]:
        """The `attached` line: every socket ready, or the connect timeout passed."""
        return self._expect("attached", self.timeout_s + 30)

    def reset(self) -> None:
        self._send({"cmd": "reset"})
        self._expect("reset", 30)

    def report(self, expected: dict[str, int] | None = None) -> dict[str, Any]:
        self._send({"cmd": "report", "expected": expected})
        return self._expect("stats", 60)

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self._send({"cmd": "quit"})
                self.process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        self._stderr.close()
        self._dir.cleanup()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def run_publisher(
    config: dict[str, Any],
    *,
    on_tick: Callable[[float], None] | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Run publisher.mjs to the end and answer its result; `on_tick(elapsed_s)` while waiting
    (the progress indicator)."""
    command = [node_executable(), str(PUBLISHER), json.dumps(config)]
    return run_json_process(command, "publisher.mjs", config, on_tick=on_tick, timeout=timeout)


def run_json_process(
    command: list[str],
    name: str,
    config: dict[str, Any],
    *,
    on_tick: Callable[[float], None] | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Run a load generator (`command`, given `config`) to the end and answer the JSON line it
    prints last; by default it may take its `duration_s` and a minute more."""
    duration = float(config.get("duration_s", 0))
    limit = timeout if timeout is not None else duration + 60
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        started = time.monotonic()
        try:
            while process.poll() is None:
                elapsed = time.monotonic() - started
                if elapsed > limit:
                    raise GeneratorError(f"{name} still running after {limit:.0f}s")
                if on_tick is not None:
                    on_tick(elapsed)
                time.sleep(0.25)
            assert process.stdout is not None
            output = process.stdout.read()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()
        if process.returncode != 0 or not output.strip():
            stderr.seek(0)
            message = stderr.read().decode(errors="replace")[-2000:]
            raise GeneratorError(f"{name} failed ({process.returncode}):\n{message}")
        return dict(json.loads(output.strip().splitlines()[-1]))
