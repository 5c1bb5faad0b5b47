"""Orders get a status timeline, lines, logistics and invoice numbers, and a source: ``external_no`` becomes
``order_no`` (unique per source; existing orders come from source ``erp``), ``amount`` becomes ``total``, and every
existing order starts its timeline with 下单 on its order day. ERP event ids and order-feed cursors get tables.
Repurchase rows become windows (median interval, spread, predicted day, reminder); the old averages are dropped and
each customer's window is recomputed by their next order event or import."""

from tortoise import migrations
from tortoise.migrations import operations as ops
from models.orders import OrderStatus
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index
from tortoise.migrations.constraints import UniqueConstraint

# Every existing order was placed on its order day (local midnight is unknown here: midnight UTC).
START_SQLITE = (
    "INSERT INTO order_status_change (order_id, status, at, recorded_at)"
    " SELECT id, 'placed', order_date || ' 00:00:00+00:00', created_at FROM customer_order"
)
START_POSTGRES = (
    "INSERT INTO order_status_change (order_id, status, at, recorded_at)"
    " SELECT id, 'placed', order_date::timestamp AT TIME ZONE 'UTC', created_at FROM customer_order"
)
STATUS_AT = "UPDATE customer_order SET status_at = (SELECT at FROM order_status_change s WHERE s.order_id = customer_order.id)"


async def start_timelines(apps, schema_editor):  # type: ignore[no-untyped-def]
    postgres = str(schema_editor.client.capabilities.dialect) == "postgres"
    await schema_editor._run_sql(START_POSTGRES if postgres else START_SQLITE)
    await schema_editor._run_sql(STATUS_AT)


class Migration(migrations.Migration):
    dependencies = [('models', '0005_audit_undo')]

    initial = False

    operations = [
        ops.CreateModel(
            name='OrderEventSeen',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('source', fields.CharField(max_length=32)),
                ('event_id', fields.CharField(max_length=128)),
                ('received_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'order_event_seen', 'app': 'models', 'unique_together': (('source', 'event_id'),), 'pk_attr': 'id', 'table_description': 'An ERP event id already taken in: the same id again is a replay.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='OrderFeedCursor',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('feed', fields.CharField(unique=True, max_length=32)),
                ('position', fields.CharField(default='', max_length=128)),
                ('synced_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'order_feed_cursor', 'app': 'models', 'pk_attr': 'id', 'table_description': 'How far an order feed has been read (its own position text), committed with the rows read up to it.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='OrderLine',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('order', fields.ForeignKeyField('models.Order', source_field='order_id', db_constraint=True, to_field='id', related_name='lines', on_delete=OnDelete.CASCADE)),
                ('product', fields.CharField(max_length=128)),
                ('quantity', fields.DecimalField(max_digits=14, decimal_places=3)),
                ('amount', fields.DecimalField(max_digits=16, decimal_places=2)),
            ],
            options={'table': 'order_line', 'app': 'models', 'pk_attr': 'id', 'table_description': 'One line of an order: a product, how many, for how much (yuan).'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='OrderStatusChange',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('order', fields.ForeignKeyField('models.Order', source_field='order_id', db_constraint=True, to_field='id', related_name='timeline', on_delete=OnDelete.CASCADE)),
                ('status', fields.CharEnumField(description='PLACED: placed\nPRODUCTION: production\nPACKED: packed\nSHIPPED: shipped\nRECEIVED: received\nINVOICED: invoiced\nPAID: paid\nCANCELLED: cancelled', enum_type=OrderStatus, max_length=16)),
                ('at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('recorded_at', fields.DatetimeField(db_index=True, description='when we learned it (notices look at this)', auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'order_status_change', 'app': 'models', 'unique_together': (('order_id', 'status'),), 'indexes': [Index(fields=['status', 'at'])], 'pk_attr': 'id', 'table_description': 'An order reached a status at a moment: once per order and status, however often the ERP says so.'},
            bases=['Model'],
        ),
        ops.RenameField(model_name='Order', old_name='external_no', new_name='order_no'),
        ops.AlterField(model_name='Order', name='order_no', field=fields.CharField(max_length=64)),
        ops.AlterModelOptions(
            name='Order',
            options={'table': 'customer_order', 'app': 'models', 'unique_together': (('source', 'order_no'),), 'indexes': [Index(fields=['customer_id', 'order_date'])], 'pk_attr': 'id', 'table_description': 'One purchase by a customer, unique by (source, order no.); ``status`` is the latest of its timeline.'},
        ),
        ops.RenameField(
            model_name='Order',
            old_name='amount',
            new_name='total',
        ),
        ops.AddField(
            model_name='Order',
            name='carrier',
            field=fields.CharField(default='', db_default='', max_length=64),
        ),
        ops.AddField(
            model_name='Order',
            name='invoice_no',
            field=fields.CharField(default='', db_default='', max_length=64),
        ),
        ops.AddField(
            model_name='Order',
            name='source',
            field=fields.CharField(default='erp', db_default='erp', max_length=32),
        ),
        ops.AddField(
            model_name='Order',
            name='status',
            field=fields.CharEnumField(default=OrderStatus.PLACED, db_default='placed', description='PLACED: placed\nPRODUCTION: production\nPACKED: packed\nSHIPPED: shipped\nRECEIVED: received\nINVOICED: invoiced\nPAID: paid\nCANCELLED: cancelled', enum_type=OrderStatus, max_length=16),
        ),
        ops.AddField(
            model_name='Order',
            name='status_at',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='Order',
            name='tracking_no',
            field=fields.CharField(default='', db_default='', max_length=64),
        ),
        ops.AddConstraint(
            model_name='Order',
            constraint=UniqueConstraint(fields=('source', 'order_no'), name=None),
        ),
        ops.RunPython(start_timelines, reverse_code=None),
        ops.DeleteModel(name='Repurchase'),
        ops.CreateModel(
            name='Repurchase',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('customer', fields.OneToOneField('models.Customer', source_field='customer_id', db_constraint=True, to_field='id', related_name='repurchase', on_delete=OnDelete.CASCADE)),
                ('order_count', fields.IntField(default=0)),
                ('last_order_date', fields.DateField()),
                ('interval_days', fields.IntField()),
                ('spread_days', fields.IntField(default=0)),
                ('predicted_on', fields.DateField()),
                ('remind_at', fields.DatetimeField(db_index=True, description='start of the local day the owner is reminded', auto_now=False, auto_now_add=False)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={'table': 'repurchase', 'app': 'models', 'pk_attr': 'id', 'table_description': "A customer's reorder window: the typical interval (median) and its spread (median absolute deviation) of the"},
            bases=['Model'],
        ),
    ]
