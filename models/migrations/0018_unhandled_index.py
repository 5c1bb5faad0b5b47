"""The index of messages by ``handled_at`` keeps the messages to the bot only (``WHERE to_bot``): the recovery
of unhandled messages is its one reader, and an archive's millions of imported rows no longer each add an entry
to it."""

from tortoise import migrations
from tortoise.indexes import PartialIndex
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    dependencies = [("models", "0017_gram_statistics")]

    initial = False

    operations = [
        ops.RemoveIndex(model_name="Message", fields=["to_bot", "handled_at"]),
        ops.AddIndex(
            model_name="Message",
            index=PartialIndex(fields=("handled_at",), name="message_to_bot_handled", condition={"to_bot": True}),
        ),
    ]
