"""The nightly pull from 用友T+ (its simulator), through ``crmbot erp sync`` as the admin runs it: every change is
read from the cursor page by page and written once; a failure while a page is being written (after it was fetched)
leaves the cursor on that page, and the rerun loses nothing and doubles nothing; a flaky T+ is retried with backoff;
the scheduled check pulls once the night's time has passed."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot import sql
from bot.clock import Clock
from bot.keys import BOT, OUTBOX
from bot.orderflow import ORDER_FEEDS, nightly
from models.orders import Order, OrderFeedCursor, OrderLine, OrderStatusChange
from models.staff import Role
from tests.helpers import staff_member
from tests.simulators.tplus import TplusSimulator
from tests.test_reminders import customer
from tests.test_rules_engine import _crmbot, cli_env

NOW = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
CRASH_SQLITE = (
    "CREATE TRIGGER crash BEFORE INSERT ON customer_order WHEN NEW.order_no = 'SO-3'"
    " BEGIN SELECT RAISE(ABORT, 'disk gone'); END"
)
CRASH_POSTGRES = [
    "CREATE FUNCTION crash() RETURNS trigger AS $$ BEGIN IF NEW.order_no = 'SO-3' THEN"
    " RAISE EXCEPTION 'disk gone'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql",
    "CREATE TRIGGER crash BEFORE INSERT ON customer_order FOR EACH ROW EXECUTE FUNCTION crash()",
]
RECOVER = {False: ["DROP TRIGGER crash"], True: ["DROP TRIGGER crash ON customer_order", "DROP FUNCTION crash()"]}


@pytest.fixture
async def tplus(aiohttp_server: Callable[..., Any]) -> TplusSimulator:
    sim = TplusSimulator()
    server = await aiohttp_server(sim.app())
    sim.url = str(server.make_url("")).rstrip("/")
    return sim


def changes(sim: TplusSimulator) -> None:
    """Five changes of three orders, two per page."""
    sim.add("SO-1", "华为技术有限公司", "已下单", "2026-11-28T09:00:00+08:00")
    sim.add(
        "SO-2",
        "华为",
        "已下单",
        "2026-11-28T09:00:00+08:00",
        amount=800,
        details=[("泵", 2, 500), ("阀", 3, 300)],
        inventory_class="泵阀",
    )
    sim.add("SO-1", "华为技术有限公司", "已发货", "2026-11-29T10:00:00+08:00", waybill="SF100")
    sim.add("SO-3", "华为", "已下单", "2026-11-30T08:00:00+08:00")
    details = [("泵", 2.0, 500.0), ("阀", 3.0, 300.0)]
    sim.add(
        "SO-2", "华为", "包装待发", "2026-11-30T09:00:00+08:00", amount=800, details=details, inventory_class="泵阀"
    )


async def state() -> tuple[list[tuple[str, str]], str]:
    steps = await OrderStatusChange.all().order_by("id").values_list("order__order_no", "status")
    cursor = await OrderFeedCursor.get_or_none(feed="tplus")
    return [(str(o), str(s)) for o, s in steps], cursor.position if cursor else ""


async def _sql(statements: list[str]) -> None:
    for statement in statements:
        await sql.default().execute_script(statement)


async def test_a_crash_while_a_page_is_written_loses_nothing_and_doubles_nothing(
    start_app: Any, make_settings: Any, tplus: TplusSimulator
) -> None:
    settings = make_settings(tplus=tplus.settings(), erp={"retry_backoff_seconds": 0})
    client = await start_app(settings, clock=Clock(NOW), run_scheduler=False, run_dispatcher=False)
    await staff_member(name="赵管理", wecom="zhaoadmin", role=Role.ADMIN)
    await customer("华为技术有限公司", await staff_member(name="张三", wecom="zhangsan"), "华为")
    postgres = sql.is_postgres()
    await _sql(CRASH_POSTGRES if postgres else [CRASH_SQLITE])
    await client.close()
    changes(tplus)
    env = {**cli_env(settings), "CRMBOT_TPLUS__API_BASE": tplus.url, "CRMBOT_TPLUS__APP_KEY": tplus.app_key}
    env |= {"CRMBOT_TPLUS__APP_SECRET": tplus.app_secret, "CRMBOT_TPLUS__PAGE_SIZE": "2"}
    env |= {"CRMBOT_ERP__RETRY_BACKOFF_SECONDS": "0", "CRMBOT_ERP__SYNC_BATCH_EVENTS": "2"}  # a page a commit

    code, _, err = await _crmbot("erp", "sync", env=cli_env(settings))  # no [tplus] configured
    assert code == 2 and "no ERP feed configured" in err
    code, _, err = await _crmbot("erp", "sync", "--since", "last week", env=env)
    assert code == 2 and "ISO 8601" in err

    code, out, err = await _crmbot("erp", "sync", env=env)
    assert code == 1, err
    assert "未完成" in out and "disk gone" in out

    client = await start_app(settings, clock=Clock(NOW), run_scheduler=False, run_dispatcher=False)
    steps, position = await state()
    # The first page was committed with its cursor; the second (SO-1 shipped, SO-3) was fetched but never written.
    assert steps == [("SO-1", "placed"), ("SO-2", "placed")]
    assert position == "2026-11-28T09:00:00+08:00|2"
    await _sql(RECOVER[postgres])
    await client.close()

    code, out, err = await _crmbot("erp", "sync", env=env)
    assert code == 0, err
    assert "完成" in out and "新订单 1 个" in out and "新状态 3 条" in out

    client = await start_app(settings, clock=Clock(NOW), run_scheduler=False, run_dispatcher=False)
    steps, position = await state()
    assert sorted(steps) == [
        ("SO-1", "placed"),
        ("SO-1", "shipped"),
        ("SO-2", "packed"),
        ("SO-2", "placed"),
        ("SO-3", "placed"),
    ]
    assert position == "2026-11-30T09:00:00+08:00|5"
    so1 = await Order.get(order_no="SO-1")
    assert (so1.status, so1.tracking_no, await Order.all().count()) == ("shipped", "SF100", 3)
    # A third run reads nothing new and writes nothing.
    await client.close()
    code, out, _ = await _crmbot("erp", "sync", env=env)
    assert code == 0 and "新状态 0 条" in out
    await start_app(settings, clock=Clock(NOW), run_scheduler=False, run_dispatcher=False)
    assert (await state())[0] == steps


async def test_a_flaky_tplus_is_retried_and_the_night_pull_runs_once(
    start_app: Any, make_settings: Any, tplus: TplusSimulator, wecom_sim: Any
) -> None:
    clock = Clock(NOW)  # 10:00 in Shanghai; the pull is due at 02:00
    settings = make_settings(tplus=tplus.settings(), erp={"retry_backoff_seconds": 0, "fetch_attempts": 3})
    client = await start_app(settings, clock=clock, run_scheduler=False, run_dispatcher=False)
    app = client.app
    await staff_member(name="赵管理", wecom="zhaoadmin", role=Role.ADMIN)
    await customer("华为技术有限公司", await staff_member(name="张三", wecom="zhangsan"), "华为")
    changes(tplus)
    [feed] = app[ORDER_FEEDS]

    tplus.fail_next = 2  # the first two calls fail, the third is answered
    summary = await nightly(app[BOT], feed)
    assert summary is not None and not summary.error and summary.pages == 3
    assert len((await state())[0]) == 5
    assert await OrderLine.filter(product_line="泵阀").count() == 2  # T+'s 存货分类 is the product line
    assert await nightly(app[BOT], feed) is None  # not again the same night
    clock.set(NOW + timedelta(hours=15, minutes=59))  # 01:59 the next night
    assert await nightly(app[BOT], feed) is None
    tplus.add("SO-3", "华为", "已发货", "2026-12-02T01:00:00+08:00", waybill="SF300")
    tplus.revoke_tokens()  # the token expired in between: signed in again
    clock.set(NOW + timedelta(hours=16))
    summary = await nightly(app[BOT], feed)
    assert summary is not None and summary.applied.statuses == 1
    assert (await Order.get(order_no="SO-3")).tracking_no == "SF300"

    tplus.fail_next = 10
    clock.set(NOW + timedelta(days=1, hours=16))
    summary = await nightly(app[BOT], feed)
    assert summary is not None and "503" in summary.error
    assert len(tplus.requests) == 3 + 2 + 3  # three pages; refused with the old token, then read; three failures
    assert await nightly(app[BOT], feed) is None  # tried tonight: the admin hears, the next try is tomorrow
    await app[OUTBOX].drain()
    told = wecom_sim.texts_to("zhaoadmin")
    assert len(told) == 3 and "新状态 5 条" in told[0] and "未完成" in told[-1] and "未完成" not in told[1]
