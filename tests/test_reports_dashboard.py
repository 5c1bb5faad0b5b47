"""The manager dashboard: 王经理 types 看板, opens the link on a phone (headless Chromium, WeCom's user agent) and
reads the health board, the funnel, the trends, the at-risk customers and the ranking; a forged link, an expired
one and one for another team's scope show nothing (403)."""

from __future__ import annotations

import os
import re
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

from bot.keys import SETTINGS
from handlers.reports.links import make_token
from models.staff import Staff
from tests.simulators.wecom import WeComSimulator
from tests.test_nps_browser import PHONE, Phone, chromium
from tests.test_reports import NOW, february, open_office

LINK = re.compile(r"https://crm\.example\.com(/dash/[0-9a-z.\-]+)")


async def test_the_manager_opens_the_dashboard_on_a_phone(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator, tmp_path: Path
) -> None:
    office = await open_office(start_app, make_settings, wecom_sim)
    await february(office)
    reply = await office.say(NOW, "wangjl", "看板")
    assert "7 天内有效" in reply
    m = LINK.search(reply)
    assert m is not None, reply
    url = str(office.client.make_url(m[1]))

    async with chromium(tmp_path / "profile") as devtools:
        phone = await Phone.open(devtools)
        await phone.goto(url)
        assert await phone.js("document.querySelector('h1').innerText") == "王经理团队看板"
        text = await phone.js("document.body.innerText")
        for section in ("健康度", "销售漏斗", "趋势", "风险客户（2）", "销售健康度排名", "数据质量"):
            assert section in text
        for metric in ("线索转化率", "客单价增长率", "售后响应时效", "NPS", "员工使用活跃度"):
            assert metric in await phone.js("document.getElementById('health').innerText")
        risky = await phone.js("document.getElementById('risky').innerText")
        assert risky.index("比亚迪股份有限公司") < risky.index("华为技术有限公司") and "宁德" not in risky
        ranking = await phone.js("document.getElementById('ranking').innerText")
        assert "张三" in ranking and "李四" in ranking and "赵六" not in ranking
        # the chart is served by the bot itself and drawn; nothing is wider than the phone
        assert await phone.js("document.querySelector('#trend img').complete") is True
        assert await phone.js("document.querySelector('#trend img').naturalWidth") > 0
        assert await phone.js("document.documentElement.scrollWidth") <= PHONE["width"]
        assert await phone.js("document.scripts.length") == 0
        await phone.screenshot(tmp_path / "dashboard.png")
    if os.environ.get("CRMBOT_KEEP_SCREENSHOTS"):
        shutil.copy(tmp_path / "dashboard.png", Path(os.environ["CRMBOT_KEEP_SCREENSHOTS"]) / "dashboard.png")


async def test_forged_expired_and_other_team_links_show_nothing(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator
) -> None:
    office = await open_office(start_app, make_settings, wecom_sim)
    await february(office)
    client = office.client
    m = LINK.search(await office.say(NOW, "wangjl", "看板"))
    assert m is not None
    good = m[1]

    page = await client.get(good)
    assert page.status == 200
    assert "比亚迪股份有限公司" in await page.text()
    policy = page.headers["Content-Security-Policy"]
    assert policy.startswith("default-src 'none'") and "img-src 'self'" in policy and "script-src" not in policy
    assert page.headers["Cache-Control"] == "no-store"
    chart = await client.get(f"{good}/chart.png")
    assert chart.status == 200 and chart.content_type == "image/png"
    assert (await chart.read()).startswith(b"\x89PNG\r\n\x1a\n")

    settings = client.app[SETTINGS]
    wang, liu, zhang = [await Staff.get(name=n) for n in ("王经理", "刘经理", "张三")]
    staff_id, scope, expires, signature = good.removeprefix("/dash/").split(".")
    forged_signature = f"{signature[:-1]}{'0' if signature[-1] != '0' else '1'}"
    refused = [
        f"/dash/{staff_id}.{scope}.{expires}.{forged_signature}",  # forged signature
        f"/dash/{staff_id}.{scope}.{int(expires) + 86400}.{signature}",  # a longer life, same signature
        f"/dash/{liu.id}.{scope}.{expires}.{signature}",  # another staff member, same signature
        f"/dash/{make_token(settings, liu, f'team-{wang.id}', NOW)}",  # 刘经理 signed into 王经理's team
        f"/dash/{make_token(settings, zhang, f'team-{wang.id}', NOW)}",  # a rep into the team
        f"/dash/{make_token(settings, zhang, 'company', NOW)}",  # a rep into the company
        "/dash/not-a-token",
        f"{good}x",
    ]
    for path in refused:
        for url in (path, f"{path}/chart.png"):
            answer = await client.get(url)
            assert answer.status == 403, url
            body = await answer.text()
            assert "比亚迪" not in body and "华为" not in body and "张三" not in body

    # 张三's own link shows his customers only.
    own = await client.get(f"/dash/{make_token(settings, zhang, f'own-{zhang.id}', NOW)}")
    assert own.status == 200
    body = await own.text()
    assert "华为技术有限公司" in body and "比亚迪" not in body

    # Seven days later the manager's link has expired.
    office.clock.set(NOW + timedelta(days=7))
    expired = await client.get(good)
    assert expired.status == 403 and "比亚迪" not in await expired.text()
