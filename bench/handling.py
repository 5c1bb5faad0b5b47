"""Handling benchmark: the CPU one message costs from stored to handled (its reply queued in the outbox).

A real app (``running_app``: no HTTP listener, no dispatcher, so sends are not counted) on SQLite in a temporary
directory, with 50 reps and 300 customers. ``--messages`` messages addressed to the bot are stored first (the
inbox's statement, outside the measurement), then all are handed to handling at once and the process's CPU time
(every thread: the event loop and SQLite's) and wall time are measured until every one is handled. The messages
mix what reps send: 帮助, a follow-up on a customer, a customer's profile, a search, a line nobody understands
(``--help-only``: every message 帮助, as in ``bench.webhook``)::

    .venv/bin/python -m bench.handling --messages 3000
    .venv/bin/python -m bench.handling --messages 3000 --help-only

The file imports only what every version of the app has, so that the same measurement runs on an older checkout
(``PYTHONPATH=<checkout> .venv/bin/python bench/handling.py``) next to this one, in the same session.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime

REPS = 50
CUSTOMERS = 300
TEXTS = ("帮助", "跟进了{c}，下周三再聊报价", "{c}", "搜 报价", "今天天气不错")  # {c}: a customer's full name


async def one_run(url: str, messages: int, texts: tuple[str, ...]) -> tuple[float, float]:
    """(CPU seconds, wall seconds) to handle ``messages``."""
    from bot.app import load_settings
    from bot.cli import running_app
    from bot.inbox import store_bot_messages
    from bot.keys import BOT
    from bot.types import IncomingMessage
    from models.customers import Customer
    from models.messages import Message
    from models.staff import Role, Staff, StaffAccount

    settings = load_settings(os.devnull, database={"url": url})
    async with running_app(settings) as app:
        bot = app[BOT]
        reps = []
        for i in range(REPS):
            rep = await Staff.create(name=f"销售{i:03d}", role=Role.REP)
            await StaffAccount.create(staff_id=rep.id, platform="wecom", user_id=f"rep{i:03d}")
            reps.append(rep)
        names = [f"华东{i}号机械有限公司" for i in range(CUSTOMERS)]
        for i, name in enumerate(names):
            await Customer.create(name=name, owner_id=reps[i % REPS].id)
        await bot.understanding.refresh()
        now = datetime.now(UTC)
        incoming = [
            IncomingMessage(
                "wecom",
                f"bench-{i}",
                f"rep{i % REPS:03d}",
                texts[i % len(texts)].format(c=names[(i * 7) % CUSTOMERS]),
                now,
            )
            for i in range(messages)
        ]
        ids = []
        for start in range(0, messages, 200):
            ids += await store_bot_messages(bot.directory, incoming[start : start + 200])
        wall, cpu = time.perf_counter(), time.process_time()
        for message_id, msg in zip(ids, incoming, strict=True):
            assert message_id is not None
            bot.schedule(message_id, f"wecom:{msg.sender}")
        await bot.tasks.idle()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        left = await Message.filter(handled_at=None).count()
        if left:
            raise RuntimeError(f"{left} messages left unhandled")
    return cpu, wall


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--help-only", action="store_true", help="every message is 帮助 (as in bench.webhook)")
    args = parser.parse_args(argv)
    texts = ("帮助",) if args.help_only else TEXTS
    from bot.app import new_event_loop

    per_message = []
    for i in range(args.rounds):
        with (
            tempfile.TemporaryDirectory(prefix="crmbot-handling-") as tmp,
            asyncio.Runner(loop_factory=new_event_loop) as runner,
        ):
            cpu, wall = runner.run(one_run(f"sqlite://{tmp}/bench.sqlite3", args.messages, texts))
        per_message.append(cpu / args.messages * 1e6)
        print(
            f"round {i + 1}: {args.messages} messages handled in {wall:.2f} s, CPU {cpu:.2f} s = "
            f"{per_message[-1]:.0f} µs per message",
            flush=True,
        )
    low, high, median = min(per_message), max(per_message), statistics.median(per_message)
    print(f"CPU per message: {low:.0f}–{high:.0f} µs (median {median:.0f})")


if __name__ == "__main__":
    main(sys.argv[1:])
