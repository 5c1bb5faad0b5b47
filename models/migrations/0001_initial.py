from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from models.customers import Stage
from models.outbox import OutboxStatus
from models.staff import Role
from models.tickets import TicketPriority, TicketStatus
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    initial = True

    operations = [
        ops.CreateModel(
            name='AuditLog',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('actor_id', fields.IntField(null=True)),
                ('actor_name', fields.CharField(default='', max_length=64)),
                ('action', fields.CharField(max_length=64)),
                ('entity', fields.CharField(max_length=32)),
                ('entity_id', fields.CharField(default='', max_length=64)),
                ('before', fields.JSONField(null=True, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('after', fields.JSONField(null=True, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('platform', fields.CharField(default='', max_length=16)),
                ('created_at', fields.DatetimeField(db_index=True, auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'audit_log', 'app': 'models', 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='OutboxMessage',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('dedupe_key', fields.CharField(unique=True, max_length=191)),
                ('platform', fields.CharField(max_length=16)),
                ('recipient', fields.CharField(description='platform user id, or a reply target', max_length=128)),
                ('staff_id', fields.IntField(null=True)),
                ('kind', fields.CharField(description='text | markdown | card | card_update', max_length=16)),
                ('payload', fields.JSONField(encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('status', fields.CharEnumField(default=OutboxStatus.PENDING, description='PENDING: pending\nSENDING: sending\nSENT: sent\nFAILED: failed', enum_type=OutboxStatus, max_length=16)),
                ('attempts', fields.IntField(default=0)),
                ('not_before', fields.DatetimeField(db_index=True, auto_now=False, auto_now_add=False)),
                ('lease_until', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('last_error', fields.TextField(default='', unique=False)),
                ('result', fields.JSONField(default=dict, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('sent_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'outbox', 'app': 'models', 'indexes': [Index(fields=['status', 'not_before'])], 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Staff',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('name', fields.CharField(unique=True, max_length=64)),
                ('wecom_userid', fields.CharField(null=True, unique=True, max_length=64)),
                ('dingtalk_userid', fields.CharField(null=True, unique=True, max_length=64)),
                ('role', fields.CharEnumField(default=Role.REP, description='REP: rep\nMANAGER: manager\nDIRECTOR: director\nADMIN: admin', enum_type=Role, max_length=16)),
                ('manager', fields.ForeignKeyField('models.Staff', source_field='manager_id', null=True, db_constraint=True, to_field='id', related_name='reports', on_delete=OnDelete.SET_NULL)),
                ('active', fields.BooleanField(default=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'staff', 'app': 'models', 'pk_attr': 'id', 'table_description': 'A member of the sales or service team, with ``manager`` the person escalations go to.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Customer',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('name', fields.CharField(unique=True, max_length=128)),
                ('aliases', fields.JSONField(default=list, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('industry', fields.CharField(default='', max_length=64)),
                ('grade', fields.CharField(default='', max_length=1)),
                ('stage', fields.CharEnumField(default=Stage.LEAD, db_index=True, description='LEAD: lead\nINTENT: intent\nPROPOSAL: proposal\nQUOTE: quote\nNEGOTIATION: negotiation\nWON: won\nLOST: lost', enum_type=Stage, max_length=16)),
                ('owner', fields.ForeignKeyField('models.Staff', source_field='owner_id', null=True, db_constraint=True, to_field='id', related_name='customers', on_delete=OnDelete.SET_NULL)),
                ('tags', fields.JSONField(default=list, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('custom_fields', fields.JSONField(default=dict, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('contract_end', fields.DateField(null=True, db_index=True)),
                ('last_followup_at', fields.DatetimeField(null=True, db_index=True, auto_now=False, auto_now_add=False)),
                ('next_followup_at', fields.DatetimeField(null=True, db_index=True, auto_now=False, auto_now_add=False)),
                ('won_at', fields.DatetimeField(null=True, db_index=True, auto_now=False, auto_now_add=False)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={'table': 'customer', 'app': 'models', 'pk_attr': 'id', 'table_description': 'A company we sell to. The ``owner`` is null while the customer sits in the public pool (公海).'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Contact',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('customer', fields.ForeignKeyField('models.Customer', source_field='customer_id', db_constraint=True, to_field='id', related_name='contacts', on_delete=OnDelete.CASCADE)),
                ('name', fields.CharField(default='', max_length=64)),
                ('phone', fields.CharField(default='', max_length=32)),
                ('role', fields.CharField(default='', description='decision-chain role, e.g. 决策人/采购/技术', max_length=32)),
                ('external_userid', fields.CharField(null=True, unique=True, max_length=64)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'contact', 'app': 'models', 'pk_attr': 'id', 'table_description': 'A person at the customer. The ``external_userid`` links their WeCom chats (ids starting wm or wo).'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='FollowUp',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('customer', fields.ForeignKeyField('models.Customer', source_field='customer_id', db_constraint=True, to_field='id', related_name='followups', on_delete=OnDelete.CASCADE)),
                ('staff', fields.ForeignKeyField('models.Staff', source_field='staff_id', null=True, db_constraint=True, to_field='id', related_name='followups', on_delete=OnDelete.SET_NULL)),
                ('content', fields.TextField(default='', unique=False)),
                ('channel', fields.CharField(default='chat', description='visit, phone, wechat, chat, email', max_length=16)),
                ('next_at', fields.DatetimeField(null=True, db_index=True, auto_now=False, auto_now_add=False)),
                ('source', fields.CharField(default='manual', description='manual, or archive for a real reply', max_length=16)),
                ('created_at', fields.DatetimeField(db_index=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'followup', 'app': 'models', 'indexes': [Index(fields=['customer_id', 'created_at'])], 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Message',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('platform', fields.CharField(max_length=16)),
                ('msgid', fields.CharField(max_length=128)),
                ('to_bot', fields.BooleanField(default=False)),
                ('sender', fields.CharField(description='platform user id of the sender', max_length=64)),
                ('receivers', fields.JSONField(default=list, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('room_id', fields.CharField(default='', max_length=128)),
                ('msgtype', fields.CharField(default='text', max_length=32)),
                ('text', fields.TextField(default='', unique=False)),
                ('payload', fields.JSONField(default=dict, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('staff', fields.ForeignKeyField('models.Staff', source_field='staff_id', null=True, db_constraint=True, to_field='id', related_name='messages', on_delete=OnDelete.SET_NULL)),
                ('customer', fields.ForeignKeyField('models.Customer', source_field='customer_id', null=True, db_constraint=True, to_field='id', related_name='messages', on_delete=OnDelete.SET_NULL)),
                ('sent_at', fields.DatetimeField(db_index=True, auto_now=False, auto_now_add=False)),
                ('received_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('handled_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'message', 'app': 'models', 'unique_together': (('platform', 'msgid'),), 'indexes': [Index(fields=['to_bot', 'handled_at']), Index(fields=['customer_id', 'sent_at'])], 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Ticket',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('customer', fields.ForeignKeyField('models.Customer', source_field='customer_id', db_constraint=True, to_field='id', related_name='tickets', on_delete=OnDelete.CASCADE)),
                ('title', fields.CharField(default='', max_length=200)),
                ('description', fields.TextField(default='', unique=False)),
                ('priority', fields.CharEnumField(default=TicketPriority.NORMAL, description='NORMAL: normal\nURGENT: urgent', enum_type=TicketPriority, max_length=16)),
                ('status', fields.CharEnumField(default=TicketStatus.OPEN, db_index=True, description='OPEN: open\nIN_PROGRESS: in_progress\nRESOLVED: resolved\nCLOSED: closed', enum_type=TicketStatus, max_length=16)),
                ('reporter', fields.ForeignKeyField('models.Staff', source_field='reporter_id', null=True, db_constraint=True, to_field='id', related_name='reported_tickets', on_delete=OnDelete.SET_NULL)),
                ('assignee', fields.ForeignKeyField('models.Staff', source_field='assignee_id', null=True, db_constraint=True, to_field='id', related_name='assigned_tickets', on_delete=OnDelete.SET_NULL)),
                ('source', fields.CharField(default='manual', description='manual, or keyword rule', max_length=16)),
                ('first_response_due', fields.DatetimeField(db_index=True, auto_now=False, auto_now_add=False)),
                ('first_responded_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('resolution', fields.TextField(default='', unique=False)),
                ('resolved_at', fields.DatetimeField(null=True, db_index=True, auto_now=False, auto_now_add=False)),
                ('revisit_due', fields.DatetimeField(null=True, db_index=True, auto_now=False, auto_now_add=False)),
                ('revisited_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('closed_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('created_at', fields.DatetimeField(db_index=True, auto_now=False, auto_now_add=False)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={'table': 'ticket', 'app': 'models', 'pk_attr': 'id', 'table_description': 'A service request. SLA times are stored when they are set, so timers are plain indexed queries.'},
            bases=['Model'],
        ),
    ]
