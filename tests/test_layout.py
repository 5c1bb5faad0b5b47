"""The house as drawn (docs/ARCHITECTURE.md), checked on the code itself: no import cycles (imports inside
functions included, type-only ones aside), the core reaches capabilities and platforms only by registration, and
platform field and event names stay inside ``integrations/``."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bot", "handlers", "integrations", "models")
COMPOSITION_ROOTS = {"bot.app", "bot.cli"}
# Names only the platforms' own code may use (their message fields, card fields, events and account columns).
PLATFORM_NAMES = re.compile(
    r"\b(wecom_userid|dingtalk_userid|response_code|replace_name|task_id|template_card_event|msgaudit_notify"
    r"|sessionWebhook|senderStaffId|FromUserName|MsgType|EventKey|ResponseCode"
    r"|externalcontact|change_external_contact|change_contact|transfer_customer|transfer_result)\b"
)


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def _type_only(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while (node := parents.get(node)) is not None:  # type: ignore[assignment]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def imports() -> dict[str, set[str]]:
    """module → the project modules it imports (anywhere in it)."""
    mods = modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for module, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            else:
                continue
            if _type_only(node, parents):
                continue
            for name in names:
                while name and name not in mods:
                    name = name.rpartition(".")[0]
                if name and name != module:
                    graph[module].add(name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_module_imports_itself_round_a_circle() -> None:
    assert cycles(imports()) == []


def test_the_core_reaches_capabilities_and_platforms_only_by_registration() -> None:
    graph = imports()
    wrong = sorted(
        f"{m} -> {t}"
        for m, targets in graph.items()
        if m.startswith("bot") and m not in COMPOSITION_ROOTS
        for t in targets
        if t.split(".")[0] in ("handlers", "integrations")
    )
    assert wrong == []
    assert (
        sorted(
            f"{m} -> {t}" for m, ts in graph.items() if m.startswith("models") for t in ts if not t.startswith("models")
        )
        == []
    )
    assert (
        sorted(
            f"{m} -> {t}"
            for m, ts in graph.items()
            if m.startswith("handlers")
            for t in ts
            if t.startswith("integrations")
        )
        == []
    )


@pytest.mark.parametrize("package", ["bot", "handlers", "models"])
def test_platform_names_stay_in_the_integrations(package: str) -> None:
    leaks = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in (ROOT / package).rglob("*.py")
        if "migrations" not in path.parts
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if PLATFORM_NAMES.search(line)
    ]
    assert leaks == []
