"""``crmbot``: the command line (click), a composition root like ``bot.app``. Every subcommand takes ``--config``;
bad input exits 2 with one line.

Commands that touch the database run the same app as the server (migrations, core, outbox) without listening
on a port. What only one command needs is imported inside it (each so marked): every other command starts without.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import sys
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import click
from aiohttp import web
from aiohttp.web_log import AccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse
from tortoise import connections

from bot import search as search_index
from bot.app import create_app, load_settings, new_event_loop
from bot.clock import Clock
from bot.config import ConfigError, Settings
from bot.db import DatabaseUnavailable
from bot.identity import find_staff as lookup
from bot.keys import BOT, CLOCK, OUTBOX, SETTINGS
from integrations.console import chat as console_chat
from models.customers import Customer
from models.staff import Staff

T = TypeVar("T")


class BadInput(click.ClickException):
    """Exit 2 with a one-line message; nothing was written."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"错误 error: {self.format_message()}", err=True)


def _settings(config: str | None) -> Settings:
    try:
        return load_settings(config)
    except ConfigError as exc:
        raise BadInput(str(exc)) from exc


def _run(coro: Awaitable[T]) -> T:
    try:
        return asyncio.run(coro)  # type: ignore[arg-type]
    except DatabaseUnavailable as exc:
        raise BadInput(str(exc)) from exc


@asynccontextmanager
async def running_app(settings: Settings, clock: Clock | None = None, **kwargs: Any) -> AsyncIterator[web.Application]:
    """The app started without an HTTP listener (for one-shot commands and the console)."""
    kwargs.setdefault("run_dispatcher", False)
    kwargs.setdefault("run_scheduler", False)
    app = create_app(settings, clock=clock, **kwargs)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    try:
        yield app
    finally:
        await runner.cleanup()


def parse_now(value: str | None, settings: Settings, option: str = "--now") -> datetime | None:
    """``value`` as an aware moment (local time when it names no zone); ``option`` names it in the error."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise BadInput(f"{option} must be ISO 8601, got {value!r}") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=settings.tz)


config_option = click.option(
    "--config", "config", type=click.Path(dir_okay=False), default=None, help="TOML config (default ./config.toml)"
)


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log at INFO level.")
def main(verbose: bool) -> None:
    """crmbot: the CRM you run from WeCom and DingTalk chat."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


access_logger = logging.getLogger("aiohttp.access")
WORKER_NICENESS = 10  # a "worker" instance's CPU priority, below the default (0) of everything else


