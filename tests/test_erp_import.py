"""``crmbot import orders FILE`` streams the file: it is read a few thousand rows at a time, each read written in
its own transaction, and the rows of one order are never split between two reads. Killed midway, the rerun imports
what was left and nothing twice; run twice, the second adds nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bot.clock import Clock
from handlers.orders import import_orders
from models.customers import Customer
from models.orders import Order, OrderLine, OrderStatusChange, Repurchase
from tests.helpers import staff_member
from tests.test_reminders import customer
from tests.test_rules_engine import _crmbot, cli_env

NOW = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
CUSTOMERS = 50


async def test_an_orders_rows_stay_together_across_reads(start_app: Any, make_settings: Any, tmp_path: Path) -> None:
    client = await start_app(make_settings(), clock=Clock(NOW), run_scheduler=False, run_dispatcher=False)
    await customer("华为技术有限公司", await staff_member(name="张三", wecom="zhangsan"), "华为")
    sheet = tmp_path / "orders.csv"
    rows = ["order_no,customer,order_date,total,product,quantity,line_amount"]
    for month in range(1, 8):  # seven orders of three lines each, read three rows at a time
        rows += [f"SO-{month},华为,2026-{month:02d}-10,600,产品{k},1,200" for k in range(3)]
    rows.append("SO-1,华为,2026-01-10,600,产品9,1,200")  # SO-1 again, far from its rows
    sheet.write_text("\n".join(rows) + "\n", encoding="utf-8")

    report = await import_orders(client.app, sheet, rows_per_read=3)
    assert "新增 added 7" in report and "拒绝 rejected 1" in report and "第 23 行" in report, report
    assert await OrderLine.all().count() == 21
    window = await Repurchase.get(customer__name="华为技术有限公司")  # computed once, at the end
    assert (window.interval_days, window.order_count) == (30, 7)

    again = await import_orders(client.app, sheet, rows_per_read=5)
    assert "新增 added 0，已存在 already there 7" in again
    assert (await Order.all().count(), await OrderLine.all().count(), await OrderStatusChange.all().count()) == (
        7,
        21,
        7,
    )


async def test_an_import_killed_midway_is_finished_by_the_rerun_with_nothing_twice(
    start_app: Any, make_settings: Any, tmp_path: Path
) -> None:
    settings = make_settings()
    client = await start_app(settings, clock=Clock(NOW), run_scheduler=False, run_dispatcher=False)
    owner = await staff_member(name="张三", wecom="zhangsan")
    await Customer.bulk_create([Customer(name=f"客户{i:03d}", owner_id=owner.id) for i in range(CUSTOMERS)])
    total = 30_000
    sheet = tmp_path / "订单.csv"
    with sheet.open("w", encoding="utf-8") as out:
        out.write("订单号,客户名称,下单日期,状态,金额,产品,数量,行金额\n")
        for i in range(total):
            day = f"2025-{i % 12 + 1:02d}-{i % 28 + 1:02d}"
            out.write(f"SO-{i:06d},客户{i % CUSTOMERS:03d},{day},已发货,1000,液压缸,2,1000\n")

    # Killed as soon as the first rows are in.
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.cli",
        "import",
        "orders",
        str(sheet),
        env={**os.environ, **cli_env(settings)},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    while proc.returncode is None and await Order.all().count() == 0:  # noqa: ASYNC110 (another process writes)
        await asyncio.sleep(0.05)
    if proc.returncode is None:
        proc.send_signal(signal.SIGKILL)
    await proc.wait()
    done = await Order.all().count()
    assert done > 0 and await OrderStatusChange.all().count() == done  # whole reads only: orders with their steps
    await client.close()

    code, out, err = await _crmbot("import", "orders", str(sheet), env=cli_env(settings))
    assert code == 0, err
    assert f"新增 added {total - done}，已存在 already there {done}" in out, out
    await start_app(settings, clock=Clock(NOW), run_scheduler=False, run_dispatcher=False)
    assert (await Order.all().count(), await OrderStatusChange.all().count()) == (total, total)
    assert await OrderLine.all().count() == total
    assert await Repurchase.all().count() == CUSTOMERS
