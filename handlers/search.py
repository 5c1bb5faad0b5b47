"""Search: find any fragment of the archived customer conversations a staff member may see; and the archive's
``msgaudit_notify`` event, which starts a pull of the WeCom chat archive."""

from __future__ import annotations

import contextvars
from datetime import datetime

from tortoise import connections

from bot import search
from bot.intents import Context, IntentRouter, Slots
from bot.types import IncomingMessage, Reply
from handlers.customers import find_customer, local, not_found

router = IntentRouter()

SHOWN = 5


def _since(value: object, ctx: Context) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=ctx.settings.tz)


@router.intent("search", examples=["搜 耐高温材料", "搜 液压元件 客户:恒力液压 近3年"], order=40)
async def search_messages(msg: IncomingMessage, slots: Slots, ctx: Context) -> Reply:
    """搜索客户聊天记录（任意关键词，可加 客户:名称、近3个月）"""
    query = str(slots.get("query") or "").strip()
    if not query:
        return Reply("请告诉我要搜什么，例如「搜 耐高温材料」或「搜 液压元件 客户:恒力液压 近3年」。")
    customer_id = None
    customer_name = str(slots.get("customer") or "").strip()
    if customer_name:
        customer, suggestions = await find_customer(customer_name)
        if customer is None:
            return not_found(customer_name, suggestions)
        scope = await search.Scope.of(ctx.staff)
        if scope.customer_ids is not None and customer.id not in scope.customer_ids:
            return Reply(f"「{customer.name}」不是您或您团队的客户，无法搜索其聊天记录。")
        customer_id = customer.id
    since = _since(slots.get("since"), ctx)
    conn = ctx.conn or connections.get("default")
    result = await search.search(conn, query, staff=ctx.staff, customer_id=customer_id, since=since, limit=SHOWN)
    where = f"（客户：{customer_name}）" if customer_name else ""
    if result.total == 0:
        return Reply(f"没有找到包含「{query}」的聊天记录{where}。")
    tz = ctx.settings.tz
    lines = [f"找到 {result.total} 条包含「{query}」的聊天记录{where}，最新的在前："]
    for i, hit in enumerate(result.hits, start=1):
        lines.append(f"{i}. {hit.customer or '未关联客户'}｜{local(hit.time, tz)}｜{hit.sender}")
        lines.append(f"   {hit.snippet}")
    if result.total > len(result.hits):
        lines.append(f"还有 {result.total - len(result.hits)} 条，可加「客户:名称」或「近3个月」缩小范围。")
    return Reply("\n".join(lines))


@router.intent("event:msgaudit_notify", order=900)
async def archive_notify(msg: IncomingMessage, slots: Slots, ctx: Context) -> None:
    """会话存档有新消息：拉取"""
    for pull in ctx.bot.archive_pullers:
        # In its own task with a fresh context, i.e. outside this event's transaction: the pull commits batch by
        # batch on its own connections.
        contextvars.Context().run(ctx.bot.tasks.spawn, pull())