class ErrorsAccessLogger(AccessLogger):
    """The access log of requests answered 400 or above only: a refused signature or a malformed body is worth a
    line; the thousands of acknowledged callbacks a second are counted in /metrics instead."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        if response.status >= 400:
            super().log(request, response, time)


@main.command()
@config_option
def serve(config: str | None) -> None:
    """Run the webhook server and the scheduler."""
    settings = _settings(config)
    logging.getLogger().setLevel(logging.INFO)
    if settings.server.role == "worker":
        # Handling can wait a moment; acknowledgements and the database cannot. Where a worker shares a machine
        # with web instances or PostgreSQL, they get the CPU first; on a machine of its own this changes nothing.
        os.nice(WORKER_NICENESS)
    access_log = settings.server.access_log
    app = create_app(settings)
    app.on_startup.append(_warm_up)
    try:
        web.run_app(
            app,
            host=settings.server.host,
            port=settings.server.port,
            print=None,
            loop=new_event_loop(),
            access_log=None if access_log == "off" else access_logger,
            access_log_class=ErrorsAccessLogger if access_log == "errors" else AccessLogger,
        )
    except DatabaseUnavailable as exc:
        raise BadInput(str(exc)) from exc


async def _warm_up(app: web.Application) -> None:
    """Before the first request: jieba's dictionary and the time expressions' tables loaded (a few seconds, in a
    worker thread), so that the first message read does not hold up everyone's acknowledgements meanwhile.

    Then what start-up loaded (the dictionary, the ORM's models, the vocabulary of names: millions of objects that
    live as long as the server) is frozen out of the garbage collector's full passes. Each pass walked all of it,
    about 100 ms on the event loop every few seconds under load, and every acknowledgement waited meanwhile."""
    await asyncio.to_thread(app[BOT].understanding.warm_up)
    gc.collect()
    gc.freeze()


@main.command()
@config_option
@click.option("--as", "as_user", default=None, help="Staff member: WeCom/DingTalk user id or name.")
def chat(config: str | None, as_user: str | None) -> None:
    """Talk to the bot in the terminal; each line is one message."""

    settings = _settings(config)

    async def go() -> None:
        async with running_app(settings, run_scheduler=True) as app:
            staff = await find_staff(as_user)
            if sys.stdin.isatty():
                click.echo(f"您好，{staff.name}！输入消息与 CRM 助手对话，发送「帮助」查看用法，Ctrl-D 退出。")
            await console_chat(app, staff, _stdin_lines())

    _run(go())


async def _stdin_lines() -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            sys.stdout.write("> ")
            sys.stdout.flush()
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        yield line


async def find_staff(as_user: str | None) -> Staff:
    """The staff member ``--as`` names (a name or a platform user id), or the first one."""
    if as_user is None:
        first = await Staff.filter(active=True).order_by("id").first()
        if first is None:
            raise BadInput("no staff yet: run `crmbot demo` or `crmbot import staff FILE` first")
        return first
    staff = await lookup(as_user)
    if staff is None:
        names = [str(n) for n in await Staff.filter(active=True).limit(10).values_list("name", flat=True)]
        raise BadInput(f"unknown staff member {as_user!r} (known: {', '.join(names) or 'none'})")
    return staff


@main.command()
@config_option
@click.argument("texts", nargs=-1, required=True)
@click.option("--as", "as_user", default=None)
@click.option("--now", "now", default=None, help="ISO 8601 moment to interpret relative times against.")
@click.option("--json", "as_json", is_flag=True, help="One JSON line per TEXT.")
def parse(config: str | None, texts: tuple[str, ...], as_user: str | None, now: str | None, as_json: bool) -> None:
    """Show how the bot understands each TEXT (no side effects)."""
    settings = _settings(config)
    moment = parse_now(now, settings)

    async def go() -> None:
        async with running_app(settings, clock=Clock(moment)) as app:
            understanding = app[BOT].understanding
            await understanding.ensure_fresh()
            at = app[CLOCK].now()
            for text in texts:
                parsed = understanding.parse(text, at)
                if as_json:
                    click.echo(json.dumps(parsed.as_json(text), ensure_ascii=False))
                else:
                    click.echo(f"{text}\t{parsed.intent}\t{json.dumps(parsed.slots, ensure_ascii=False)}")

    _run(go())


@main.command()
@config_option
def demo(config: str | None) -> None:
    """Load demo staff, customers and conversations (idempotent)."""
    from bot.demo import load_demo  # start-up time: only this command

    settings = _settings(config)

    async def go() -> dict[str, int]:
        async with running_app(settings) as app:
            return await load_demo(app)

    counts = _run(go())
    click.echo("演示数据已就绪 demo data ready: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    click.echo("试试 try: crmbot chat --as zhangsan")


@main.command(name="import")
@config_option
@click.argument("kind", type=click.Choice(["staff", "customers", "messages", "orders", "opportunities", "targets"]))
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--chunk-rows",
    type=click.IntRange(min=1),
    default=None,
    help="Customer rows written per transaction (default 5000).",
)
def import_(config: str | None, kind: str, file: Path, chunk_rows: int | None) -> None:
    """Import staff, customers, orders, opportunities, targets (.csv/.xlsx) or messages (.jsonl) from FILE."""
    # start-up time: the importers (and the spreadsheet and database-driver modules they load) only here
    from bot.importer import run_import
    from bot.spreadsheet import ImportFailed
    from handlers.orders import import_orders
    from handlers.pipeline.imports import import_opportunities, import_targets
    from integrations.wecom.archive_file import import_jsonl

    settings = _settings(config)

    async def go() -> str:
        async with running_app(settings) as app:
            if kind == "messages":
                return await import_jsonl(app, file)
            if kind == "orders":
                return await import_orders(app, file)
            if kind in ("opportunities", "targets"):
                return await (import_opportunities if kind == "opportunities" else import_targets)(app, file)
            return await run_import(app, kind, file, chunk_rows)

    try:
        click.echo(_run(go()))
    except ImportFailed as exc:
        raise BadInput(str(exc)) from exc


@main.command()
@config_option
@click.argument("queries", nargs=-1, required=True)
@click.option("--as", "as_user", default=None, help="Search as this staff member (their data scope); default: all.")
@click.option("--customer", "customer", default=None, help="Only this customer's conversations (name or alias).")
@click.option("--since", "since", default=None, help="Only messages since this ISO 8601 date or time (local).")
@click.option("--limit", "limit", type=click.IntRange(min=0), default=20, show_default=True, help="0 = all hits.")
@click.option("--json", "as_json", is_flag=True, help="One JSON line per QUERY.")
def search(
    config: str | None,
    queries: tuple[str, ...],
    as_user: str | None,
    customer: str | None,
    since: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Search archived customer conversations (substring match, newest first)."""
    settings = _settings(config)
    moment = parse_now(since, settings, "--since")
    if any(not q.strip() for q in queries):
        raise BadInput("empty query")

    async def go() -> None:
        async with running_app(settings) as app:
            staff = await find_staff(as_user) if as_user else None
            customer_id = None
            if customer:
                await app[BOT].understanding.ensure_fresh()
                name = app[BOT].understanding.resolve_customer(customer)
                row = await Customer.get_or_none(name=name)
                if row is None:
                    raise BadInput(f"unknown customer {customer!r}")
                customer_id = row.id
            conn = connections.get("default")
            for query in queries:
                if limit == 0:  # every hit, streamed: printed a chunk at a time, memory bounded
                    chunks = search_index.stream(conn, query, staff=staff, customer_id=customer_id, since=moment)
                    await _print_every_hit(query, chunks, settings.tz, as_json)
                    continue
                found = await search_index.search(
                    conn,
                    query,
                    staff=staff,
                    customer_id=customer_id,
                    since=moment,
                    limit=limit,
                    count_bound=settings.search.count_bound,
                )
                hits = [hit.as_json(settings.tz) for hit in found.hits]
                if as_json:
                    result = {"query": query, "total": found.total, "total_estimated": found.estimated, "hits": hits}
                    click.echo(json.dumps(result, ensure_ascii=False))
                    continue
                total = search_index.about(found.total) if found.estimated else f" {found.total} "
                click.echo(f"「{query}」{total}条 hits")
                for hit in hits:
                    _print_hit(hit)

    _run(go())


