"""``导出我的客户`` / ``导出客户`` / ``导出团队客户`` in chat: the customers the asker may see, as an Excel file.

The command is the whole line (a request, never a question: ``怎么导出客户？`` is not one), and a line that names a
known customer (a customer called 导出客户…) goes to free phrasing instead. The workbook is the customers sheet of
``crmbot export customers`` within the asker's data scope (``导出我的客户``: their own customers; ``导出客户``: a rep's
own, a manager's team's, everyone's for directors and admins; ``导出团队客户``: a manager's team), stored with
``bot.files`` and sent as a file: a file message on WeCom, a signed download link on DingTalk, a saved file at the
terminal. Reading only: nothing is written but the file. Past ``CHAT_LIMIT`` customers the reply points to
``crmbot export`` instead, so that building a company-wide workbook never holds up the messages handled with it.
"""

from __future__ import annotations

import re

from bot.context import Context, Slots
from bot.files import store_file
from bot.nlu.reading import Reading, Result
from bot.types import IncomingMessage, Reply
from handlers.exports.capability import capability
from handlers.exports.export import export_to_bytes, team_of
from handlers.exports.sheets import Filters
from handlers.pipeline.funnel import scope_of
from models.customers import Customer
from models.staff import Role

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
# The workbook is built while the message is handled, in its batch's transaction: past this many customers (a whole
# company's) that would hold up everyone's messages, so the reply points to ``crmbot export`` instead.
CHAT_LIMIT = 20_000
_EXPORT = re.compile(
    r"^(?:请|帮我|麻烦)?(?:导出|下载)(?P<whose>我的|我名下的?|团队的?|全部|所有)?客户"
    r"(?:列表|名单|清单|资料|数据|表格?)?(?:\s*(?:到|成|为)?\s*(?:excel|xlsx|表格))?\s*[。！!]?$",
    re.I,
)
WHOSE = {"我的": "mine", "我名下": "mine", "我名下的": "mine", "团队": "team", "团队的": "team"}


@capability.command(re.compile(r"^(?:请|帮我|麻烦)?(?:导出|下载)"), order=148)
def export_command(r: Reading, rest: str) -> Result | None:
    """The whole line asks for the export; anything else (a customer named 导出…, more words) is free phrasing."""
    m = _EXPORT.match(r.text)
    if m is None or r.customers:
        return None
    return "export_customers", {"whose": WHOSE.get(m["whose"] or "", "scope")}


@capability.intent("export_customers", examples=["导出我的客户", "导出团队客户"], order=148)
async def export_customers(msg: IncomingMessage, slots: Slots, ctx: Context) -> Reply:
    """导出客户到 Excel：销售导出自己的客户，主管导出团队的客户"""
    me, whose = ctx.staff, slots.get("whose", "scope")
    if whose == "team" and me.role == Role.REP:
        return Reply("团队客户只有主管可以导出。导出您自己名下的客户，请发送「导出我的客户」。")
    if whose == "mine":
        filters, label = Filters([me.id]), "我的"
    elif whose == "team" and me.role == Role.MANAGER:
        filters, label = Filters(await team_of(me)), f"{me.name}团队"
    else:
        scope = await scope_of(me)
        filters, label = Filters(scope.owner_ids), scope.label
    query = Customer.all() if filters.owner_ids is None else Customer.filter(owner_id__in=filters.owner_ids)
    count = await query.count()
    if not count:
        return Reply(
            "您名下还没有客户，没有可导出的内容。" if label == "我的" else f"{label}还没有客户，没有可导出的内容。"
        )
    if count > CHAT_LIMIT:
        return Reply(
            f"{label}客户共 {count} 位，太多了，无法在聊天中导出。请管理员在服务器上运行"
            " `crmbot export customers 文件.xlsx` 导出。"
        )
    data, _ = await export_to_bytes("customers", filters, ctx.settings.tz)
    day = ctx.now.astimezone(ctx.settings.tz).strftime("%Y%m%d")
    name = f"{label}客户_{day}.xlsx"
    files = ctx.settings.files
    sheet = await store_file(name, data, XLSX, now=ctx.now, keep_hours=files.keep_hours, using_db=ctx.conn)
    return Reply(f"已导出{label}客户 {count} 位，见文件「{name}」。", attachments=(sheet,))
