"""A resuming claims-realtime subscriber in Python: copy it and replace `handle` with your code.

    pip install claims-realtime     # or: the repository's .venv (`make run` creates it)
    python subscriber.py <websocket_url> <channel_token> [last_sequence]

websocket_url and channel_token come from POST /api/v1/realtime-subscriptions/{organisation,user}.
Each event is printed as one JSON line on stdout; diagnostics go to stderr. It exits 0 when the
channel is closed, 1 when the server refuses the subscription for good (e.g. a wrong token).
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from claims_realtime.realtime.client import ChannelClient, ChannelClosed, Recovery


def handle(event: dict[str, Any]) -> None:
    print(json.dumps(event), flush=True)


async def subscribe(websocket_url: str, token: str, last_sequence: int | None) -> int:
    # ChannelClient keeps the last sequence it received and presents it on every
    # reconnection, skips anything it already has, and confirms each event (Socket.IO ack).
    # Persist client.last_sequence with your data to resume across restarts too.
    client = ChannelClient(websocket_url, token, last_sequence=last_sequence)
    try:
        async with client:
            async for message in client:
                if isinstance(message, Recovery):
                    lost = f" ({message.unavailable} older events no longer kept)"
                    print(
                        f"recovery: resumed from {message.resumed_from}, "
                        f"replaying {message.replayed}{lost if message.unavailable else ''}",
                        file=sys.stderr,
                        flush=True,
                    )
                else:
                    handle(message)
    except ChannelClosed as closed:
        print(f"stopped: {closed}", file=sys.stderr, flush=True)
        return 0 if closed.code == "channel_closed" else 1
    return 0


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    last_sequence = int(argv[2]) if len(argv) == 3 else None
    try:
        return asyncio.run(subscribe(argv[0], argv[1], last_sequence))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
