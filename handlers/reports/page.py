"""The manager dashboard: ``GET /dash/{token}`` (the page) and ``GET /dash/{token}/chart.png`` (its chart).

The token is a signed, expiring link for one staff member and one scope (``handlers.reports.links``); a forged or
expired token, a staff member no longer active, or a scope that is not (or no longer) theirs gets 403 and nothing
else. The page is server-rendered HTML for a phone: inline CSS, inline SVG bars, the chart served by the bot itself,
no script and no external asset, under a strict Content-Security-Policy (``default-src 'none'``). It shows the
health board (the five metrics with their lights), the funnel, the trends, the customers at risk and the ranking of
the last complete week.
"""

from __future__ import annotations

import html
import logging

from aiohttp import web

import handlers.pipeline.deals as deals
import handlers.reports.summary as summary
from bot.keys import BOT, CLOCK, SETTINGS
from handlers.reports.capability import capability
from handlers.reports.links import read_token, scope_code
from handlers.reports.send import chart_png
from models.customers import STAGE_LABELS
from models.staff import Staff

log = logging.getLogger(__name__)

SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",  # the token is in the URL
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
}


async def _viewer(request: web.Request) -> Staff | None:
    """The staff member the link was made for, when the link is genuine, unexpired and still theirs."""
    settings, now = request.app[SETTINGS], request.app[CLOCK].now()
    token = read_token(settings, request.match_info["token"], now)
    if token is None:
        return None
    staff = await Staff.get_or_none(id=token.staff_id, active=True)
    if staff is None or token.scope != scope_code(staff):
        return None
    return staff


def _refused(request: web.Request) -> web.Response:
    log.info("dashboard: refused a link from %s", request.remote)
    body = _document(
        "看板", '<div class="card"><h1>链接无效或已过期</h1><p>请在聊天中发送「看板」获取新链接。</p></div>'
    )
    return web.Response(text=body, status=403, content_type="text/html", headers=SECURITY_HEADERS)


async def show_dashboard(request: web.Request) -> web.Response:
    staff = await _viewer(request)
    if staff is None:
        return _refused(request)
    report = await summary.build(request.app[BOT], staff, "week", request.app[CLOCK].now())
    chart = f"{request.path.rstrip('/')}/chart.png"
    body = _document(f"{report.scope.label}看板", dashboard_html(report, chart))
    return web.Response(text=body, content_type="text/html", headers=SECURITY_HEADERS)


async def show_chart(request: web.Request) -> web.Response:
    staff = await _viewer(request)
    if staff is None:
        return _refused(request)
    report = await summary.build(request.app[BOT], staff, "week", request.app[CLOCK].now())
    return web.Response(body=await chart_png(report), content_type="image/png", headers=SECURITY_HEADERS)


capability.route("GET", "/dash/{token}", show_dashboard)
capability.route("GET", "/dash/{token}/chart.png", show_chart)


# -- the page ----------------------------------------------------------------------------------------------------

STYLE = """
*{box-sizing:border-box}
body{margin:0;background:#f5f6f7;color:#1f2329;font:15px/1.5 -apple-system,BlinkMacSystemFont,"PingFang SC",
"Hiragino Sans GB","Microsoft YaHei","Noto Sans CJK SC",sans-serif;-webkit-text-size-adjust:100%}
main{max-width:560px;margin:0 auto;padding:16px 12px 32px}
h1{font-size:20px;margin:0 0 4px}
h2{font-size:16px;margin:0 0 8px}
.sub{color:#646a73;font-size:13px;margin:0 0 12px}
.card{background:#fff;border-radius:12px;padding:14px 12px;margin:0 0 12px;box-shadow:0 1px 3px rgba(0,0,0,.06)}
.score{font-size:32px;font-weight:700}
.metrics{list-style:none;margin:0;padding:0}
.metrics li{display:flex;justify-content:space-between;gap:8px;padding:8px 0;border-top:1px solid #eff0f1}
.metrics li:first-child{border-top:0}
.metrics .detail{display:block;color:#8f959e;font-size:12px}
.value{font-weight:600;white-space:nowrap}
svg{display:block;width:100%;height:auto}
img{display:block;width:100%;height:auto;border-radius:8px}
table{width:100%;border-collapse:collapse;font-size:14px}
td{padding:6px 0;border-top:1px solid #eff0f1;vertical-align:top}
.muted{color:#8f959e}
"""


