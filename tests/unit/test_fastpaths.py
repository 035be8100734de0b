"""Fast paths check what they stand on (claims_realtime.realtime.fastpaths): another library release
or a missing attribute gives one warning and the stock path, FAST_PATHS=off the stock paths
without a warning, and the service serves either way."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import sys
from types import SimpleNamespace
from typing import Any

import connexion
import httpx
import pytest
from asgi_lifespan import LifespanManager
from engineio import async_socket
from engineio.async_drivers import asgi as asgi_driver
from uvicorn.config import Config
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import Protocol as WebsocketsProtocol
from websockets.protocol import Side, State
from websockets.streams import StreamReader

from claims_realtime import cli, realtime
from claims_realtime.app import create_app
from claims_realtime.logs import configure_logging
from claims_realtime.realtime import fastpaths
from claims_realtime.realtime.engine import LeanWebSocket
from claims_realtime.realtime.fastpaths import FastPath
from claims_realtime.realtime.server import create_socket_server
from claims_realtime.realtime.transport import ChannelWebSocketProtocol
from claims_realtime.settings import Settings


def fast_path_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == fastpaths.log.name]


def installed(monkeypatch: pytest.MonkeyPatch, library: str, version: str) -> None:
    """Pretend `library` is installed at `version` (the others as they are)."""
    real = fastpaths.installed_version
    monkeypatch.setattr(
        fastpaths, "installed_version", lambda name: version if name == library else real(name)
    )


# -- the helper ------------------------------------------------------------------------------


class Base:
    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def read(self) -> None: ...


class Sub(Base):
    pass


def test_a_fast_path_matches_its_release_and_attributes() -> None:
    path = FastPath("x", "python-engineio", "4.15", relies_on=((Sub, "read"), (Sub, "frames")))
    assert path.mismatch() is None


def test_another_minor_release_is_a_mismatch_a_patch_release_is_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = FastPath("x", "python-engineio", "4.15")
    installed(monkeypatch, "python-engineio", "4.15.9")
    assert path.mismatch() is None
    installed(monkeypatch, "python-engineio", "4.16.0")
    assert path.mismatch() == "found python-engineio 4.16.0, written for 4.15"
    installed(monkeypatch, "python-engineio", "unknown")
    assert path.mismatch() is not None


def test_a_missing_method_or_instance_state_is_a_mismatch(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=fastpaths.log.name)
    path = FastPath("the x path", "python-engineio", "4.15", relies_on=((Sub, "read"),))
    monkeypatch.delattr(Base, "read")
    assert not path.check()
    assert FastPath("y", "python-engineio", "4.15", relies_on=((Sub, "buffer"),)).mismatch()
    [warning] = fast_path_warnings(caplog)
    assert warning.startswith("the x path: python-engineio 4.15")
    assert "lacks Sub.read; serving it through the stock path instead" in warning


# -- each fast path falls back on a mismatch, with one warning --------------------------------


def test_another_python_engineio_gives_its_stock_websocket_handling(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=fastpaths.log.name)
    installed(monkeypatch, "python-engineio", "4.16.0")
    server = create_socket_server()
    assert server.eio._async["websocket"] is asgi_driver.WebSocket
    assert server.eio.frame_hook is None and not server.eio.adopts_sockets
    [warning] = fast_path_warnings(caplog)
    assert "found python-engineio 4.16.0, written for 4.15" in warning


def test_a_missing_python_engineio_attribute_gives_its_stock_websocket_handling(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=fastpaths.log.name)
    monkeypatch.delattr(async_socket.AsyncSocket, "_websocket_handler")
    server = create_socket_server()
    assert server.eio._async["websocket"] is asgi_driver.WebSocket
    assert server.eio.frame_hook is None
    [warning] = fast_path_warnings(caplog)
    assert "lacks AsyncSocket._websocket_handler" in warning


def test_another_python_socketio_leaves_ack_frames_to_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=fastpaths.log.name)
    installed(monkeypatch, "python-socketio", "5.19.0")
    server = create_socket_server()
    assert server.eio.frame_hook is None
    assert server.eio._async["websocket"] is LeanWebSocket  # python-engineio still matches
    [warning] = fast_path_warnings(caplog)
    assert "found python-socketio 5.19.0, written for 5.18" in warning


@pytest.mark.parametrize(
    ("library", "version", "missing"),
    [
        ("uvicorn", "0.55.0", None),
        ("websockets", "16.0", None),
        (None, None, (WebSocketsSansIOProtocol, "send_receive_event_to_app")),
        (None, None, (StreamReader, "at_eof")),
    ],
)
def test_another_uvicorn_or_websockets_gives_uvicorns_own_protocol(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    library: str | None,
    version: str | None,
    missing: tuple[Any, str] | None,
) -> None:
    caplog.set_level(logging.WARNING, logger=fastpaths.log.name)
    if library is not None and version is not None:
        installed(monkeypatch, library, version)
    if missing is not None:
        monkeypatch.delattr(*missing)
    assert cli.websocket_protocol(Settings()) == cli.STOCK_WS_PROTOCOL
    [warning] = fast_path_warnings(caplog)
    assert warning.startswith("the uvicorn websocket protocol (realtime.transport): ")


def test_a_transport_that_does_not_load_gives_uvicorns_own_protocol(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    monkeypatch.setitem(sys.modules, "claims_realtime.realtime.transport", None)
    monkeypatch.delattr(realtime, "transport")  # so that the import looks it up again
    assert cli.websocket_protocol(Settings()) == cli.STOCK_WS_PROTOCOL
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "does not load with uvicorn 0.54" in warning.getMessage()


def connexion_app(app: Any) -> Any:
    """The Connexion app inside the service's chain of ASGI apps."""
    while not isinstance(app, connexion.AsyncApp):
        app = getattr(app, "other_asgi_app", None) or app.app
    return app