def _hit_line(hit: dict[str, Any]) -> str:
    return f"  {hit['time'][:16]}  {hit['customer'] or '—'}  {hit['sender']}: {hit['snippet']}"


def _print_hit(hit: dict[str, Any]) -> None:
    click.echo(_hit_line(hit))


async def _print_every_hit(
    query: str, chunks: AsyncIterator[list[search_index.Hit]], tz: ZoneInfo, as_json: bool
) -> None:
    """Every hit as it comes, one write a chunk; the total (exact: every hit was read) last. With ``as_json`` the
    line is the same object as for a limit, its keys in another order."""
    total = 0
    if as_json:
        click.echo('{"query": ' + json.dumps(query, ensure_ascii=False) + ', "hits": [', nl=False)
    else:
        click.echo(f"「{query}」 全部 all hits:")
    async for chunk in chunks:
        hits = [hit.as_json(tz) for hit in chunk]
        if as_json:
            text = ", ".join(json.dumps(hit, ensure_ascii=False) for hit in hits)
            click.echo((", " if total and hits else "") + text, nl=False)
        else:
            click.echo("\n".join(_hit_line(hit) for hit in hits))
        total += len(hits)
    if as_json:
        click.echo(f'], "total": {total}, "total_estimated": false}}')
    else:
        click.echo(f"「{query}」 共 {total} 条 hits")


