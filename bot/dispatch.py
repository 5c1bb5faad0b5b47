"""What happens to one message addressed to the bot, as an ordered list of steps (``Dispatcher.steps``).

Each step looks at the ``Turn`` so far and either lets it go on (returns None) or ends it with the replies to send.
The steps, in order: understand the text (or the tapped button, or the event); make sure the sender is a
registered staff member (the platform itself may send events some intents accept); take "2" as the answer to a
numbered question asked earlier; find the intent's handler; run its check; resolve the customer it is about; ask
the guards other capabilities put on it; run it (a reply to a change that 撤销 can take back ends with how to do
so). A new cross-cutting step is one more entry in the list.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime

from tortoise.backends.base.client import BaseDBAsyncClient

from bot.audit import UNDOABLE, undo_hint
from bot.capability import Registry
from bot.context import Context, HandlerResult, IntentSpec, Services, Slots
from bot.resolution import as_sender, pick_choice, resolve
from bot.types import IncomingMessage, Reply
from bot.understanding import UNKNOWN, Parsed
from models.staff import Role, Staff

NOT_REGISTERED = "您好，您还不是本系统的注册用户，暂时无法使用 CRM 助手。请联系管理员为您开通账号。"
DIDNT_UNDERSTAND = "抱歉，我没听懂这句话。发送「帮助」查看我能做什么。"
SYSTEM_NAME = "系统"


@dataclass
class Turn:
    """One message on its way through the steps."""

    msg: IncomingMessage
    staff: Staff | None
    ctx: Context
    parsed: Parsed = UNKNOWN
    read: Parsed | None = None  # understood ahead of handling (``Bot`` reads before it takes the database)
    spec: IntentSpec | None = None
    by_platform: bool = False  # sent by the platform itself: handled as the system, nobody to answer

    @property
    def not_typed(self) -> bool:
        """An event or a tapped button rather than typed text."""
        return bool(self.msg.event) or self.msg.click is not None


Step = Callable[[Turn], Awaitable[list[Reply] | None]]


def as_replies(result: HandlerResult) -> list[Reply]:
    if result is None:
        return []
    if isinstance(result, (Reply, str)):
        result = [result]
    return [Reply(r) if isinstance(r, str) else r for r in result]


class Dispatcher:
    def __init__(self, services: Services, registry: Registry) -> None:
        self.services = services
        self.registry = registry
        self.steps: list[Step] = [
            self.understand,
            self.identify_sender,
            self.answer_choice,
            self.find_handler,
            self.check,
            self.resolve_customer,
            self.guard,
            self.run_handler,
        ]

    async def answer(
        self,
        msg: IncomingMessage,
        staff: Staff | None,
        now: datetime,
        conn: BaseDBAsyncClient | None,
        read: Parsed | None = None,
    ) -> list[Reply]:
        """The replies to ``msg`` from ``staff`` (None: the sender is no registered staff member); ``read`` is
        what ``msg`` was understood to mean at ``now`` beforehand, if it was."""
        actor = staff or Staff(name=SYSTEM_NAME, role=Role.ADMIN)
        ctx = Context(bot=self.services, staff=actor, msg=msg, now=now, conn=conn, click=msg.click)
        turn = Turn(msg, staff, ctx, read=read)
        for step in self.steps:
            if (replies := await step(turn)) is not None:
                return [] if turn.by_platform else replies
        return []

    async def perform(self, intent: str, slots: Slots, ctx: Context) -> list[Reply]:
        """Run ``intent`` with ``slots`` for ``ctx``'s staff member about ``ctx.found``, a customer already chosen
        (a page names it by its id): its check, the guards on it and its handler, exactly as for a typed message."""
        turn = Turn(ctx.msg, ctx.staff, ctx, parsed=Parsed(intent, slots))
        for step in (self.find_handler, self.check, self.guard, self.run_handler):
            if (replies := await step(turn)) is not None:
                return replies
        return []

    def understand_message(self, msg: IncomingMessage, now: datetime) -> Parsed:
        """A tapped button means the command its key stands for; an event is ``event:<name>``; text is parsed."""
        if msg.click is not None:
            return self.services.understanding.parse(msg.click.key, now)
        if msg.event:
            return Parsed(f"event:{msg.event}", {"key": msg.event_key})
        return self.services.understanding.parse(msg.text, now)

    # -- the steps -----------------------------------------------------------------------------------------------

    async def understand(self, turn: Turn) -> list[Reply] | None:
        parsed = turn.read if turn.read is not None else self.understand_message(turn.msg, turn.ctx.now)
        turn.parsed = as_sender(parsed, turn.staff)
        return None

    async def identify_sender(self, turn: Turn) -> list[Reply] | None:
        if turn.staff is not None:
            return None
        spec = self.registry.get(turn.parsed.intent)
        if turn.msg.event and spec is not None and spec.system:
            turn.by_platform = True
            return None
        return [Reply(NOT_REGISTERED)]

    async def answer_choice(self, turn: Turn) -> list[Reply] | None:
        # "2" answers a numbered question asked earlier (kept in the database across restarts).
        if turn.parsed.intent == "unknown" and not turn.not_typed and turn.staff is not None:
            chosen = await pick_choice(turn.staff.id, turn.msg.text, turn.ctx.now, turn.ctx.conn)
            turn.parsed = chosen or turn.parsed
        return None

    async def find_handler(self, turn: Turn) -> list[Reply] | None:
        turn.spec = self.registry.get(turn.parsed.intent)
        if turn.spec is None or (turn.msg.click is not None and turn.parsed.intent.startswith("event:")):
            # An event nobody handles (entering the app, a contact change) or a button without a command.
            return [] if turn.not_typed else [Reply(DIDNT_UNDERSTAND)]
        return None

    async def check(self, turn: Turn) -> list[Reply] | None:
        assert turn.spec is not None
        if turn.spec.check is not None and (refused := await turn.spec.check(turn.parsed.slots, turn.ctx)):
            return [refused]
        return None

    async def resolve_customer(self, turn: Turn) -> list[Reply] | None:
        assert turn.spec is not None
        if not turn.spec.customer:
            return None
        ctx = turn.ctx
        found = await resolve(ctx.staff.id, turn.parsed.slots, turn.parsed.intent, ctx.now, ctx.conn)
        if isinstance(found, Reply):
            return [found]
        ctx.found = found
        return None

    async def guard(self, turn: Turn) -> list[Reply] | None:
        # Other capabilities' conditions on this intent, once its customer is known.
        for guard in self.registry.guards_of(turn.parsed.intent):
            if refused := await guard(turn.parsed.slots, turn.ctx):
                return [refused]
        return None

    async def run_handler(self, turn: Turn) -> list[Reply] | None:
        assert turn.spec is not None
        replies = as_replies(await turn.spec.handler(turn.msg, turn.parsed.slots, turn.ctx))
        if UNDOABLE.intersection(turn.ctx.audited):
            return with_undo_hint(replies, self.services.settings.rules.undo_window_minutes)
        return replies


def with_undo_hint(replies: list[Reply], minutes: int) -> list[Reply]:
    """The replies, the last written one ending with how to take the change back (撤销)."""
    for i, reply in reversed(list(enumerate(replies))):
        if reply.kind in ("text", "markdown") and reply.text:
            return [*replies[:i], replace(reply, text=f"{reply.text}\n{undo_hint(minutes)}"), *replies[i + 1 :]]
    return replies
