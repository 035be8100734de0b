"""The fallback webhooks: a channel's webhook settings and delivery cursor, and final failures."""

from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from tortoise.fields.base import OnDelete
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('models', '0003_channel_heads_in_the_row')]

    initial = False

    operations = [
        ops.CreateModel(
            name='WebhookKeyCheck',
            fields=[
                ('id', fields.IntField(primary_key=True, unique=True, db_index=True)),
                ('sealed', fields.TextField(unique=False)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'webhook_key_check', 'app': 'models', 'pk_attr': 'id', 'table_description': "One row: a known text, sealed with the first process's WEBHOOK_SECRET_KEY."},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='WebhookFailure',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('channel', fields.ForeignKeyField('models.Channel', source_field='channel_id', db_constraint=True, to_field='id', related_name='webhook_failures', on_delete=OnDelete.CASCADE)),
                ('sequence', fields.BigIntField()),
                ('event_id', fields.CharField(max_length=128)),
                ('attempts', fields.IntField()),
                ('last_status', fields.IntField(null=True)),
                ('last_error', fields.CharField(null=True, max_length=200)),
                ('failed_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'webhook_failure', 'app': 'models', 'unique_together': (('channel', 'sequence'),), 'pk_attr': 'id', 'table_description': 'A webhook that failed for good (a 4xx other than 408/410/429, or retries exhausted).'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='WebhookFallback',
            fields=[
                ('channel', fields.OneToOneField('models.Channel', source_field='channel_id', primary_key=True, db_index=True, db_constraint=True, to_field='id', related_name='fallback', on_delete=OnDelete.CASCADE)),
                ('url', fields.CharField(max_length=2048)),
                ('after_seconds', fields.IntField()),
                ('event_types', fields.JSONField(description="Event types that fire, in canonical order (a subset of the channel's).", encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('secret', fields.TextField(description='The signing secret, encrypted (models.webhook_secrets.SecretBox): shown once, in clear.', unique=False)),
                ('cursor', fields.BigIntField(default=0, description='Every sequence up to this one is dealt with: sent, failed for good, or recorded')),
                ('attempts', fields.IntField(default=0, description='Attempts at the webhook after `cursor` so far, and when the first was made.')),
                ('first_attempt_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('next_attempt_at', fields.DatetimeField(null=True, description='Not before: the next retry, or when the next owed event falls due.', auto_now=False, auto_now_add=False)),
                ('last_attempt_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('last_status', fields.IntField(null=True, description="The receiver's last HTTP status (None: no answer, see last_error).")),
                ('last_error', fields.CharField(null=True, max_length=200)),
                ('lease_owner', fields.CharField(null=True, description="The process sending this channel's webhooks, until when (a lease, renewed as it goes).", max_length=64)),
                ('lease_until', fields.DatetimeField(null=True, db_index=True, auto_now=False, auto_now_add=False)),
                ('disabled_at', fields.DatetimeField(null=True, description='Set when the receiver answered 410 Gone: nothing more is sent until the next PUT.', auto_now=False, auto_now_add=False)),
                ('sent', fields.BigIntField(default=0)),
                ('failed', fields.BigIntField(default=0)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('updated_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'webhook_fallback', 'app': 'models', 'pk_attr': 'channel_id', 'table_description': "One channel's fallback webhook and where its delivery stands."},
            bases=['Model'],
        ),
    ]
