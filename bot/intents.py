"""How handlers plug in: one ``IntentRouter`` per handler module, a ``Context`` per message.

A handler module declares ``router = IntentRouter()`` and decorates its functions with
``@router.intent("follow_up", examples=[...])``; the first line of a handler's docstring is its help text. The
core collects every module's router (``handlers.ROUTERS``) into one ``IntentRegistry``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from tortoise.backends.base.client import BaseDBAsyncClient

from bot.types import IncomingMessage, Reply
from models.audit import AuditLog
from models.staff import Staff

if TYPE_CHECKING:
    from bot.pipeline import Bot

Slots = dict[str, Any]
HandlerResult = Reply | str | Sequence[Reply | str] | None
Handler = Callable[[IncomingMessage, Slots, "Context"], Awaitable[HandlerResult]]


@dataclass(frozen=True, slots=True)
class IntentSpec:
    name: str
    handler: Handler
    help: str
    examples: tuple[str, ...]
    order: int


@dataclass
class Context:
    """What a handler may use: who is asking, when, the bot's services, and the open transaction."""

    bot: Bot
    staff: Staff
    msg: IncomingMessage
    now: datetime
    conn: BaseDBAsyncClient | None = None
    pushes: int = field(default=0)

    @property
    def settings(self) -> Any:
        return self.bot.settings

    async def push(self, to: Staff, reply: Reply | str, key: str | None = None) -> None:
        """Tell another staff member something, through the outbox, exactly once per incoming message."""
        if isinstance(reply, str):
            reply = Reply(reply)
        self.pushes += 1
        dedupe = key or f"push:{self.msg.platform}:{self.msg.msgid}:{to.id}:{self.pushes}"
        await self.bot.outbox.push(to, reply, dedupe, using_db=self.conn)

    async def audit(
        self,
        action: str,
        entity: str,
        entity_id: object,
        before: dict[str, Any] | None = None,
        after: dict[str, Any] | None = None,
    ) -> None:
        await AuditLog.create(
            actor_id=self.staff.id,
            actor_name=self.staff.name,
            action=action,
            entity=entity,
            entity_id=str(entity_id),
            before=before,
            after=after,
            platform=self.msg.platform,
            using_db=self.conn,
        )


class IntentRouter:
    """The intents one handler module serves."""

    def __init__(self) -> None:
        self.specs: list[IntentSpec] = []

    def intent(self, name: str, *, examples: Iterable[str] = (), order: int = 100) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            doc = (handler.__doc__ or name).strip().splitlines()[0]
            self.specs.append(IntentSpec(name, handler, doc, tuple(examples), order))
            return handler

        return register


class IntentRegistry:
    def __init__(self, routers: Iterable[IntentRouter]) -> None:
        self.specs: dict[str, IntentSpec] = {}
        for router in routers:
            for spec in router.specs:
                if spec.name in self.specs:
                    raise ValueError(f"intent {spec.name!r} registered twice")
                self.specs[spec.name] = spec

    def get(self, name: str) -> IntentSpec | None:
        return self.specs.get(name)

    def ordered(self) -> list[IntentSpec]:
        return sorted(self.specs.values(), key=lambda s: (s.order, s.name))


def as_replies(result: HandlerResult) -> list[Reply]:
    if result is None:
        return []
    if isinstance(result, (Reply, str)):
        result = [result]
    return [Reply(r) if isinstance(r, str) else r for r in result]
