"""``导出我的客户`` in WeCom: the rep gets a confirmation and then the Excel file itself, holding their customers and
nobody else's; a manager gets the team's; a question about exporting, or a customer whose name starts with 导出, is
not an export."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import openpyxl

from bot.keys import BOT
from models.customers import Customer
from models.staff import Role
from tests.driver import ConsoleChat, DingTalkChat, WeComChat
from tests.helpers import staff_member


def customer_names(data: bytes) -> list[str]:
    book = openpyxl.load_workbook(io.BytesIO(data), read_only=True)
    try:
        rows = list(book.worksheets[0].iter_rows(values_only=True))
    finally:
        book.close()
    assert rows[0][0] == "客户名称"
    return [str(row[0]) for row in rows[1:]]


async def start(make_settings: Any, start_app: Any, wecom_sim: Any) -> WeComChat:
    client = await start_app(make_settings())
    manager = await staff_member(name="王经理", wecom="wangjl", role=Role.MANAGER)
    zhang = await staff_member(name="张三", wecom="zhangsan", role=Role.REP, manager=manager)
    li = await staff_member(name="李四", wecom="lisi", role=Role.REP, manager=manager)
    other = await staff_member(name="赵六", wecom="zhaoliu", role=Role.REP)
    for name, owner in (
        ("华为技术有限公司", zhang), ("比亚迪股份有限公司", zhang), ("恒力液压有限公司", li),
        ("宁德时代新能源", other), ("导出宝贸易有限公司", li),
    ):  # fmt: skip
        await Customer.create(name=name, owner_id=owner.id)
    await client.app[BOT].understanding.refresh()
    return WeComChat(client, wecom_sim, deliver=True)


async def test_a_rep_exports_their_customers_and_gets_the_file_in_wecom(
    make_settings: Any, start_app: Any, wecom_sim: Any
) -> None:
    chat = await start(make_settings, start_app, wecom_sim)
    await chat.say("zhangsan", "导出我的客户")

    [text, file] = wecom_sim.messages_to("zhangsan")
    assert text["msgtype"] == "text" and "已导出我的客户 2 位" in text["text"]["content"]
    assert file["msgtype"] == "file"
    [upload] = wecom_sim.media_to("zhangsan")
    assert upload.type == "file" and upload.filename.startswith("我的客户_") and upload.filename.endswith(".xlsx")
    assert sorted(customer_names(upload.data)) == ["华为技术有限公司", "比亚迪股份有限公司"]


async def test_a_manager_exports_the_team_and_a_rep_cannot(make_settings: Any, start_app: Any, wecom_sim: Any) -> None:
    chat = await start(make_settings, start_app, wecom_sim)
    await chat.say("wangjl", "导出团队客户")
    [upload] = wecom_sim.media_to("wangjl")
    assert sorted(customer_names(upload.data)) == sorted(
        ["华为技术有限公司", "恒力液压有限公司", "导出宝贸易有限公司", "比亚迪股份有限公司"]
    )

    await chat.say("lisi", "导出团队客户")
    assert wecom_sim.media_to("lisi") == []
    assert "只有主管可以导出" in chat.sent_to("lisi")[-1]
    await chat.say("lisi", "导出客户")
    [own] = wecom_sim.media_to("lisi")
    assert sorted(customer_names(own.data)) == sorted(["导出宝贸易有限公司", "恒力液压有限公司"])


async def test_questions_and_a_customer_named_like_the_command_are_not_exports(
    make_settings: Any, start_app: Any, wecom_sim: Any
) -> None:
    chat = await start(make_settings, start_app, wecom_sim)
    for text in ("怎么导出客户？", "导出客户吗", "导出宝贸易有限公司"):
        await chat.say("lisi", text)
    assert wecom_sim.media_to("lisi") == []
    assert not any("已导出" in text for text in chat.sent_to("lisi"))
    assert any("导出宝贸易有限公司" in text for text in chat.sent_to("lisi"))  # the customer's profile


async def test_a_rep_without_customers_is_told_so(make_settings: Any, start_app: Any, wecom_sim: Any) -> None:
    chat = await start(make_settings, start_app, wecom_sim)
    await staff_member(name="新人", wecom="xinren", role=Role.REP)
    await chat.say("xinren", "导出我的客户")
    assert chat.sent_to("xinren") == ["您名下还没有客户，没有可导出的内容。"]
    assert wecom_sim.media_to("xinren") == []


async def test_on_dingtalk_the_export_is_a_link_that_downloads_the_workbook(
    make_settings: Any, start_app: Any, dingtalk_sim: Any
) -> None:
    settings = make_settings(dingtalk=dingtalk_sim.settings(), server={"public_url": "https://crm.example.com"})
    client = await start_app(settings, clock=dingtalk_sim.clock, run_dispatcher=False, run_scheduler=False)
    rep = await staff_member(name="张三", dingtalk="ding_zhangsan", role=Role.REP)
    other = await staff_member(name="李四", dingtalk="ding_lisi", role=Role.REP)
    await Customer.create(name="华为技术有限公司", owner_id=rep.id)
    await Customer.create(name="恒力液压有限公司", owner_id=other.id)
    await client.app[BOT].understanding.refresh()
    await DingTalkChat(client, dingtalk_sim).say("ding_zhangsan", "导出我的客户")

    [message] = dingtalk_sim.delivered_to("ding_zhangsan")
    assert "已导出我的客户 1 位" in message.text
    [(name, url)] = message.links
    assert name.startswith("我的客户_") and url.startswith("https://crm.example.com/files/")
    parts = urlsplit(url)
    resp = await client.get(f"{parts.path}?{parts.query}")
    assert resp.status == 200
    assert customer_names(await resp.read()) == ["华为技术有限公司"]


async def test_at_the_terminal_the_export_is_saved_and_its_path_printed(
    make_settings: Any, start_app: Any, tmp_path: Path
) -> None:
    client = await start_app(make_settings(files={"console_dir": str(tmp_path)}), run_dispatcher=False)
    rep = await staff_member(name="张三", role=Role.REP)
    await Customer.create(name="华为技术有限公司", owner_id=rep.id)
    printed = await ConsoleChat(client.app).say(rep, "导出我的客户")
    [line] = [line for line in printed.splitlines() if line.startswith("文件已保存：")]
    saved = Path(line.removeprefix("文件已保存："))
    assert saved.parent.name == tmp_path.name
    assert customer_names(await asyncio.to_thread(saved.read_bytes)) == ["华为技术有限公司"]


async def test_asked_in_a_dingtalk_group_the_link_goes_to_the_asker_alone(
    make_settings: Any, start_app: Any, dingtalk_sim: Any
) -> None:
    settings = make_settings(dingtalk=dingtalk_sim.settings())
    client = await start_app(settings, clock=dingtalk_sim.clock, run_dispatcher=False, run_scheduler=False)
    rep = await staff_member(name="张三", dingtalk="ding_zhangsan", role=Role.REP)
    await Customer.create(name="华为技术有限公司", owner_id=rep.id)
    await client.app[BOT].understanding.refresh()
    await DingTalkChat(client, dingtalk_sim).say("ding_zhangsan", "导出我的客户", group=True)

    [message] = dingtalk_sim.delivered_to("ding_zhangsan")
    assert message.via == "batch_send" and message.conversation_id == ""
    assert len(message.links) == 1
