"""Which server processes hold sockets of which channels, so that a channel is
`disconnected` only when no process holds one, and a crashed process's sockets are forgotten.

Each process is a *node* with a heartbeat; `presence` counts a node's sockets per channel.
A node whose heartbeat is older than the staleness bound is presumed dead: the others reap
its rows and mark channels nobody holds any more `disconnected`.
"""

from __future__ import annotations

from datetime import timedelta

from tortoise import fields
from tortoise.expressions import F
from tortoise.models import Model
from tortoise.transactions import in_transaction

from claims_realtime.models.channel import Channel, ChannelStatus
from claims_realtime.models.clock import utcnow


class Node(Model):
    """A running server process."""

    id = fields.CharField(max_length=40, primary_key=True)
    started_at = fields.DatetimeField()
    heartbeat_at = fields.DatetimeField(db_index=True)

    class Meta:
        table = "node"


class Presence(Model):
    """`sockets` sockets of channel `channel_id` are attached to node `node_id`."""

    id = fields.BigIntField(primary_key=True)
    channel_id = fields.CharField(max_length=72, db_index=True)
    node_id = fields.CharField(max_length=40, db_index=True)
    sockets = fields.IntField(default=0)

    class Meta:
        table = "presence"
        unique_together = (("channel_id", "node_id"),)


async def register_node(node_id: str) -> None:
    now = utcnow()
    await Node.update_or_create(id=node_id, defaults={"started_at": now, "heartbeat_at": now})


async def heartbeat(node_id: str) -> None:
    updated = await Node.filter(id=node_id).update(heartbeat_at=utcnow())
    if not updated:  # reaped after a long stall: come back
        await register_node(node_id)


async def socket_attached(channel_id: str, node_id: str) -> None:
    """Count a socket and mark the channel connected (unless it was closed)."""
    async with in_transaction():
        _, created = await Presence.get_or_create(
            channel_id=channel_id, node_id=node_id, defaults={"sockets": 1}
        )
        if not created:
            await Presence.filter(channel_id=channel_id, node_id=node_id).update(
                sockets=F("sockets") + 1
            )
        await _set_status(channel_id, ChannelStatus.CONNECTED)


async def socket_detached(channel_id: str, node_id: str) -> bool:
    """Uncount a socket; mark the channel disconnected when no node holds one any more.
    Answers whether that happened."""
    async with in_transaction():
        mine = Presence.filter(channel_id=channel_id, node_id=node_id)
        await mine.update(sockets=F("sockets") - 1)
        await mine.filter(sockets__lte=0).delete()
        if await Presence.filter(channel_id=channel_id).exists():
            return False
        await _set_status(channel_id, ChannelStatus.DISCONNECTED)
        return True


async def forget_node(node_id: str) -> None:
    """This node is leaving: drop its rows and release the channels only it held."""
    await _remove_nodes([node_id])


async def reap_dead_nodes(stale_after_seconds: float) -> list[str]:
    """Remove nodes silent for longer than the bound; answer their ids."""
    cutoff = utcnow() - timedelta(seconds=stale_after_seconds)
    dead = list(await Node.filter(heartbeat_at__lt=cutoff).values_list("id", flat=True))
    if dead:
        await _remove_nodes([str(node) for node in dead])
    return [str(node) for node in dead]


async def _remove_nodes(node_ids: list[str]) -> None:
    async with in_transaction():
        channels = set(
            await Presence.filter(node_id__in=node_ids).values_list("channel_id", flat=True)
        )
        await Presence.filter(node_id__in=node_ids).delete()
        await Node.filter(id__in=node_ids).delete()
        still_held = set(
            await Presence.filter(channel_id__in=list(channels)).values_list(
                "channel_id", flat=True
            )
        )
        # In id order, as every transaction locks channel rows (see models.db).
        for channel_id in sorted(str(cid) for cid in channels - still_held):
            await _set_status(channel_id, ChannelStatus.DISCONNECTED)


async def _set_status(channel_id: str, status: ChannelStatus) -> None:
    await (
        Channel.filter(id=channel_id)
        .exclude(status=ChannelStatus.CLOSED)
        .exclude(status=status)
        .update(status=status)
    )
