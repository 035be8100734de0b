"""channel.head_sequence and channel.last_event_at become true on SQLite too.

Until now SQLite derived a channel's head from its newest placement and left the columns
stale; ingestion now writes them in the same transaction as the placements, on every
database. This brings an existing SQLite database's columns up to its history: each channel
whose newest placement is past its column takes that placement's sequence and time.

The same statement on PostgreSQL, whose columns were always current, changes no row.
"""

from tortoise import migrations
from tortoise.migrations import operations as ops

_NEWEST = "FROM channel_event ce WHERE ce.channel_id = channel.id"

BACKFILL = f"""UPDATE channel SET
    head_sequence = (SELECT max(ce.sequence) {_NEWEST}),
    last_event_at = (SELECT ce.recorded_at {_NEWEST} ORDER BY ce.sequence DESC LIMIT 1)
WHERE head_sequence < (SELECT max(ce.sequence) {_NEWEST})"""


class Migration(migrations.Migration):
    dependencies = [("models", "0002_placements_without_event_constraint")]

    initial = False

    operations = [
        # Nothing to undo: the previous code reads the columns as a floor under the history.
        ops.RunSQL(BACKFILL, reverse_sql=ops.RunSQL.noop),
    ]