@main.command()
@config_option
@click.option("--customer", "customer", default=None, help="Only changes about this customer (name or alias).")
@click.option("--since", "since", default=None, help="Only changes since this ISO 8601 date or time (local).")
@click.option("--actor", "actor", default=None, help="Only changes by this staff member (name or user id).")
@click.option("--json", "as_json", is_flag=True, help="One JSON line per change.")
def audit(config: str | None, customer: str | None, since: str | None, actor: str | None, as_json: bool) -> None:
    """Read the audit log, newest first: who changed what, before → after, when, from which platform."""
    from handlers.history import Book, changes  # start-up time: only this command

    settings = _settings(config)
    moment = parse_now(since, settings, "--since")

    async def go() -> list[tuple[dict[str, Any], str]]:
        async with running_app(settings) as app:
            about = None
            if customer:
                await app[BOT].understanding.ensure_fresh()
                about = await Customer.get_or_none(name=app[BOT].understanding.resolve_customer(customer))
                if about is None:
                    raise BadInput(f"unknown customer {customer!r}")
            by = None
            if actor and (by := await lookup(actor, active=False)) is None:
                raise BadInput(f"unknown staff member {actor!r}")
            rows = await changes(about, moment, by)
            book = await Book.load(app[BOT].directory, settings.tz, rows)
            names = {int(i): str(n) for i, n in await Customer.all().values_list("id", "name")}
            return [(book.as_json(row, names), book.platform(row)) for row in rows]

    for line, platform in _run(go()):
        if as_json:
            click.echo(json.dumps(line, ensure_ascii=False))
        else:
            who = f"{line['actor']}（{platform}）"
            click.echo(f"{line['time'][:16].replace('T', ' ')}  {who}  {line['customer'] or '—'}  {line['summary']}")


@main.command()
@config_option
@click.argument("kind")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--since", "since", default=None, help="Only rows since this ISO 8601 date or time (local).")
@click.option("--team", "team", default=None, help="Only this manager's team (name or user id).")
@click.option("--as", "as_user", default=None, help="Within this staff member's data scope; default: all data.")
def export(config: str | None, kind: str, file: Path, since: str | None, team: str | None, as_user: str | None) -> None:
    """Export KIND (customers, followups, tickets, opportunities, orders, audit or report) to FILE (.xlsx)."""
    from handlers.exports.export import KINDS, ExportRefused, export_to_file, filters_for  # start-up time

    if kind not in KINDS:
        raise BadInput(f"unknown export {kind!r} (one of: {', '.join(KINDS)})")
    if file.suffix.lower() != ".xlsx":
        raise BadInput(f"{file.name}: 只能导出为 .xlsx 文件 (FILE must end in .xlsx)")
    if not file.parent.is_dir():
        raise BadInput(f"目录不存在 directory not found: {file.parent}")
    settings = _settings(config)
    moment = parse_now(since, settings, "--since")

    async def go() -> int:
        async with running_app(settings) as app:
            asker = await find_staff(as_user) if as_user else None
            lead = await find_staff(team) if team else None
            filters = await filters_for(asker, lead, moment)
            return await export_to_file(kind, file, filters, app[SETTINGS].tz)

    try:
        rows = _run(go())
    except ExportRefused as exc:
        raise BadInput(str(exc)) from exc
    except OSError as exc:
        raise BadInput(f"{file.name}: 无法写入 cannot write: {exc.strerror}") from exc
    click.echo(f"已导出 exported {rows} 行 rows → {file}")


@main.group()
def jobs() -> None:
    """Scheduled rules."""


