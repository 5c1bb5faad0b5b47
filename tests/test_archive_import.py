"""An admin imports exported chat records (`crmbot import messages FILE.jsonl`) and searches them from the shell
(`crmbot search … --json`): a summary of what was imported, what was already there and which lines were rejected;
the keyword rules act once per message, and an import killed midway and run again stores every line once."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tortoise import connections
from tortoise.context import TortoiseContext

from bot.db import tortoise_config
from bot.demo import load_demo
from integrations.wecom.archive_file import import_jsonl
from models.audit import AuditLog
from models.customers import Customer

MS = 1_767_225_600_000  # 2026-01-01 00:00 UTC


def crmbot(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def line(i: int, sender: str, to: str, text: str, **extra: Any) -> str:
    record = {
        "msgid": f"imp{i}",
        "action": "send",
        "from": sender,
        "tolist": [to],
        "roomid": "",
        "msgtime": MS + i * 60_000,
        "msgtype": "text",
        "text": {"content": text},
    }
    record.update(extra)
    return json.dumps(record, ensure_ascii=False)


def test_import_then_search_from_the_shell(database_url: str, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[database]\nurl = "{database_url}"\n', encoding="utf-8")
    assert crmbot(config, "demo").returncode == 0
    lines = [
        line(1, "wmHL001", "lisi", "液压元件的密封圈能耐高温吗？"),  # 1
        line(2, "lisi", "wmHL001", "可以，耐高温材料做的，120 度没问题"),  # 2
        "{not json",  # 3
        line(3, "wmHL001", "lisi", "好的"),  # 4
        line(1, "wmHL001", "lisi", "液压元件的密封圈能耐高温吗？"),  # 5: the same message again
        json.dumps({"action": "send", "from": "wmHL001", "msgtime": MS}),  # 6: no msgid
        json.dumps({"msgid": "imp9", "from": "wmHL001", "tolist": [], "msgtime": "yesterday"}),  # 7
        "",  # 8: blank lines are skipped
        line(
            4, "wmHL001", "lisi", "", msgtype="file", file={"filename": "耐高温材料报价单.xlsx", "filesize": 2048}
        ),  # 9
        line(5, "wmHL001", "lisi", "坏了 X").replace(" X", " \\ud800"),  # 10: half a UTF-16 pair, escaped
    ]
    data = tmp_path / "export.jsonl"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8-sig")  # with the byte order mark Windows' editors write

    first = crmbot(config, "import", "messages", str(data))
    assert first.returncode == 0, first.stderr
    assert "imported: 4" in first.stdout and "duplicates: 1" in first.stdout and "rejected: 4" in first.stdout
    assert "line 3: invalid JSON" in first.stdout and "line 10: invalid JSON" in first.stdout
    assert "line 6: missing msgid" in first.stdout
    assert "line 7: missing or non-numeric msgtime" in first.stdout

    again = crmbot(config, "import", "messages", str(data))
    assert "imported: 0" in again.stdout and "duplicates: 5" in again.stdout

    found = crmbot(config, "search", "耐高温", "温", "不存在", "--json", "--as", "lisi", "--limit", "0")
    assert found.returncode == 0, found.stderr
    results = [json.loads(x) for x in found.stdout.splitlines()]
    assert [r["query"] for r in results] == ["耐高温", "温", "不存在"]
    assert [h["msgid"] for h in results[0]["hits"]] == ["imp4", "imp2", "imp1"]
    assert results[0]["total"] == 3
    hit = results[0]["hits"][1]
    assert hit["customer"] == "恒力液压有限公司" and hit["sender"] == "李四"
    assert hit["snippet"] == "可以，【耐高温】材料做的，120 度没问题"
    assert hit["time"].startswith("2026-01-01T08:02:00+08:00")
    assert results[1]["total"] == 3
    assert results[2] == {"query": "不存在", "total": 0, "total_estimated": False, "hits": []}

    scoped = crmbot(config, "search", "耐高温", "--json", "--as", "zhangsan", "--customer", "恒力液压")
    assert json.loads(scoped.stdout)["total"] == 0  # not zhangsan's customer
    limited = crmbot(
        config, "search", "耐高温", "--json", "--limit", "1", "--since", "2026-01-01T08:02", "--customer", "恒力"
    )
    result = json.loads(limited.stdout)
    assert (result["total"], [h["msgid"] for h in result["hits"]]) == (2, ["imp4"])
    bad = crmbot(config, "search", "耐高温", "--customer", "没有这个客户")
    assert bad.returncode == 2 and "unknown customer" in bad.stderr


LATER = 1_811_808_000_000  # 2027-06-01 00:00 UTC: newer than the demo's own conversations


async def rows(url: str, sql: str) -> list[dict[str, Any]]:
    async with TortoiseContext() as context:
        await context.init(config=tortoise_config(url))
        return list(await connections.get("default").execute_query_dict(sql))


def as_dict(value: Any) -> dict[str, Any]:
    return dict(json.loads(value) if isinstance(value, str) else value)


async def test_keyword_rules_act_once_per_message_in_a_bulk_import(database_url: str, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[database]\nurl = "{database_url}"\n\n[keywords]\nticket_mode = "open"\n', encoding="utf-8")
    assert crmbot(config, "demo").returncode == 0
    lines = [
        line(1, "wmHL001", "lisi", "设备坏了，一直漏油", msgtime=LATER + 60_000),
        line(2, "wmHL001", "lisi", "没有故障，谢谢", msgtime=LATER + 120_000),  # negated
        line(3, "lisi", "wmHL001", "坏了吗？我们马上派人", msgtime=LATER + 180_000),  # the rep's own words
        line(4, "wmHL001", "lisi", "又坏了，停机了", msgtime=LATER + 240_000),  # urgent
        line(5, "wmHW001", "zhangsan", "请报一下价格", msgtime=LATER + 300_000),
        line(6, "wmHW001", "zhangsan", "合同什么时候能签", msgtime=LATER + 360_000),
    ]
    data = tmp_path / "export.jsonl"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8-sig")  # with the byte order mark Windows' editors write

    first = crmbot(config, "import", "messages", str(data))
    assert "imported: 6" in first.stdout, first.stdout + first.stderr
    ticket_sql = (
        "SELECT t.id, t.description, t.priority FROM ticket t JOIN customer c ON c.id = t.customer_id"
        " WHERE c.name = '恒力液压有限公司' AND t.source = 'keyword'"
    )
    [ticket] = await rows(database_url, ticket_sql)
    assert ticket["description"] == "设备坏了，一直漏油\n又坏了，停机了" and ticket["priority"] == "urgent"
    [huawei] = await rows(database_url, "SELECT custom_fields FROM customer WHERE name = '华为技术有限公司'")
    assert as_dict(huawei["custom_fields"])["购买信号"]["msgid"] == "imp6"
    signals_sql = "SELECT after FROM audit_log WHERE action = 'buying_signal'"
    signals = [as_dict(r["after"])["custom_fields"]["购买信号"]["msgid"] for r in await rows(database_url, signals_sql)]
    assert [s for s in signals if s.startswith("imp")] == ["imp6"]
    pushes_sql = "SELECT dedupe_key FROM outbox WHERE dedupe_key LIKE 'keyword-ticket:%'"
    pushes = sorted(r["dedupe_key"] for r in await rows(database_url, pushes_sql))
    assert [p for p in pushes if p.startswith(f"keyword-ticket:{ticket['id']}:")]

    again = crmbot(config, "import", "messages", str(data))
    assert "imported: 0" in again.stdout and "duplicates: 6" in again.stdout
    assert await rows(database_url, ticket_sql) == [ticket]
    assert sorted(r["dedupe_key"] for r in await rows(database_url, pushes_sql)) == pushes
    assert len(await rows(database_url, signals_sql)) == len(signals)


async def test_an_import_killed_midway_and_run_again_stores_every_line_once(database_url: str, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[database]\nurl = "{database_url}"\n', encoding="utf-8")
    assert crmbot(config, "demo").returncode == 0
    n = 12_000  # more than two batches
    data = tmp_path / "export.jsonl"
    with data.open("w", encoding="utf-8") as f:
        for i in range(n):
            customer, rep = ("wmHW001", "zhangsan") if i % 2 else ("wmHL001", "lisi")
            f.write(line(i, customer, rep, f"第{i}号订单的耐高温材料", msgid=f"bulk{i}") + "\n")
    stored = "SELECT count(*) AS n FROM message WHERE msgid LIKE 'bulk%'"

    importing = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "bot.cli", "import", "messages", str(data), "--config", str(config)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    while True:  # until the first batch is committed (or, on a fast machine, the whole import is done)
        if importing.returncode is not None or (await rows(database_url, stored))[0]["n"] > 0:
            break
        await asyncio.sleep(0.05)
    if importing.returncode is None:
        importing.kill()  # SIGKILL: no clean-up of any kind
    await importing.wait()
    [before] = await rows(database_url, stored)

    again = crmbot(config, "import", "messages", str(data))
    assert f"imported: {n - before['n']}, 重复 duplicates: {before['n']}" in again.stdout, again.stdout
    assert (await rows(database_url, stored))[0]["n"] == n
    indexed = "SELECT count(*) AS n, count(DISTINCT message_id) AS m FROM search_doc"
    [index] = await rows(database_url, indexed)
    assert index["n"] == index["m"]
    everything = crmbot(config, "search", "号订单的耐高温", "--json", "--limit", "0")
    result = json.loads(everything.stdout)
    assert result["total"] == n == len({h["msgid"] for h in result["hits"]})
    assert [h["msgid"] for h in result["hits"][:2]] == [f"bulk{n - 1}", f"bulk{n - 2}"]


async def test_every_batch_of_a_long_import_gets_its_buying_signals_and_its_replies_counted(
    make_settings: Any, start_app: Any, tmp_path: Path
) -> None:
    """Customers ask for prices and their reps answer in every batch of a long import: each batch's keyword rules
    record its newest ask once, and the reps' answers move the customers' last follow-up to the newest one."""
    client = await start_app(make_settings())
    await load_demo(client.app)
    n, batch = 300, 100  # three batches
    pairs = (("wmHL001", "lisi", "恒力液压有限公司"), ("wmHW001", "zhangsan", "华为技术有限公司"))
    data = tmp_path / "export.jsonl"
    last: dict[str, dict[str, int]] = {name: {} for _, _, name in pairs}
    with data.open("w", encoding="utf-8") as f:
        for i in range(n):
            customer, rep, name = pairs[(i // 2) % 2]
            at = LATER + i * 1_000
            if i % 2 == 0:
                f.write(line(i, customer, rep, f"第{i}批能再报一下价格吗", msgid=f"ask{i}", msgtime=at) + "\n")
                last[name]["ask"] = i
            else:
                f.write(line(i, rep, customer, f"第{i}批的价格稍后发您", msgid=f"ans{i}", msgtime=at) + "\n")
                last[name]["answer"] = at

    summary = await import_jsonl(client.app, data, batch_size=batch)
    assert f"imported: {n}" in summary, summary
    for _, _, name in pairs:
        customer = await Customer.get(name=name)
        assert customer.custom_fields["购买信号"]["msgid"] == f"ask{last[name]['ask']}"
        assert customer.last_followup_at == datetime.fromtimestamp(last[name]["answer"] / 1000, UTC)
        signals = await AuditLog.filter(action="buying_signal", entity_id=str(customer.id)).values_list(
            "after", flat=True
        )
        asks = [m for m in (as_dict(a)["custom_fields"]["购买信号"]["msgid"] for a in signals) if m.startswith("ask")]
        # One signal a batch: each batch's newest ask, newer than the one before.
        mine = [i for i in range(0, n, 2) if pairs[(i // 2) % 2][2] == name]
        newest = [max(i for i in mine if i < end) for end in range(batch, n + 1, batch)]
        assert sorted(asks, key=lambda m: int(m[3:])) == [f"ask{i}" for i in newest]
