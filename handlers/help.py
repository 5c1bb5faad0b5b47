"""Help: what the bot can do, generated from the handlers' own help lines and examples."""

from __future__ import annotations

from bot.intents import Context, IntentRouter, Slots
from bot.types import IncomingMessage, Reply

router = IntentRouter()


@router.intent("help", examples=["帮助"], order=0)
async def show_help(msg: IncomingMessage, slots: Slots, ctx: Context) -> Reply:
    """查看我能做什么"""
    lines = ["我是您的 CRM 助手，直接发消息就能更新客户资料。常用说法："]
    for spec in ctx.bot.intents.ordered():
        if spec.name == "help" or not spec.examples:
            continue
        lines.append(f"· {spec.help}：" + " / ".join(f"「{e}」" for e in spec.examples))
    lines.append("发送「帮助」随时查看本说明。")
    return Reply("\n".join(lines))
