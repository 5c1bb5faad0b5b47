"""Search: find any fragment of the archived customer conversations a staff member may see (搜 耐高温材料,
搜 液压元件 客户:恒力液压 近3年, 谁提到过交期)."""

from __future__ import annotations

import re
from datetime import datetime

from tortoise import connections

from bot import search
from bot.capability import Capability
from bot.context import Context, Slots
from bot.display import local
from bot.nlu.reading import CUSTOMER_FILTER, Reading, Result
from bot.nlu.text import clean, cut
from bot.nlu.timeparse import iso
from bot.resolution import find_customer, not_found
from bot.types import IncomingMessage, Reply

capability = Capability("search")

SHOWN = 5
_SEARCH_CMD = re.compile(r"^(?:搜索|搜一下|搜搜|搜|查找|检索|search|grep|找聊天|查聊天记录|查记录)\s*[:：]?\s*", re.I)
# The query before 聊天记录 is bounded: unbounded, the lazy run is retried to the end of the line from every 搜 in it.
_SEARCH_FREE = re.compile(
    r"(?:搜|查找|检索|找找|找一下|查一下|查查|翻一下|翻翻)(?:一下)?(?P<q>.{1,100}?)(?:的)?(?:聊天记录|聊天|消息|记录|对话)"
    r"|(?:谁|哪些客户|哪个客户)(?:提到|说过|聊过|问过)(?:过)?(?P<q2>.+)"
    r"|(?:聊天记录|聊天|消息|记录)(?:里|中)?(?:搜|找|查)(?:一下)?(?P<q3>.+)"
)
# What may stand between the customer named first and the words to search for (比亚迪的聊天记录 交期).
_CHATS_OF = re.compile(r"\s*(?:的|那边的)?\s*(?:(?:聊天记录|聊天|消息|记录)(?:里|中)?)?(?=\s*\S)")
_SEARCH_TAIL = re.compile(r"(?:的|里的|中的)?(?:聊天记录|聊天|消息|记录|对话|内容)$")


def _filters(r: Reading, body: str) -> tuple[Slots, str]:
    """The customer (客户:名称) and time-range (近3年) filters of a search, and the text without them."""
    slots: Slots = {}
    m = CUSTOMER_FILTER.search(body)
    if m:
        slots["customer"] = r.vocabulary.stored_or_typed(m["c"])
        body = cut(body, m.span())
    since = r.times.find_since(body, r.now)
    if since:
        slots["since"] = iso(since.value)
        body = cut(body, (since.start, since.end))
    return slots, body


@capability.command(_SEARCH_CMD, order=70)
def search_command(r: Reading, rest: str) -> Result:
    slots, body = _filters(r, rest)
    # 搜一下比亚迪的聊天记录 交期, 搜索 华为 的 交期: the customer whose chats to search, named first.
    mentions = r.vocabulary.customers_in(body)
    if "customer" not in slots and mentions and mentions[0].start == 0:
        after = _CHATS_OF.match(body[mentions[0].end :])
        if after:
            slots.update(r.customer_slot(body))
            body = body[mentions[0].end + after.end() :]
    query = clean(_SEARCH_TAIL.sub("", body.strip()))
    if query:
        slots["query"] = query
    return "search", slots


@capability.phrase(order=90)
def search_phrase(r: Reading) -> Result | None:
    text = r.text
    if not (_SEARCH_FREE.search(text) or re.match(r"^(?:帮我|帮忙|请|麻烦)?(?:搜|搜索|查找|检索)", text)):
        return None
    slots, body = _filters(r, text)
    mentions = r.vocabulary.customers_in(body)
    if (
        mentions
        and "customer" not in slots
        and re.search(re.escape(mentions[0].surface) + r"\s*(?:的|那边|聊|里|中|说)", body)
    ):
        slots.update(r.customer_slot(body))
        body = cut(body, (mentions[0].start, mentions[0].end))
    q = _SEARCH_FREE.search(body)
    query = (q["q"] or q["q2"] or q["q3"] or "") if q else _SEARCH_CMD.sub("", body)
    query = re.sub(r"(?:有关|关于|相关的?|提到|里的|里|中的?|的聊天记录|聊天记录|记录|包含|含有)", " ", query)
    query = clean(re.sub(r"\s+", " ", query))
    query = re.sub(r"^(?:的|聊过|说过|提过)", "", query).strip()
    if query:
        slots["query"] = query
    return "search", slots


def _since(value: object, ctx: Context) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=ctx.settings.tz)


@capability.intent("search", examples=["搜 耐高温材料", "搜 液压元件 客户:恒力液压 近3年"], order=40)
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
    result = await search.search(
        conn,
        query,
        staff=ctx.staff,
        customer_id=customer_id,
        since=since,
        limit=SHOWN,
        count_bound=ctx.settings.search.count_bound,
    )
    where = f"（客户：{customer_name}）" if customer_name else ""
    if result.total == 0:
        return Reply(f"没有找到包含「{query}」的聊天记录{where}。")
    tz = ctx.settings.tz
    total = search.about(result.total) if result.estimated else f" {result.total} "
    lines = [f"找到{total}条包含「{query}」的聊天记录{where}，最新的在前："]
    for i, hit in enumerate(result.hits, start=1):
        lines.append(f"{i}. {hit.customer or '未关联客户'}｜{local(hit.time, tz)}｜{hit.sender}")
        lines.append(f"   {hit.snippet}")
    if result.total > len(result.hits):
        rest = result.total - len(result.hits)
        more = search.about(rest) if result.estimated else f" {rest} "
        lines.append(f"还有{more}条，可加「客户:名称」或「近3个月」缩小范围。")
    return Reply("\n".join(lines))
