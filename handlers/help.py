"""Help: what the bot can do, generated from the capabilities' own help lines and examples."""

from __future__ import annotations

import re
import weakref

from bot.capability import Capability
from bot.context import Catalog, Context, Slots
from bot.nlu.reading import Reading, Result
from bot.types import IncomingMessage, Reply

capability = Capability("help")

HELP_WORDS = re.compile(
    r"^(?:帮助|help|菜单|menu|怎么用|使用说明|\?|？)(?:一下|吧|呢)?\s*(?:全部|所有|all)?\s*[?？!！。]*\s*$"
    r"|^(?:你|机器人|助手)?(?:能|可以|会)(?:做|干)?(?:什么|啥|哪些)|^(?:有)?(?:哪些|什么)(?:功能|命令|指令)|^(?:怎么|如何)(?:用|使用)",
    re.I,
)


# One chat message carries 2,048 bytes (WeCom cuts the rest): the overview stays within this and points to the rest.
OVERVIEW_BYTES = 1900
ALL_WORDS = re.compile(r"全部|所有|all", re.I)


@capability.command(HELP_WORDS, order=0)
def help_command(r: Reading, rest: str) -> Result:
    return "help", ({"all": True} if ALL_WORDS.search(r.text) else {})


@capability.intent("help", examples=["帮助"], order=0)
async def show_help(msg: IncomingMessage, slots: Slots, ctx: Context) -> Reply:
    """查看我能做什么"""
    intents, everything = ctx.bot.intents, bool(slots.get("all"))
    made = _HELP.setdefault(intents, {})
    if everything not in made:
        made[everything] = help_text(intents, everything)
    return Reply(made[everything])


# The help is the same for everyone and the most common first message: made once per app (catalog of intents).
_HELP: weakref.WeakKeyDictionary[Catalog, dict[bool, str]] = weakref.WeakKeyDictionary()


def help_text(intents: Catalog, everything: bool) -> str:
    """The help for an app's capabilities: the overview, or ``everything``."""
    lines = ["我是您的 CRM 助手，直接发消息就能更新客户资料。常用说法："]
    more = 0
    for spec in intents.ordered():
        if spec.name == "help" or not spec.examples:
            continue
        line = f"· {spec.help}：" + " / ".join(f"「{e}」" for e in spec.examples[: None if everything else 1])
        if not everything and len("\n".join([*lines, line]).encode()) > OVERVIEW_BYTES:
            more += 1
            continue
        lines.append(line)
    lines.append(f"还有 {more} 项功能，发送「帮助 全部」查看。" if more else "发送「帮助」随时查看本说明。")
    return "\n".join(lines)
