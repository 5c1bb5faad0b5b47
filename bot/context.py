"""What a capability's code is handed by the core: the services (``Services``), the context of one message
(``Context``), the context of a scheduled pass (``RuleContext``) and what a rule answers (``Firing``).

Everything a handler may reach is named here, typed, so a capability depends on this contract rather than on the
pipeline that fulfils it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from tortoise.backends.base.client import BaseDBAsyncClient

from bot import audit
from bot.channels import Outbox
from bot.clock import Clock
from bot.config import Settings
from bot.identity import Directory
from bot.tasks import TaskTracker
from bot.types import ArchivedMessage, Attachment, Click, IncomingMessage, Reply
from bot.understanding import Understanding
from models.customers import Customer
from models.staff import Staff

Slots = dict[str, Any]
HandlerResult = Reply | str | Sequence[Reply | str] | None
Handler = Callable[[IncomingMessage, Slots, "Context"], Awaitable[HandlerResult]]
# Runs before the customer is resolved; a reply ends the turn there (e.g. a stage nobody can set).
Check = Callable[[Slots, "Context"], Awaitable[Reply | None]]


@dataclass(frozen=True, slots=True)
class IntentSpec:
    name: str
    handler: Handler
    help: str
    examples: tuple[str, ...]
    order: int
    customer: bool = False  # the customer in the slots is resolved first (``Context.customer``)
    check: Check | None = None
    system: bool = False  # also handled when the platform itself sends it (no staff sender)


class Catalog(Protocol):
    """Every registered intent."""

    def get(self, name: str) -> IntentSpec | None: ...

    def ordered(self) -> list[IntentSpec]: ...


@dataclass(frozen=True, slots=True)
class ArchiveSource:
    """A chat archive the platform lets us pull: ``pull`` now, and every ``every_seconds`` (0: only on demand)."""

    pull: Callable[[], Coroutine[Any, Any, object]]
    every_seconds: float = 0.0


class Services(Protocol):
    """The core's services, as capabilities see them (read-only: a capability uses them, never replaces them)."""

    @property
    def settings(self) -> Settings: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def outbox(self) -> Outbox: ...
    @property
    def directory(self) -> Directory: ...
    @property
    def understanding(self) -> Understanding: ...
    @property
    def intents(self) -> Catalog: ...
    @property
    def tasks(self) -> TaskTracker: ...
    @property
    def archive_sources(self) -> list[ArchiveSource]: ...
    @property
    def archive_hooks(self) -> Sequence[ArchiveHook]: ...
    @property
    def scheduled_rules(self) -> Sequence[Rule]: ...
    @property
    def import_hooks(self) -> Sequence[ImportHook]: ...
    @property
    def card_lines(self) -> Sequence[CardLine]: ...


ArchiveHook = Callable[[Services, list[ArchivedMessage]], Awaitable[object]]
# A line another capability adds to the profile card of a customer (empty: nothing to add), as of a moment.
CardLine = Callable[[Services, Customer, datetime], Awaitable[list[str]]]
# Called after each chunk of a customer import commits, with the ids of its customers left without an owner.
ImportHook = Callable[[Services, list[int]], Awaitable[object]]


@dataclass
class Context:
    """What a handler may use: who is asking, when, the services, the open transaction, and (for intents that
    declare it) the customer the message is about, or the card button that was tapped."""

    bot: Services
    staff: Staff
    msg: IncomingMessage
    now: datetime
    conn: BaseDBAsyncClient | None = None
    pushes: int = field(default=0)
    found: Customer | None = None
    click: Click | None = None
    audited: list[str] = field(default_factory=list)  # the actions this message's handling wrote to the audit log

    @property
    def settings(self) -> Settings:
        return self.bot.settings

    @property
    def customer(self) -> Customer:
        """The resolved customer of an intent registered with ``customer=True``."""
        if self.found is None:
            raise RuntimeError("this intent does not resolve a customer")
        return self.found

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
        *,
        customer_id: int | None = None,
        undo_of: int | None = None,
    ) -> None:
        """Audit a change made for this message (about ``customer_id``, else the resolved customer, if any)."""
        if customer_id is None and self.found is not None:
            customer_id = self.found.id
        await audit.record(
            action,
            entity,
            entity_id,
            before,
            after,
            actor=self.staff,
            platform=self.msg.platform,
            source=f"{self.msg.platform}:{self.msg.msgid}",
            customer_id=customer_id,
            undo_of=undo_of,
            at=self.now,
            conn=self.conn,
        )
        self.audited.append(action)


@dataclass
class Firing:
    """One push a rule wants to make; ``key`` is unique forever, so the push happens at most once."""

    rule: str  # e.g. "ladder_warn", "approval_remind", "nps_survey"
    key: str  # idempotency key: f"{rule}:{subject_id}:{threshold}:{period}"
    to: Staff  # who is told
    text: str  # Chinese markdown, including the action to take (e.g. `跟进 华为 …`)
    customer: Customer | None = None
    urgent: bool = False  # True bypasses quiet hours (urgent ticket escalation)
    apply: Callable[[], Awaitable[None]] | None = None  # side effect run once, in the same transaction
    # Optional: the period as a moment (e.g. the last_followup_at the key was built from). Stored with the
    # firing so that a rule can skip subjects that already fired in SQL (see ``models.reminders.RuleFiring``).
    period_at: datetime | None = None
    batch: Batch | None = None  # pushes of this kind to one person become one summary past a threshold
    alone: bool = False  # True: sent as its own message (a report), never folded into a digest
    attachments: tuple[Attachment, ...] = ()  # files sent with it (a report's chart); such a firing goes alone


@dataclass(frozen=True)
class Batch:
    """A kind of push that must not arrive by the hundred: when one pass makes more than ``threshold`` firings
    of ``kind`` for one person (a go-live import of long-neglected customers), the engine still records and
    applies each of them but sends that person ONE push, written by ``summarize`` from them all."""

    kind: str
    threshold: int
    summarize: Callable[[list[Firing]], str]


@dataclass
class RuleContext:
    now: datetime
    settings: Settings
    bot: Services
    # None: a full sweep, consider every subject. A moment: thresholds crossed up to it were already handled by
    # an earlier pass, so a rule may look only at subjects whose threshold lies after it (an indexed range).
    # Rules may ignore it: the unique firing key keeps pushes single either way.
    since: datetime | None = None
    # A rule that left subjects for later (a batch limit in a sweep) sets this: the next pass sweeps again.
    more: bool = False


Rule = Callable[[RuleContext], Awaitable[list[Firing]]]
