"""An admin imports exported chat records (`crmbot import messages FILE.jsonl`) and searches them from the shell
(`crmbot search … --json`): a summary of what was imported, what was already there and which lines were rejected."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

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
    ]
    data = tmp_path / "export.jsonl"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")

    first = crmbot(config, "import", "messages", str(data))
    assert first.returncode == 0, first.stderr
    assert "imported: 4" in first.stdout and "duplicates: 1" in first.stdout and "rejected: 3" in first.stdout
    assert "line 3: invalid JSON" in first.stdout
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