def _document(title: str, body: str) -> str:
    return f"""<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>{html.escape(title)}</title><style>{STYLE}</style></head>
<body><main>{body}</main></body></html>"""


def _bars(rows: list[tuple[str, float, str]], color: str) -> str:
    """Horizontal bars as inline SVG: (label, value, text shown after the bar)."""
    top = max([value for _, value, _ in rows] + [1.0])
    height = 28 * len(rows) + 4
    parts = [f'<svg viewBox="0 0 340 {height}" role="img" xmlns="http://www.w3.org/2000/svg">']
    for i, (label, value, shown) in enumerate(rows):
        y = 4 + 28 * i
        width = 0 if value <= 0 else max(2.0, 150 * value / top)
        parts.append(
            f'<text x="0" y="{y + 16}" font-size="13" fill="#1f2329">{html.escape(label)}</text>'
            f'<rect x="64" y="{y + 3}" width="{width:.1f}" height="18" rx="3" fill="{color}"></rect>'
            f'<text x="{68 + width:.1f}" y="{y + 16}" font-size="12" fill="#646a73">{html.escape(shown)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def dashboard_html(report: summary.Report, chart: str) -> str:
    h = report.health
    score = "—" if h.score is None else str(h.score)
    metrics = "".join(
        f'<li><span>{m.light} {html.escape(m.label)}<span class="detail">{html.escape(m.detail)}</span></span>'
        f'<span class="value">{html.escape(m.shown())}</span></li>'
        for m in h.metrics.values()
    )
    funnel = _bars(
        [
            (STAGE_LABELS[r.stage], float(r.count), f"{r.count} 个 · {deals.yuan(r.amount)}")
            for r in report.funnel.rows.values()
        ],
        "#3370ff",
    )
    quality = "".join(
        f'<li><span>{m.light} {html.escape(m.label)}<span class="detail">{html.escape(m.detail)}</span></span>'
        f'<span class="value">{html.escape(m.shown())}</span></li>'
        for m in report.quality.checks.values()
    )
    if report.risky:
        risky = "".join(
            f'<tr><td>{h.light} {html.escape(h.customer.name)}</td><td class="value">{h.score} 分</td>'
            f'<td class="muted">{html.escape("、".join(h.reasons))}</td></tr>'
            for h in report.risky
        )
        risky_html = f'<table id="risky">{risky}</table>'
    else:
        risky_html = '<p class="muted" id="risky">暂无风险客户</p>'
    ranking = (
        _bars(
            [(r.staff.name, float(r.score or 0), "—" if r.score is None else f"{r.score} 分") for r in report.ranking],
            "#34c724",
        )
        if report.ranking
        else '<p class="muted">仅显示本人数据</p>'
    )
    return f"""<h1>{html.escape(report.scope.label)}看板</h1>
<p class="sub">{html.escape(report.period.label)}（上周）· 健康度趋势为近 {len(report.history)} 周</p>
<section class="card" id="health"><h2>健康度</h2>
<div class="score">{h.light} {score}</div>
<ul class="metrics">{metrics}</ul></section>
<section class="card" id="funnel"><h2>销售漏斗（进行中商机）</h2>{funnel}</section>
<section class="card" id="trend"><h2>趋势</h2>
<img src="{html.escape(chart)}" alt="漏斗、五项指标趋势与排名图"></section>
<section class="card" id="risk"><h2>风险客户（{report.risky_total}）</h2>{risky_html}</section>
<section class="card" id="ranking"><h2>销售健康度排名</h2>{ranking}</section>
<section class="card" id="quality"><h2>数据质量</h2><ul class="metrics">{quality}</ul></section>"""
