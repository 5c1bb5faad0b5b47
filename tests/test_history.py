"""Reading the history: in chat (``操作记录 华为``, ``谁改了华为的阶段``), newest first, within the reader's data
scope, and on the command line (``crmbot audit``) with filters, as text or JSON lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.driver import ConsoleChat, WeComChat
from tests.simulators.wecom import WeComSimulator
from tests.test_cli import crmbot
from tests.test_customers import demo


async def test_a_rep_reads_the_history_of_an_own_customer_newest_first(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator
) -> None:
    client = await demo(start_app, make_settings)
    chat = ConsoleChat(client.app)
    await chat.say("张三", "阶段 华为 方案", "等级 华为 B", "撤销")
    await WeComChat(client, deliver=True).say("wangjl", "华为 行业 通信")
    out = await chat.say("张三", "操作记录 华为")
    lines = out.strip().splitlines()
    assert lines[0] == "「华为技术有限公司」的操作记录（最新在前）："
    assert lines[1:5] == [
        "2026-11-18 10:00 王经理（企业微信）行业 通信设备 → 通信",
        "2026-11-18 10:00 张三（console）撤销了「等级 A → B」",
        "2026-11-18 10:00 张三（console）等级 A → B",
        "2026-11-18 10:00 张三（console）阶段 谈判 → 方案",
    ]
    assert lines[5:] == [lines[5]] and "系统（企业微信）识别到购买信号" in lines[5]  # the demo conversations


async def test_who_changed_the_stage(start_app: Any, make_settings: Any) -> None:
    client = await demo(start_app, make_settings)
    chat = ConsoleChat(client.app)
    await chat.say("张三", "阶段 华为 方案", "等级 华为 B")
    await chat.say("王经理", "阶段 华为 报价")
    out = await chat.say("张三", "谁改了华为的阶段")
    assert out.strip().splitlines() == [
        "「华为技术有限公司」阶段的修改记录（最新在前）：",
        "2026-11-18 10:00 王经理（console）阶段 方案 → 报价",
        "2026-11-18 10:00 张三（console）阶段 谈判 → 方案",
    ]
    assert "还没有付款方式的修改记录" in await chat.say("张三", "修改记录 华为 付款方式")


async def test_a_long_history_is_cut_with_a_count(start_app: Any, make_settings: Any) -> None:
    client = await demo(start_app, make_settings)
    chat = ConsoleChat(client.app)
    for grade in "BCBCBCBCBCBA":
        await chat.say("张三", f"等级 华为 {grade}")
    out = await chat.say("张三", "变更记录 华为")
    lines = out.strip().splitlines()
    # 12 changes and the buying signal the demo conversations raised: 10 shown, 3 more.
    assert len(lines) == 12 and lines[-1] == "……还有 3 条更早的记录。"
    assert lines[1].endswith("等级 B → A") and lines[10].endswith("等级 C → B")


async def test_history_stays_within_the_data_scope(start_app: Any, make_settings: Any) -> None:
    client = await demo(start_app, make_settings)
    chat = ConsoleChat(client.app)
    await chat.say("李四", "阶段 恒力液压 报价")
    refused = await chat.say("张三", "操作记录 恒力液压")
    assert refused.strip() == "「恒力液压有限公司」不是您或您团队的客户，无法查看操作记录。"
    assert "阶段 意向 → 报价" not in await chat.say("张三", "谁改了恒力液压的阶段")
    assert "李四（console）阶段 意向 → 报价" in await chat.say("王经理", "操作记录 恒力液压")


@pytest.fixture
def config_file(tmp_path: Path, database_url: str) -> Path:
    path = tmp_path / "audit.toml"
    path.write_text(f'[database]\nurl = "{database_url}"\n', encoding="utf-8")
    return path


def test_crmbot_audit_reads_the_log_with_filters(tmp_path: Path, config_file: Path) -> None:
    config = ["--config", str(config_file)]
    assert crmbot(tmp_path, "demo", *config).returncode == 0
    chat = crmbot(tmp_path, "chat", "--as", "zhangsan", *config, stdin="阶段 华为 方案\n撤销\n等级 比亚迪 B\n")
    assert chat.returncode == 0, chat.stderr
    assert crmbot(tmp_path, "chat", "--as", "wangjl", *config, stdin="阶段 华为 报价\n").returncode == 0

    every = crmbot(tmp_path, "audit", "--json", *config)
    assert every.returncode == 0, every.stderr
    rows = [json.loads(line) for line in every.stdout.splitlines()]
    assert [r["id"] for r in rows] == sorted((r["id"] for r in rows), reverse=True)  # newest first
    mine = crmbot(tmp_path, "audit", "--customer", "华为", "--actor", "张三", "--json", *config)
    rows = [json.loads(line) for line in mine.stdout.splitlines()]
    assert [(r["action"], r["summary"]) for r in rows] == [
        ("undo", "撤销了「阶段 谈判 → 方案」"),
        ("set_stage", "阶段 谈判 → 方案"),
    ]
    first = rows[1]
    assert first["actor"] == "张三" and first["platform"] == "console" and first["customer"] == "华为技术有限公司"
    assert (first["before"]["stage"], first["after"]["stage"]) == ("negotiation", "proposal")
    assert rows[0]["undo_of"] == first["id"]

    text = crmbot(tmp_path, "audit", "--customer", "华为技术有限公司", *config)
    assert text.returncode == 0, text.stderr
    assert text.stdout.splitlines()[0].endswith("王经理（console）  华为技术有限公司  阶段 谈判 → 报价")
    assert "比亚迪" not in text.stdout
    later = crmbot(tmp_path, "audit", "--since", "2999-01-01", *config)
    assert later.returncode == 0 and later.stdout == ""


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--since", "2026-13-01"], "--since must be ISO 8601"),
        (["--customer", "不存在的公司"], "unknown customer"),
        (["--actor", "不存在的人"], "unknown staff member"),
    ],
)
def test_crmbot_audit_refuses_bad_input_with_one_line(
    tmp_path: Path, config_file: Path, args: list[str], error: str
) -> None:
    assert crmbot(tmp_path, "demo", "--config", str(config_file)).returncode == 0
    done = crmbot(tmp_path, "audit", *args, "--config", str(config_file))
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and error in done.stderr