@jobs.command(name="run")
@config_option
@click.option("--now", "now", default=None, help="ISO 8601 moment to run the rules as of (default: now).")
@click.option("--json", "as_json", is_flag=True, help="One JSON line per firing (before digesting).")
@click.option("--dry-run", "dry_run", is_flag=True, help="Only print what would fire; change nothing.")
def jobs_run(config: str | None, now: str | None, as_json: bool, dry_run: bool) -> None:
    """Run every scheduled rule once as if it were --now and APPLY it: hand customers over, send the pushes
    through the outbox, and record every firing so that it never fires again.

    With --dry-run the same pass runs in a transaction that is rolled back: it prints what would fire and
    changes nothing (no handover, no push, no firing recorded). A full sweep over every customer and ticket (at
    most 1000 subjects per rule: run it again for more). Running it twice for the same moment prints nothing the
    second time (unless the first was a dry run).
    """
    from bot.scheduled import run_rules  # start-up time: only this command

    settings = _settings(config)
    moment = parse_now(now, settings)

    async def go() -> list[dict[str, Any]]:
        async with running_app(settings, clock=Clock(moment)) as app:
            at = app[CLOCK].now()
            firings = await run_rules(app[BOT], at, full=True, dry_run=dry_run)
            if not dry_run:
                await app[OUTBOX].drain(at)
            return [
                {"rule": f.rule, "to": f.to.name, "customer": f.customer.name if f.customer else None, "text": f.text}
                for f in firings
            ]

    for line in _run(go()):
        if as_json:
            click.echo(json.dumps(line, ensure_ascii=False))
        else:
            first = str(line["text"]).splitlines()[0].strip("*") if line["text"] else ""
            click.echo(f"{line['rule']}\t{line['to']}\t{line['customer'] or '—'}\t{first}")


@main.group()
def erp() -> None:
    """Orders from the ERP."""


@erp.command(name="sync")
@config_option
@click.option("--since", "since", default=None, help="Read changes since this ISO 8601 time instead of the cursor.")
def erp_sync(config: str | None, since: str | None) -> None:
    """Pull the order changes of every configured ERP feed now; exit 1 when a feed could not be read to its end."""
    from bot.orderflow import ORDER_FEEDS, sync_feed  # start-up time: only this command

    settings = _settings(config)
    position = None
    if since is not None:
        moment = parse_now(since, settings)
        assert moment is not None
        position = moment.isoformat()

    async def go() -> list[tuple[str, bool]]:
        async with running_app(settings) as app:
            feeds = app.get(ORDER_FEEDS, [])
            if not feeds:
                raise BadInput("no ERP feed configured (set [tplus] api_base, app_key and app_secret)")
            summaries = [await sync_feed(app[BOT], feed, position) for feed in feeds]
            await app[OUTBOX].drain()
            return [(s.text(), bool(s.error)) for s in summaries]

    results = _run(go())
    for text, _ in results:
        click.echo(text)
    if any(failed for _, failed in results):
        sys.exit(1)


@main.group()
def staff() -> None:
    """Staff members: departures."""


@staff.command(name="leave")
@config_option
@click.argument("name")
@click.option("--to", "to", multiple=True, help="Successor (repeat for a round robin over several).")
@click.option("--pool", is_flag=True, help="Release the customers into the public pool instead.")
@click.option("--grade", "grades", multiple=True, help="One grade apart: A=NAME[,NAME…] or C=pool (repeatable).")
def staff_leave(config: str | None, name: str, to: tuple[str, ...], pool: bool, grades: tuple[str, ...]) -> None:
    """Hand NAME's customers, tickets, approvals and reminders over and deactivate NAME (离职交接)."""
    from handlers.people.commands import leave  # start-up time: only this command
    from handlers.people.handover import HandoverRefused

    settings = _settings(config)

    async def go() -> str:
        async with running_app(settings) as app:
            return await leave(app, name, to, pool, grades)

    try:
        click.echo(_run(go()))
    except HandoverRefused as exc:
        raise BadInput(str(exc)) from exc


if __name__ == "__main__":  # `python -m bot.cli`, same as the installed `crmbot` script
    main()