def test_connexion_serves_through_its_own_request_path(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """No fast path stands on Connexion's internals: whatever release is installed, the
    document is served by Connexion's own AsyncApp, and nothing warns."""
    caplog.set_level(logging.WARNING, logger=fastpaths.log.name)
    assert type(connexion_app(create_app(settings))) is connexion.AsyncApp
    installed(monkeypatch, "connexion", "3.4.0")
    assert type(connexion_app(create_app(settings))) is connexion.AsyncApp
    assert fast_path_warnings(caplog) == []


# -- FAST_PATHS ------------------------------------------------------------------------------


def test_fast_paths_is_on_or_off() -> None:
    assert Settings.from_env({}).fast_paths
    assert Settings.from_env({"FAST_PATHS": "on"}).fast_paths
    assert not Settings.from_env({"FAST_PATHS": " OFF "}).fast_paths
    with pytest.raises(ValueError, match="FAST_PATHS must be on or off, got 'no'"):
        Settings.from_env({"FAST_PATHS": "no"})


def test_fast_paths_off_selects_every_stock_path(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=fastpaths.log.name)
    server = create_socket_server(fast_paths=False)
    # The reader and writer keeping the protocol's rules stay; the speed parts go.
    assert server.eio._async["websocket"] is LeanWebSocket
    assert server.eio.frame_hook is None and not server.eio.shortcuts
    assert type(connexion_app(create_app(Settings(fast_paths=False)))) is connexion.AsyncApp
    assert cli.websocket_protocol(Settings(fast_paths=False)) == "websockets-sansio"
    assert fast_path_warnings(caplog) == []


def test_serve_asks_uvicorn_for_its_own_protocol_when_fast_paths_are_off() -> None:
    calls: list[dict[str, Any]] = []
    fake_uvicorn = SimpleNamespace(run=lambda *args, **kwargs: calls.append(kwargs))
    args = argparse.Namespace(host="127.0.0.1", port=0, workers=1, graceful_timeout=1.0)
    cli._run_uvicorn(fake_uvicorn, args, Settings.from_env({"FAST_PATHS": "off"}))
    config = Config(app=lambda *a: None, ws=calls[0]["ws"])
    config.load()
    assert config.ws_protocol_class is WebSocketsSansIOProtocol
    assert not issubclass(config.ws_protocol_class, ChannelWebSocketProtocol)


# -- the service serves on the stock paths ---------------------------------------------------


async def websocket_open_packet(app: Any) -> str:
    """Open an Engine.IO websocket on `app` and answer its first frame (the OPEN packet)."""
    incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    sent: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    incoming.put_nowait({"type": "websocket.connect"})
    scope = {
        "type": "websocket",
        "path": "/socket.io/",
        "query_string": b"EIO=4&transport=websocket",
        "headers": [(b"host", b"t"), (b"connection", b"Upgrade"), (b"upgrade", b"websocket")],
        "scheme": "ws",
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "asgi": {"version": "3.0"},
    }
    task = asyncio.ensure_future(app(scope, incoming.get, sent.put))
    try:
        assert (await asyncio.wait_for(sent.get(), 5))["type"] == "websocket.accept"
        frame = await asyncio.wait_for(sent.get(), 5)
        text: str = frame["text"]
        return text
    finally:
        incoming.put_nowait({"type": "websocket.disconnect", "code": 1000})
        await asyncio.wait_for(task, 5)


@pytest.mark.parametrize("mismatch", ["off", "python-engineio", "connexion", "python-socketio"])
async def test_the_service_serves_on_the_stock_paths(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, mismatch: str
) -> None:
    if mismatch == "off":
        settings = dataclasses.replace(settings, fast_paths=False)
    else:
        installed(monkeypatch, mismatch, "0.0")
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            created = await http.post(
                "/api/v1/realtime-subscriptions/user", json={"user_id": "usr_stock"}
            )
            assert created.status_code == 201, created.text
            listed = await http.get("/api/v1/realtime-subscriptions")
            assert listed.status_code == 200
            assert created.json()["channel_id"] in [c["channel_id"] for c in listed.json()["data"]]
            refused = await http.post("/api/v1/realtime-subscriptions/user", json={})
            assert refused.status_code == 400
            polling = await http.get("/socket.io/", params={"EIO": "4", "transport": "polling"})
            assert polling.status_code == 200 and polling.text.startswith("0{")
        opened = await websocket_open_packet(manager.app)
        assert opened.startswith("0") and "sid" in json.loads(opened[1:])


def test_websockets_frames_stay_out_of_the_log_under_uvicorns_own_protocol(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """uvicorn's protocol lends websockets `uvicorn.error`, and at DEBUG websockets logs each
    frame's head and tail (a CONNECT's tail is its token): claims_realtime.logs drops them."""
    configure_logging("DEBUG")
    caplog.set_level(logging.DEBUG, logger="uvicorn.error")
    connection = WebsocketsProtocol(
        Side.SERVER, state=State.OPEN, logger=logging.getLogger("uvicorn.error")
    )
    assert connection.debug
    connection.send_text(b'40/channels/chan_x,{"token":"secret-token"}')
    logging.getLogger("uvicorn.error").debug("uvicorn's own line")
    assert [r.getMessage() for r in caplog.records if r.name == "uvicorn.error"] == [
        "uvicorn's own line"
    ]
