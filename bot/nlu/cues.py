"""Cue words several capabilities' matchers look for: a fault or complaint, urgency, a contact with the customer.

They are vocabulary of the business rather than of one intent: a fault opens a ticket, but it also means a line
about NPS is not an NPS question, and a contact cue decides between logging a visit and opening a ticket.
"""

from __future__ import annotations

import re

URGENT = re.compile(r"紧急|加急|很急|十万火急|火急|急|urgent|马上|尽快|立刻|停产|停机|严重", re.I)
FAULT = re.compile(
    r"故障|坏了|坏掉|损坏|不能用|用不了|不好用|漏油|漏水|渗油|异响|报警|停机|停产|失灵|卡死|不工作|不转|出问题|有问题|问题|报错|维修|修一下|投诉|售后|"
    r"停了|停线|停工|破损|派工程师|派人|派个人|上门维修|来修"
)
CONTACT = re.compile(
    r"跟进|拜访|回访|走访|见了|见面|面谈|碰了|碰面|约了|约见|打了?电话|通了电话|电话沟通|电话联系|电话里|微信沟通|微信聊|微信上|"
    r"沟通|聊了|聊过|谈了|谈过|开会|开了会|发了|发过|去了|联系了|联系过|来访|参观|演示|交流|汇报|寄了|送了|拜会|"
    r"记录一下|记一下|记录|备注|答复|回复了|确认了|调试"
)
