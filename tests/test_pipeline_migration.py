"""An existing database gains opportunities at start-up: every customer beyond 潜在 gets one deal at its stage
(won deals closed when the customer was won), with its first stage in the history; customers at 潜在 get none."""

from __future__ import annotations

from pathlib import Path

from bot.db import migrate_database
from tests.test_migrations import _at, _query, _script, old_database

BEFORE_OPPORTUNITIES = "models.0003_staff_accounts"
CUSTOMERS = (
    "INSERT INTO staff (id, name, role, active, created_at) VALUES (1, '张三', 'rep', {true}, {now});"
    " INSERT INTO customer (id, name, aliases, industry, grade, stage, owner_id, tags, custom_fields, won_at,"
    " created_at, updated_at) VALUES"
    " (1, '华为技术有限公司', '[]', '', '', 'quote', 1, '[]', '{{}}', NULL, {now}, {now}),"
    " (2, '比亚迪股份有限公司', '[]', '', '', 'won', 1, '[]', '{{}}', {now}, {now}, {now}),"
    " (3, '三一重工股份有限公司', '[]', '', '', 'lead', NULL, '[]', '{{}}', NULL, {now}, {now})"
)


async def test_customers_beyond_lead_get_one_opportunity_each(tmp_path: Path) -> None:
    async with old_database(tmp_path) as db:
        url, true, now = db.url, db.true, db.now
        await _at(url, BEFORE_OPPORTUNITIES)
        await _script(url, CUSTOMERS.format(true=true, now=now))

        await migrate_database(url)

        deals = await _query(
            url, "SELECT customer_id, name, stage, owner_id, reached, closed_at FROM opportunity ORDER BY customer_id"
        )
        assert [(d["customer_id"], d["name"], d["stage"], d["owner_id"], d["reached"]) for d in deals] == [
            (1, "华为技术有限公司", "quote", 1, 3),
            (2, "比亚迪股份有限公司", "won", 1, 5),
        ]
        assert deals[0]["closed_at"] is None and deals[1]["closed_at"] is not None
        history = await _query(url, "SELECT opportunity_id, stage, left_at FROM opportunity_stage ORDER BY id")
        assert [(h["stage"], h["left_at"]) for h in history] == [("quote", None), ("won", None)]
