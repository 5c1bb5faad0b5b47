"""How a capability plugs in: one ``Capability`` per capability module, and the ``Registry`` that gathers them.

A capability module declares ``capability = Capability("tickets")`` and registers with it everything it brings:

* intents (``@capability.intent("create_ticket", examples=[...], order=40, customer=True)``; the first line of a
  handler's docstring is its help text; ``customer=True`` hands the handler a resolved customer);
* how those intents are recognized: command words (``@capability.command(pattern, order=...)``) and free
  phrasing (``@capability.phrase(order=...)``), tried by the understanding in order of priority;
* scheduled rules (``@capability.rule(order=...)``), evaluated in order by the rules engine;
* hooks on newly archived customer messages (``@capability.on_archived(order=...)``);
* hooks on the customers an import leaves without an owner (``@capability.on_imported(order=...)``);
* guards on another capability's intent (``@capability.guard("request_discount")``), asked after its customer is
  resolved and before its handler runs; a guard's reply refuses the request, so nothing is written;
* web routes (``capability.route("GET", "/nps/{token}", view)``);
* lines on the customer profile card (``@capability.card_line(order=...)``), asked in order when a card is shown.

The composition root builds one ``Registry`` from the list of capabilities; the core asks the registry and never
imports a capability.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from aiohttp import web

from bot.context import ArchiveHook, CardLine, Check, Handler, ImportHook, IntentSpec, Rule
from bot.nlu.reading import Command, CommandMatch, Phrase, PhraseMatch

T = TypeVar("T")
View = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    view: View


class Capability:
    """What one capability module registers."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.intents: list[IntentSpec] = []
        self.commands: list[Command] = []
        self.phrases: list[Phrase] = []
        self.rules: list[tuple[int, Rule]] = []
        self.archive_hooks: list[tuple[int, ArchiveHook]] = []
        self.import_hooks: list[tuple[int, ImportHook]] = []
        self.routes: list[Route] = []
        self.guards: list[tuple[str, Check]] = []
        self.card_lines: list[tuple[int, CardLine]] = []

    def intent(
        self,
        name: str,
        *,
        examples: Iterable[str] = (),
        order: int = 100,
        customer: bool = False,
        check: Check | None = None,
        system: bool = False,
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            doc = (handler.__doc__ or name).strip().splitlines()[0]
            self.intents.append(IntentSpec(name, handler, doc, tuple(examples), order, customer, check, system))
            return handler

        return register

    def command(self, pattern: re.Pattern[str], *, order: int) -> Callable[[CommandMatch], CommandMatch]:
        def register(match: CommandMatch) -> CommandMatch:
            self.commands.append(Command(order, pattern, match))
            return match

        return register

    def phrase(self, *, order: int) -> Callable[[PhraseMatch], PhraseMatch]:
        def register(match: PhraseMatch) -> PhraseMatch:
            self.phrases.append(Phrase(order, match))
            return match

        return register

    def rule(self, *, order: int) -> Callable[[Rule], Rule]:
        def register(rule: Rule) -> Rule:
            self.rules.append((order, rule))
            return rule

        return register

    def on_archived(self, *, order: int = 100) -> Callable[[ArchiveHook], ArchiveHook]:
        def register(hook: ArchiveHook) -> ArchiveHook:
            self.archive_hooks.append((order, hook))
            return hook

        return register

    def on_imported(self, *, order: int = 100) -> Callable[[ImportHook], ImportHook]:
        def register(hook: ImportHook) -> ImportHook:
            self.import_hooks.append((order, hook))
            return hook

        return register

    def route(self, method: str, path: str, view: View) -> None:
        self.routes.append(Route(method, path, view))

    def card_line(self, *, order: int = 100) -> Callable[[CardLine], CardLine]:
        def register(line: CardLine) -> CardLine:
            self.card_lines.append((order, line))
            return line

        return register

    def guard(self, intent: str) -> Callable[[Check], Check]:
        def register(guard: Check) -> Check:
            self.guards.append((intent, guard))
            return guard

        return register


class Registry:
    """Every capability's registrations, merged and ordered."""

    def __init__(self, capabilities: Iterable[Capability]) -> None:
        self.capabilities = list(capabilities)
        self.specs: dict[str, IntentSpec] = {}
        for capability in self.capabilities:
            for spec in capability.intents:
                if spec.name in self.specs:
                    raise ValueError(f"intent {spec.name!r} registered twice")
                self.specs[spec.name] = spec
        self.commands = sorted((c for cap in self.capabilities for c in cap.commands), key=lambda c: c.order)
        self.phrases = sorted((p for cap in self.capabilities for p in cap.phrases), key=lambda p: p.order)
        self.rules: list[Rule] = [r for _, r in sorted(_all(cap.rules for cap in self.capabilities), key=_first)]
        self.archive_hooks: list[ArchiveHook] = [
            h for _, h in sorted(_all(cap.archive_hooks for cap in self.capabilities), key=_first)
        ]
        self.import_hooks: list[ImportHook] = [
            h for _, h in sorted(_all(cap.import_hooks for cap in self.capabilities), key=_first)
        ]
        self.card_lines: list[CardLine] = [
            c for _, c in sorted(_all(cap.card_lines for cap in self.capabilities), key=_first)
        ]
        self.routes = [route for cap in self.capabilities for route in cap.routes]
        self.guards: dict[str, list[Check]] = {}
        for intent, guard in _all(cap.guards for cap in self.capabilities):
            self.guards.setdefault(intent, []).append(guard)

    def get(self, name: str) -> IntentSpec | None:
        return self.specs.get(name)

    def guards_of(self, name: str) -> list[Check]:
        """What other capabilities ask before intent ``name`` runs, in the order the capabilities are listed."""
        return self.guards.get(name, [])

    def ordered(self) -> list[IntentSpec]:
        return sorted(self.specs.values(), key=lambda s: (s.order, s.name))


def _all(lists: Iterable[list[T]]) -> list[T]:
    return [item for items in lists for item in items]


def _first(pair: tuple[int, object]) -> int:
    return pair[0]
