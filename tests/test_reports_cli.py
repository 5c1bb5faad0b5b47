"""The reports from the command line: ``crmbot parse`` shows the report intents, and ``crmbot jobs run --now`` on a
Monday at 09:00 pushes each manager's weekly report, once however often it runs."""

from __future__ import annotations

import json
from pathlib import Path

from tests.test_cli import config, crmbot, workdir

__all__ = ["config", "workdir"]  # the fixtures this module borrows

REPORT_LINES = {
    "健康度": ("health_report", {}),
    "上个月团队健康度": ("health_report", {"period": "2026-02"}),
    "团队周报": ("team_report", {"kind": "week"}),
    "月报": ("team_report", {"kind": "month"}),
    "数据质量怎么样": ("data_quality", {}),
    "NPS 排名": ("nps_ranking", {}),
    "NPS谁排第一": ("nps_ranking", {}),
    "本月NPS": ("nps_report", {"period": "2026-03"}),
    "风险客户": ("at_risk", {}),
    "哪些客户有流失风险": ("at_risk", {}),
    "看板": ("dashboard", {}),
    "给我看看看板": ("dashboard", {}),
    "华为的健康度": ("show_customer", {"customer": "华为技术有限公司"}),
    "健康度 华为": ("show_customer", {"customer": "华为技术有限公司"}),
    "华为的健康度不错，下周再聊": (
        "follow_up",
        {
            "customer": "华为技术有限公司",
            "content": "华为的健康度不错，下周再聊",
            "next_at": "2026-03-09T09:00:00+08:00",
        },
    ),
    "周一提醒我写周报": ("remind", {"at": "2026-03-09T09:00:00+08:00", "content": "写周报"}),
}


def test_parse_shows_the_report_intents(workdir: Path, config: Path) -> None:
    assert crmbot(workdir, "demo", "--config", str(config)).returncode == 0  # 华为 is a customer
    result = crmbot(
        workdir, "parse", *REPORT_LINES, "--now", "2026-03-02T10:00:00+08:00", "--json", "--config", str(config)
    )
    assert result.returncode == 0, result.stderr
    parsed = [json.loads(line) for line in result.stdout.splitlines()]
    assert {p["text"]: (p["intent"], p["slots"]) for p in parsed} == REPORT_LINES


def test_jobs_run_pushes_the_weekly_report_once(workdir: Path, config: Path, tmp_path: Path) -> None:
    staff = tmp_path / "staff.csv"
    staff.write_text(
        "姓名,企业微信账号,角色,上级\n王经理,wangjl,manager,\n张三,zhangsan,rep,王经理\n陈总,chenzong,director,\n",
        encoding="utf-8",
    )
    assert crmbot(workdir, "import", "staff", str(staff), "--config", str(config)).returncode == 0
    monday = ("jobs", "run", "--now", "2026-03-02T09:00:00+08:00", "--json", "--config", str(config))

    first = crmbot(workdir, *monday)
    assert first.returncode == 0, first.stderr
    weekly = [line for line in map(json.loads, first.stdout.splitlines()) if line["rule"] == "weekly_report"]
    assert [line["to"] for line in weekly] == ["王经理"]
    assert "王经理团队周报（02-23~03-01）" in weekly[0]["text"] and "/dash/" in weekly[0]["text"]

    again = crmbot(workdir, *monday)
    assert again.returncode == 0, again.stderr
    assert [line for line in map(json.loads, again.stdout.splitlines()) if line["rule"] == "weekly_report"] == []
