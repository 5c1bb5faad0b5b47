"""``GET /metrics``: what an operator's Prometheus sees after real traffic."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from models.staff import Role
from tests.helpers import deliver_all, post_wecom, staff_member, text_xml


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_metrics_count_callbacks_outbox_outcomes_and_handling_latency(
    make_settings: Any, start_app: Any, wecom_sim: Any
) -> None:
    client = await start_app(make_settings())
    await staff_member(name="张三", wecom="zhangsan", role=Role.REP)
    wecom_sim.known_users = {"zhangsan"}
    wecom_sim.fail_next(1, errcode=45009, endpoint="message/send")

    xml = text_xml("zhangsan", "帮助", 9001)
    assert (await post_wecom(client, xml)).status == 200
    assert (await post_wecom(client, xml)).status == 200  # WeCom's retry
    assert (await post_wecom(client, text_xml("ghost", "帮助", 9002))).status == 200  # not reachable: 81013
    forged = await client.post(
        "/wecom/callback",
        params={"msg_signature": "0" * 40, "timestamp": "1", "nonce": "2"},
        data="<xml><Encrypt>QUJD</Encrypt></xml>",
    )
    assert forged.status == 403
    assert (await client.post("/wecom/callback", data="not xml")).status == 400
    await deliver_all(client.app)

    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    got = samples(await resp.text())

    def callbacks(result: str) -> float:
        return got[("crmbot_callbacks_total", (("platform", "wecom"), ("result", result)))]

    assert (callbacks("ok"), callbacks("duplicate"), callbacks("403"), callbacks("400")) == (2, 1, 1, 1)
    assert got[("crmbot_callback_seconds_count", (("platform", "wecom"),))] == 5
    assert got[("crmbot_outbox_sent_total", ())] == 1
    assert got[("crmbot_outbox_failed_total", ())] == 1
    assert got[("crmbot_outbox_retried_total", ())] == 1  # the 45009
    assert got[("crmbot_outbox_pending", ())] == 0
    assert got[("crmbot_handling_seconds_count", (("platform", "wecom"),))] == 2
    assert got[("crmbot_http_requests_total", (("route", "/wecom/callback"), ("status", "403")))] == 1

    # a second scrape does not count the same messages again
    got = samples(await (await client.get("/metrics")).text())
    assert got[("crmbot_handling_seconds_count", (("platform", "wecom"),))] == 2


async def test_each_app_has_its_own_registry(make_settings: Any, start_app: Any) -> None:
    settings = make_settings()
    one = await start_app(settings)
    await post_wecom(one, text_xml("ghost", "帮助", 9100))
    text_one = await (await one.get("/metrics")).text()
    assert 'crmbot_callbacks_total{platform="wecom",result="ok"} 1.0' in text_one
    await one.close()
    two = await start_app(settings)
    text_two = await (await two.get("/metrics")).text()
    assert 'crmbot_callbacks_total{platform="wecom",result="ok"}' not in text_two
