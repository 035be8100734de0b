"""Feeds: an event is stored once per routing (models.event.Feed), not once per channel.

Every existing channel gets a feed of its own (`channel:<id>`, offset 0), whose positions are
the channel's sequences and whose rows are its placements, so every history, head, retention
bound and receipt reads exactly as before; channels created from now on share feeds. The
channel's head moves to its feed (and to `closed_position` for a closed channel), and its
`last_event_at` is kept as `closed_event_at` for closed channels only.
"""

from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.fields.base import OnDelete
from tortoise import fields
from typing import Any

from claims_realtime.models.backends import backend_of

BACKFILL = [
    "INSERT INTO feed (name, head, last_event_at)"
    " SELECT 'channel:' || id, head_sequence, closed_event_at FROM channel",
    "UPDATE channel SET"
    " feed_id = (SELECT f.id FROM feed f WHERE f.name = 'channel:' || channel.id),"
    " feed_offset = 0,"
    " closed_position = CASE WHEN status = 'closed' THEN head_sequence END,"
    " closed_event_at = CASE WHEN status = 'closed' THEN closed_event_at END",
    "INSERT INTO feed_event (feed_id, position, event_id, recorded_at)"
    " SELECT c.feed_id, ce.sequence, ce.event_id, ce.recorded_at"
    " FROM channel_event ce JOIN channel c ON c.id = ce.channel_id ORDER BY ce.id",
]


class AddFieldWithDefault(ops.AddField):
    """AddField's change of state, with a database default: Tortoise's own adds a NOT NULL
    column without one, which SQLite refuses on a table that has rows."""

    async def database_forward(
        self, app_label: str, old_state: Any, new_state: Any, state_editor: Any = None
    ) -> None:
        if not state_editor:
            return
        sql = f"ALTER TABLE channel ADD COLUMN {self.name} BIGINT NOT NULL DEFAULT 0"
        await ops.RunSQL(sql).database_forward(app_label, old_state, new_state, state_editor)


# Tortoise's CreateModel writes the event_id foreign key as a constraint on SQLite, whatever
# db_constraint says (see 0002 for why there must be none, and old placements may name events
# prune deleted). So SQLite's table is written here; on PostgreSQL the constraint, if
# Tortoise made one, is dropped after it.
_SQLITE_FEED_EVENT = [
    """CREATE TABLE "feed_event" (
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "position" BIGINT NOT NULL,
    "recorded_at" TIMESTAMP NOT NULL,
    "event_id" VARCHAR(128) NOT NULL,
    "feed_id" BIGINT NOT NULL REFERENCES "feed" ("id") ON DELETE CASCADE,
    CONSTRAINT "uid_feed_event_feed_id_404e43" UNIQUE ("feed_id", "position")
)""",
    'CREATE INDEX "idx_feed_event_recorde_5c6507" ON "feed_event" ("recorded_at")',
    'CREATE INDEX "idx_feed_event_event_i_d98f8f" ON "feed_event" ("event_id")',
]
_POSTGRES_DROP_EVENT_CONSTRAINT = """DO $$
DECLARE name text;
BEGIN
    SELECT conname INTO name FROM pg_constraint
    WHERE conrelid = 'feed_event'::regclass AND confrelid = 'claim_event'::regclass
      AND contype = 'f';
    IF name IS NOT NULL THEN
        EXECUTE format('ALTER TABLE feed_event DROP CONSTRAINT %I', name);
    END IF;
END $$"""


class CreateFeedEvent(ops.CreateModel):
    """CreateModel, without a database constraint on event_id (see above)."""

    async def database_forward(
        self, app_label: str, old_state: Any, new_state: Any, state_editor: Any = None
    ) -> None:
        if not state_editor:
            return
        if backend_of(state_editor.client).name == "sqlite":
            sql = ops.RunSQL(_SQLITE_FEED_EVENT)
        else:
            await super().database_forward(app_label, old_state, new_state, state_editor)
            sql = ops.RunSQL(_POSTGRES_DROP_EVENT_CONSTRAINT)
        await sql.database_forward(app_label, old_state, new_state, state_editor)


