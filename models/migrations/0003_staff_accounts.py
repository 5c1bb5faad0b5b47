"""Platform accounts move out of ``staff`` into ``staff_account`` (one row per staff member and platform), keeping
every existing user id; approval steps name their card neutrally (``card_id``, ``card_handle``)."""

from tortoise import fields, migrations
from tortoise.fields.base import OnDelete
from tortoise.migrations import operations as ops

PLATFORM_COLUMNS = (("wecom", "wecom_userid"), ("dingtalk", "dingtalk_userid"))

# The accounts wait in a scratch table while the columns go: SQLite drops a column by rebuilding ``staff``, and
# dropping the old table would cascade to rows already in ``staff_account``.
SAVE = " UNION ALL ".join(
    f"SELECT id AS staff_id, '{platform}' AS platform, {column} AS user_id, created_at FROM staff"
    f" WHERE {column} IS NOT NULL AND {column} <> ''"
    for platform, column in PLATFORM_COLUMNS
)
COPY = [
    "INSERT INTO staff_account (staff_id, platform, user_id, created_at)"
    " SELECT staff_id, platform, user_id, created_at FROM staff_account_moving",
    "DROP TABLE staff_account_moving",
]
COPY_BACK = [
    f"UPDATE staff SET {column} = (SELECT a.user_id FROM staff_account a"
    f" WHERE a.staff_id = staff.id AND a.platform = '{platform}')"
    for platform, column in PLATFORM_COLUMNS
]


class Migration(migrations.Migration):
    dependencies = [("models", "0002_search")]

    initial = False

    operations = [
        ops.CreateModel(
            name="StaffAccount",
            fields=[
                ("id", fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                (
                    "staff",
                    fields.ForeignKeyField(
                        "models.Staff",
                        source_field="staff_id",
                        db_constraint=True,
                        to_field="id",
                        related_name="accounts",
                        on_delete=OnDelete.CASCADE,
                    ),
                ),
                ("platform", fields.CharField(max_length=16)),
                ("user_id", fields.CharField(max_length=64)),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={
                "table": "staff_account",
                "app": "models",
                "unique_together": (("platform", "user_id"), ("staff_id", "platform")),
                "pk_attr": "id",
                "table_description": "One staff member's user id on one platform: who a platform's sender is, and"
                " where to reach them.",
            },
            bases=["Model"],
        ),
        ops.RunSQL([f"CREATE TABLE staff_account_moving AS {SAVE}"], reverse_sql=COPY_BACK),
        ops.RemoveField(model_name="Staff", name="dingtalk_userid"),
        ops.RemoveField(model_name="Staff", name="wecom_userid"),
        ops.RunSQL(COPY, reverse_sql=[]),
        ops.RenameField(model_name="ApprovalStep", old_name="task_id", new_name="card_id"),
        ops.RenameField(model_name="ApprovalStep", old_name="response_code", new_name="card_handle"),
    ]
