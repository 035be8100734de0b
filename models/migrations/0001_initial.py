from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from claims_realtime.models.channel import ChannelStatus, SubscriptionType
from claims_realtime.models.fields import JSONTextField
from tortoise.fields.base import OnDelete
from tortoise import fields

class Migration(migrations.Migration):
    initial = True

    operations = [
        ops.CreateModel(
            name='Channel',
            fields=[
                ('id', fields.CharField(primary_key=True, unique=True, db_index=True, description='`chan_` + random lowercase alphanumerics from a CSPRNG.', max_length=72)),
                ('subscription_type', fields.CharEnumField(description='ORGANISATION_CLAIMS: organisation_claims\nUSER_CLAIMS: user_claims', enum_type=SubscriptionType, max_length=32)),
                ('organisation_id', fields.CharField(null=True, db_index=True, description='Set on organisation channels only.', max_length=64)),
                ('user_id', fields.CharField(db_index=True, description='The coordinator (organisation channels) or claimant (user channels).', max_length=64)),
                ('event_types', fields.JSONField(description='Event types delivered on this channel, in canonical order.', encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('status', fields.CharEnumField(default=ChannelStatus.CONNECTED, description='CONNECTED: connected\nDISCONNECTED: disconnected\nCLOSED: closed', enum_type=ChannelStatus, max_length=16)),
                ('token_hash', fields.CharField(description='SHA-256 of the channel token (the token itself is shown once, at creation).', max_length=64)),
                ('created_at', fields.DatetimeField(db_index=True, auto_now=False, auto_now_add=False)),
                ('closed_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('reconnected_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('last_event_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('head_sequence', fields.BigIntField(default=0, description='Sequence of the newest event recorded on the channel (0 before the first).')),
                ('confirmed_sequence', fields.BigIntField(null=True, description='Highest sequence the client confirmed (ack), if it ever did.')),
                ('delivered_sequence', fields.BigIntField(null=True, description="Highest sequence the server wrote to one of the channel's sockets.")),
            ],
            options={'table': 'channel', 'app': 'models', 'pk_attr': 'id', 'table_description': 'A subscription channel and its delivery positions.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='ClaimEvent',
            fields=[
                ('event_id', fields.CharField(primary_key=True, unique=True, db_index=True, description="The publisher's idempotency key (or a server-assigned `evt_...`).", max_length=128)),
                ('event_type', fields.CharField(max_length=32)),
                ('claim_id', fields.CharField(max_length=64)),
                ('organisation_id', fields.CharField(max_length=64)),
                ('user_id', fields.CharField(description="The claim's owner.", max_length=64)),
                ('actor_id', fields.CharField(null=True, max_length=64)),
                ('occurred_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('recorded_at', fields.DatetimeField(db_index=True, auto_now=False, auto_now_add=False)),
                ('data', JSONTextField(default=dict)),
                ('fingerprint', fields.CharField(description='SHA-256 of the event as submitted: a retry must match it to count as a duplicate.', max_length=64)),
                ('channel_count', fields.IntField(default=0, description='How many channels recorded it (answered again to a duplicate submission).')),
            ],
            options={'table': 'claim_event', 'app': 'models', 'pk_attr': 'event_id', 'table_description': 'One accepted claim event, stored once however many channels it reached.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='ChannelEvent',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('channel', fields.ForeignKeyField('models.Channel', source_field='channel_id', db_constraint=True, to_field='id', related_name='history', on_delete=OnDelete.CASCADE)),
                ('sequence', fields.BigIntField()),
                ('event', fields.ForeignKeyField('models.ClaimEvent', source_field='event_id', db_constraint=True, to_field='event_id', related_name='placements', on_delete=OnDelete.CASCADE)),
                ('recorded_at', fields.DatetimeField(db_index=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'channel_event', 'app': 'models', 'unique_together': (('channel', 'sequence'),), 'pk_attr': 'id', 'table_description': 'Event `event` is number `sequence` on channel `channel`.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Node',
            fields=[
                ('id', fields.CharField(primary_key=True, unique=True, db_index=True, max_length=40)),
                ('started_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('heartbeat_at', fields.DatetimeField(db_index=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'node', 'app': 'models', 'pk_attr': 'id', 'table_description': 'A running server process.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Presence',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('channel_id', fields.CharField(db_index=True, max_length=72)),
                ('node_id', fields.CharField(db_index=True, max_length=40)),
                ('sockets', fields.IntField(default=0)),
            ],
            options={'table': 'presence', 'app': 'models', 'unique_together': (('channel_id', 'node_id'),), 'pk_attr': 'id', 'table_description': '`sockets` sockets of channel `channel_id` are attached to node `node_id`.'},
            bases=['Model'],
        ),
    ]
