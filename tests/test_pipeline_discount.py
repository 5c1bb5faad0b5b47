"""A playbook's required fields also stand before a discount: 张三 cannot ask for a discount on 华为 while its deal
in 报价 lacks the 需求分析 the 报价 playbook requires; he is told why and what to send, nothing is written, and once
the field is filled in the same request goes to his manager. A customer without an open deal is not held back,
and a customer he cannot see is refused without naming its deals."""

from __future__ import annotations

from typing import Any

from models.approvals import Approval
from models.audit import AuditLog
from models.opportunities import Opportunity
from tests.simulators.wecom import WeComSimulator
from tests.test_pipeline import PLAYBOOKS, open_office

REQUEST = "申请折扣 华为 9折 合同金额80万 追加订单"


async def test_a_discount_waits_for_the_fields_the_deals_stage_requires(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator
) -> None:
    office = await open_office(start_app, make_settings, wecom_sim, playbooks=PLAYBOOKS)
    opened = await office.on(0, "zhangsan", "商机 华为 数据中心UPS 80万 报价阶段")
    assert "报价阶段需要需求分析" in opened
    audited = await AuditLog.all().count()

    refused = await office.on(1, "zhangsan", REQUEST)
    assert "「华为技术有限公司」的商机「数据中心UPS」还缺少：需求分析，暂不能申请折扣" in refused
    assert "「商机 数据中心UPS 需求分析：…」" in refused
    assert await Approval.all().count() == 0 and await AuditLog.all().count() == audited
    assert wecom_sim.texts_to("wangjl") == []

    # 李四 cannot see 张三's customer: the request's own refusal, which names no deal.
    hidden = await office.on(1, "lisi", REQUEST)
    assert "不是您或您团队的客户" in hidden and "数据中心UPS" not in hidden

    # 比亚迪 has no open deal: nothing to qualify first.
    assert "已提交折扣申请" in await office.on(1, "lisi", "申请折扣 比亚迪 95折 合同金额10万 小单")

    assert "已更新商机「数据中心UPS」的需求分析" in await office.on(
        2, "zhangsan", "商机 华为 UPS 需求分析：机房扩容，200kVA"
    )
    assert (await Opportunity.get(name="数据中心UPS")).details == {"需求分析": "机房扩容，200kVA"}
    assert "已提交折扣申请" in await office.on(2, "zhangsan", REQUEST)
    assert await Approval.filter(customer__name="华为技术有限公司").count() == 1