class DropColumn(ops.RemoveField):
    """RemoveField's change of state, as one ALTER TABLE: on SQLite Tortoise's own rebuilds
    the channel table, losing its indexes, and the DROP TABLE of the rebuild deletes (by
    cascade) every webhook fallback that references a channel."""

    async def database_forward(
        self, app_label: str, old_state: Any, new_state: Any, state_editor: Any = None
    ) -> None:
        if not state_editor:
            return
        sql = f"ALTER TABLE channel DROP COLUMN {self.name}"
        await ops.RunSQL(sql).database_forward(app_label, old_state, new_state, state_editor)


class NewDescription(ops.AlterField):
    """AlterField's change of state only: the renamed column's description, which the
    database does not hold on SQLite (Tortoise's own AlterField rebuilds the table there)."""

    async def database_forward(
        self, app_label: str, old_state: Any, new_state: Any, state_editor: Any = None
    ) -> None:
        return None


#: Ingestion and receipts find a feed's channels.
CHANNEL_FEED_INDEX = 'CREATE INDEX "idx_channel_feed_id" ON "channel" ("feed_id")'


class Migration(migrations.Migration):
    dependencies = [('models', '0004_webhook_fallbacks')]

    initial = False

    operations = [
        ops.CreateModel(
            name='Feed',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('name', fields.CharField(unique=True, description='`<subscription type>:<organisation or user id>:<event types, comma-separated>` for a', max_length=512)),
                ('head', fields.BigIntField(default=0, description='Position of the newest event (0 before the first).')),
                ('last_event_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'feed', 'app': 'models', 'pk_attr': 'id', 'table_description': 'Events of one routing, numbered once: 1, 2, 3 ... (`position`). Channels that route'},
            bases=['Model'],
        ),
        CreateFeedEvent(
            name='FeedEvent',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('feed', fields.ForeignKeyField('models.Feed', source_field='feed_id', db_constraint=True, to_field='id', related_name='events', on_delete=OnDelete.CASCADE)),
                ('position', fields.BigIntField()),
                ('event', fields.ForeignKeyField('models.ClaimEvent', source_field='event_id', db_index=True, db_constraint=False, to_field='event_id', related_name='positions', on_delete=OnDelete.CASCADE)),
                ('recorded_at', fields.DatetimeField(db_index=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'feed_event', 'app': 'models', 'unique_together': (('feed', 'position'),), 'pk_attr': 'id', 'table_description': 'Event `event` is number `position` on feed `feed`.'},
            bases=['Model'],
        ),
        ops.AddField(
            model_name='Channel',
            name='closed_position',
            field=fields.BigIntField(null=True, description="The feed's head when the channel was closed: later positions are not the channel's."),
        ),
        ops.AddField(
            model_name='Channel',
            name='feed',
            field=fields.ForeignKeyField('models.Feed', source_field='feed_id', null=True, db_index=True, description="The feed carrying the channel's events (NULL only while migration 0005 runs).", db_constraint=True, to_field='id', related_name='channels', on_delete=OnDelete.RESTRICT),
        ),
        AddFieldWithDefault(
            model_name='Channel',
            name='feed_offset',
            field=fields.BigIntField(default=0, description="The feed's head when the channel was created: later positions are the channel's."),
        ),
        ops.RenameField(model_name='Channel', old_name='last_event_at', new_name='closed_event_at'),
        NewDescription(
            model_name='Channel',
            name='closed_event_at',
            field=fields.DatetimeField(null=True, description="The newest event's time as of closing (an open channel's is its feed's).", auto_now=False, auto_now_add=False),
        ),
        # Nothing to undo: the columns it reads are dropped next.
        ops.RunSQL(BACKFILL, reverse_sql=ops.RunSQL.noop),
        DropColumn(model_name='Channel', name='head_sequence'),
        ops.RunSQL(CHANNEL_FEED_INDEX, reverse_sql=ops.RunSQL.noop),
        ops.DeleteModel(name='ChannelEvent'),
    ]
