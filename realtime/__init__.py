"""Socket.IO delivery: a namespace per channel, live fan-out, and exact replay from history.

Nothing here knows about HTTP. Handlers reach this package through `realtime.hub.Hub`.
"""
