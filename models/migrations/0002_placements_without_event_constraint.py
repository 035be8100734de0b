"""channel_event.event_id stops being a database foreign key (see models.event.ChannelEvent).

With the constraint, every claim event history.prune deleted made the database look for the
event's placements by event_id, which no index serves: a scan of the whole history per
expired event (SQLite: 2,000 expired events among 200,000 placements took 106 s, writers
locked out; PostgreSQL's cascade trigger does the same sequential scan).

Tortoise's own AlterField cannot be used: on SQLite it rebuilds the table without its unique
(channel_id, sequence) constraint and its index, and keeps the REFERENCES clause. So the
state change is Tortoise's and the SQL is written here, per database (its backend's name).
"""

from typing import Any

from tortoise import fields, migrations
from tortoise.fields.base import OnDelete
from tortoise.migrations import operations as ops

from claims_realtime.models.backends import backend_of

# SQLite cannot drop a constraint: rebuild the table (SQLite's documented procedure), as
# 0001 created it minus the REFERENCES clause, keeping ids and the AUTOINCREMENT counter.
_SQLITE = [
    """CREATE TABLE "new__channel_event" (
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "sequence" BIGINT NOT NULL,
    "recorded_at" TIMESTAMP NOT NULL,
    "channel_id" VARCHAR(72) NOT NULL REFERENCES "channel" ("id") ON DELETE CASCADE,
    "event_id" VARCHAR(128) NOT NULL,
    CONSTRAINT "uid_channel_eve_channel_c3fd74" UNIQUE ("channel_id", "sequence")
)""",
    'INSERT INTO "new__channel_event" ("id", "sequence", "recorded_at", "channel_id", "event_id") '
    'SELECT "id", "sequence", "recorded_at", "channel_id", "event_id" FROM "channel_event"',
    "DELETE FROM sqlite_sequence WHERE name = 'new__channel_event'",
    "INSERT INTO sqlite_sequence (name, seq) "
    "SELECT 'new__channel_event', seq FROM sqlite_sequence WHERE name = 'channel_event'",
    'DROP TABLE "channel_event"',
    'ALTER TABLE "new__channel_event" RENAME TO "channel_event"',
    'CREATE INDEX "idx_channel_eve_recorde_706576" ON "channel_event" ("recorded_at")',
]

# PostgreSQL named the constraint itself: look it up.
_POSTGRES = [
    """DO $$
DECLARE name text;
BEGIN
    SELECT conname INTO name FROM pg_constraint
    WHERE conrelid = 'channel_event'::regclass AND confrelid = 'claim_event'::regclass
      AND contype = 'f';
    IF name IS NOT NULL THEN
        EXECUTE format('ALTER TABLE channel_event DROP CONSTRAINT %I', name);
    END IF;
END $$""",
]


class DropEventConstraint(ops.AlterField):
    """AlterField's change of state, with the SQL above instead of Tortoise's."""

    async def database_forward(
        self, app_label: str, old_state: Any, new_state: Any, state_editor: Any = None
    ) -> None:
        if not state_editor:
            return
        sql = {"sqlite": _SQLITE, "postgres": _POSTGRES}[backend_of(state_editor.client).name]
        await ops.RunSQL(sql).database_forward(app_label, old_state, new_state, state_editor)

    async def database_backward(
        self, app_label: str, old_state: Any, new_state: Any, state_editor: Any = None
    ) -> None:
        raise NotImplementedError("the event_id constraint is not put back")


class Migration(migrations.Migration):
    dependencies = [("models", "0001_initial")]

    initial = False

    operations = [
        DropEventConstraint(
            model_name="ChannelEvent",
            name="event",
            field=fields.ForeignKeyField(
                "models.ClaimEvent",
                source_field="event_id",
                db_constraint=False,
                to_field="event_id",
                related_name="placements",
                on_delete=OnDelete.CASCADE,
            ),
        ),
    ]
