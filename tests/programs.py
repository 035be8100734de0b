"""Test programs run as subprocesses whose stdout is JSON lines: Node scripts (the JS client,
the example subscriber, the console driver) and Python ones (the Python example)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ROOT, unique

WAIT = 5.0  # seconds: the bound of every single wait
#: The scriptable socket.io-client subscriber (its header says what it prints and takes).
JS_CLIENT = ROOT / "tests" / "integration" / "js" / "client.mjs"


def node_executable() -> str:
    """Node and socket.io-client are required, not optional: fail (never skip) without them."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("`node` is not on PATH: install Node.js 20, then run `make test`")
    if not (ROOT / "node_modules" / "socket.io-client" / "package.json").is_file():
        pytest.fail("node_modules/socket.io-client is missing: run `make test` (it runs `npm ci`)")
    return node


class ProgramProcess:
    """A program whose stdout is JSON lines; every line read is kept in `lines`."""

    def __init__(self, process: asyncio.subprocess.Process, stderr_path: Path) -> None:
        self.process = process
        self.stderr_path = stderr_path
        self.lines: list[dict[str, Any]] = []

    def report(self) -> str:
        """What to show when an expectation fails."""
        seen = "\n".join(json.dumps(line) for line in self.lines)
        stderr = self.stderr_path.read_text(errors="replace")
        return f"\nlines so far:\n{seen}\nstderr:\n{stderr}"

    async def next_line(self, timeout: float = WAIT) -> dict[str, Any] | None:
        """The next stdout line, parsed; None at end of output."""
        assert self.process.stdout is not None
        try:
            raw = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        except TimeoutError:
            pytest.fail(f"no output within {timeout}s{self.report()}")
        if not raw:
            return None
        line = json.loads(raw)
        self.lines.append(line)
        return dict(line)

    async def expect(self, kind: str, timeout: float = WAIT) -> dict[str, Any]:
        """Read lines until one of `kind` (client.mjs lines have a `kind`)."""
        deadline = time.monotonic() + timeout
        while True:
            line = await self.next_line(max(0.0, deadline - time.monotonic()))
            if line is None:
                pytest.fail(f"the program exited before a {kind!r} line{self.report()}")
            if line.get("kind") == kind:
                return line

    async def events(self, count: int, timeout: float = WAIT) -> list[dict[str, Any]]:
        """The payloads of the next `count` event lines."""
        deadline = time.monotonic() + timeout
        return [
            (await self.expect("event", max(0.0, deadline - time.monotonic())))["payload"]
            for _ in range(count)
        ]

    async def send(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command.encode() + b"\n")
        await self.process.stdin.drain()

    async def finish(self, timeout: float = WAIT) -> int:
        """Read the rest of the output (kept in `lines`) and answer the exit code."""
        while await self.next_line(timeout) is not None:
            pass
        try:
            return await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            pytest.fail(f"the program did not exit within {timeout}s{self.report()}")

    def kinds(self) -> list[str]:
        return [str(line.get("kind")) for line in self.lines]

    def sequences(self) -> list[int]:
        return [line["payload"]["sequence"] for line in self.lines if line.get("kind") == "event"]


def run_node(tmp_path: Path, *args: str) -> contextlib.AbstractAsyncContextManager[ProgramProcess]:
    """A Node script of the repository (node_modules on its path)."""
    return run_program(tmp_path, node_executable(), *args)


def run_js_client(
    tmp_path: Path, channel: dict[str, Any], **config: Any
) -> contextlib.AbstractAsyncContextManager[ProgramProcess]:
    """client.mjs on a channel as answered by POST /realtime-subscriptions/...; `config` adds
    transports, ack ("callback", "emit", "none") and ack_upto."""
    config = {
        "websocket_url": channel["websocket_url"],
        "token": channel["channel_token"],
        **config,
    }
    return run_node(tmp_path, str(JS_CLIENT), json.dumps(config))


@contextlib.asynccontextmanager
async def run_program(tmp_path: Path, executable: str, *args: str) -> AsyncIterator[ProgramProcess]:
    """Run `executable *args` from the repository root; stdin closed on exit ends it."""
    stderr_path = tmp_path / f"stderr-{unique('run')}.log"
    with open(stderr_path, "wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            executable,
            *args,
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
        )
        try:
            yield ProgramProcess(process, stderr_path)
        finally:
            assert process.stdin is not None
            process.stdin.close()
            if process.returncode is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(process.wait(), 2)  # stdin closed: it exits
            if process.returncode is None:
                process.kill()
                await process.wait()
