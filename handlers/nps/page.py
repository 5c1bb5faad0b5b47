"""The NPS survey page: ``GET /nps/{token}`` shows the 0–10 question, ``POST /nps/{token}`` records the answer.

The page is plain HTML with inline CSS and no script or external asset, so it works in WeCom's in-app browser
on any phone. The token in the link is random; only its HMAC under the survey key is stored, and the key is
``[nps] secret`` or, when that is empty, derived from the configured app secrets. A forged token, an expired
survey, a second submission or a bad score changes nothing and gets a friendly page. What an answer sets off
(ticket, tag, pushes) is ``answers.record_answer``.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import logging
import re
import secrets
import urllib.parse
from datetime import datetime, timedelta

from aiohttp import web

from bot.bodies import read_body
from bot.config import Settings
from bot.keys import BOT, CLOCK, SETTINGS
from handlers.nps.answers import record_answer
from handlers.nps.capability import capability
from models.nps import Survey, token_hash

log = logging.getLogger(__name__)

QUESTION = "您有多大可能向同行推荐我们？"
TOKEN_BYTES = 24
TOKEN_SHAPE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
MAX_COMMENT = 500
MAX_FORM_BYTES = 16 * 1024  # a score and a comment of MAX_COMMENT characters take at most 4.5 KiB, URL-encoded
FORM_TYPE = "application/x-www-form-urlencoded"
MALFORMED = "提交的内容无法识别，请重新选择分数后提交。"
SCORE_SHAPE = re.compile(r"^(?:10|[0-9])$")

SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",  # the token is in the URL
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
}


def survey_key(settings: Settings) -> bytes:
    """The HMAC key for survey tokens: ``[nps] secret``, else derived from the platforms' secrets (never used
    raw)."""
    if settings.nps.secret:
        material = "nps\0" + settings.nps.secret
    else:
        material = "\0".join(("crmbot-nps-v1", *(part for p in settings.platforms() for part in p.secrets())))
    return hashlib.sha256(material.encode()).digest()


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def survey_link(settings: Settings, token: str) -> str:
    return f"{settings.server.public_url.rstrip('/')}/nps/{token}"


async def find_survey(settings: Settings, token: str) -> Survey | None:
    """The survey a link token belongs to, or None for anything forged or malformed."""
    if not TOKEN_SHAPE.match(token):
        return None
    digest = token_hash(survey_key(settings), token)
    survey = await Survey.get_or_none(token_hash=digest)
    # The lookup is by an index; compare again in constant time so equality is never short-circuited on bytes.
    if survey is None or not hmac.compare_digest(survey.token_hash, digest):
        return None
    return survey


async def read_form(request: web.Request) -> dict[str, str] | None:
    """The fields of a submitted survey form, as the page's own form sends them (URL-encoded UTF-8); None for a
    body that is not one: another type or charset, bytes or escapes that are not UTF-8 (half a UTF-16 pair
    included), more than a form's worth. Read here rather than by aiohttp, which decodes such bodies loosely
    (into U+FFFD) or fails on them with a server error."""
    if request.content_type != FORM_TYPE or (request.charset or "utf-8").lower() not in ("utf-8", "utf8"):
        return None
    body = await read_body(request, MAX_FORM_BYTES)
    if body is None:
        return None
    try:
        pairs = urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True, errors="strict", max_num_fields=8)
    except ValueError:  # UnicodeDecodeError, or too many fields
        return None
    return dict(pairs)


def parse_score(value: object) -> int | None:
    """A form score: an integer 0–10 written plainly, else None."""
    if not isinstance(value, str) or not SCORE_SHAPE.match(value.strip()):
        return None
    return int(value.strip())


# -- HTTP ------------------------------------------------------------------------------------------------------


async def show_survey(request: web.Request) -> web.Response:
    survey = await find_survey(request.app[SETTINGS], request.match_info["token"])
    if survey is None:
        return _page(NOT_FOUND, status=404)
    if survey.answered_at is not None:
        return _page(ALREADY_ANSWERED)
    if not survey.open_at(request.app[CLOCK].now()):
        return _page(EXPIRED, status=410)
    return _page(form_html())


async def submit_survey(request: web.Request) -> web.Response:
    survey = await find_survey(request.app[SETTINGS], request.match_info["token"])
    if survey is None:
        log.info("nps: submission with an unknown token from %s", request.remote)
        return _page(NOT_FOUND, status=404)
    now = request.app[CLOCK].now()
    if survey.answered_at is not None:
        return _page(ALREADY_ANSWERED, status=409)
    if not survey.open_at(now):
        return _page(EXPIRED, status=410)
    form = await read_form(request)
    if form is None:
        log.info("nps: malformed submission from %s", request.remote)
        return _page(form_html(error=MALFORMED), status=400)
    score = parse_score(form.get("score"))
    raw_comment = form.get("comment")
    comment = raw_comment.strip()[:MAX_COMMENT] if isinstance(raw_comment, str) else ""
    if score is None:
        return _page(form_html(error="请先选择 0 到 10 之间的一个分数。", comment=comment), status=400)
    recorded = await record_answer(request.app[BOT], survey.id, score, comment, "page", now)
    if not recorded:  # someone (a chat reply, another tab) answered in between, or it just expired
        return _page(ALREADY_ANSWERED, status=409)
    return _page(THANKS)


capability.route("GET", "/nps/{token}", show_survey)
capability.route("POST", "/nps/{token}", submit_survey)


# -- the page ----------------------------------------------------------------------------------------------------

STYLE = """
*{box-sizing:border-box}
body{margin:0;background:#f5f6f7;color:#1f2329;font:16px/1.5 -apple-system,BlinkMacSystemFont,"PingFang SC",
"Hiragino Sans GB","Microsoft YaHei",sans-serif;-webkit-text-size-adjust:100%}
main{max-width:480px;margin:0 auto;padding:24px 16px 32px}
.card{background:#fff;border-radius:12px;padding:20px 16px;box-shadow:0 1px 3px rgba(0,0,0,.06)}
h1{font-size:20px;line-height:1.4;margin:0 0 8px}
p{margin:0 0 16px;color:#646a73;font-size:14px}
.scores{display:grid;grid-template-columns:repeat(6,1fr);gap:8px;margin:0;padding:0;border:0}
.scores input{position:absolute;opacity:0;width:1px;height:1px}
.scores label{display:flex;align-items:center;justify-content:center;height:48px;border:1px solid #d0d3d6;
border-radius:8px;background:#fff;font-size:18px;font-weight:600;cursor:pointer;user-select:none;
-webkit-tap-highlight-color:transparent}
.scores input:checked+label{background:#07c160;border-color:#07c160;color:#fff}
.scores input:focus-visible+label{outline:2px solid #1677ff;outline-offset:2px}
.ends{display:flex;justify-content:space-between;font-size:12px;color:#8f959e;margin:8px 0 20px}
.comment-label{display:block;font-size:14px;margin-bottom:6px}
textarea{width:100%;min-height:96px;padding:10px;border:1px solid #d0d3d6;border-radius:8px;font:inherit;
resize:vertical}
button{display:block;width:100%;height:48px;margin-top:20px;border:0;border-radius:8px;background:#07c160;
color:#fff;font-size:17px;font-weight:600}
.error{color:#d83931;font-size:14px;margin:0 0 12px}
.done{text-align:center;padding:32px 16px}
.done .mark{font-size:48px;line-height:1;margin-bottom:12px;color:#07c160}
"""


def form_html(error: str = "", comment: str = "") -> str:
    buttons = "".join(
        f'<input type="radio" name="score" value="{n}" id="score-{n}" required>'
        f'<label for="score-{n}" aria-label="{n} 分">{n}</label>'
        for n in range(11)
    )
    error_html = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    return f"""<div class="card">
<h1>{QUESTION}</h1>
<p>请选择 0–10 分：0 分表示完全不可能，10 分表示非常可能。</p>
{error_html}<form method="post" autocomplete="off">
<fieldset class="scores">{buttons}</fieldset>
<div class="ends"><span>0 完全不可能</span><span>10 非常可能</span></div>
<label class="comment-label" for="comment">还有什么想对我们说的？（选填）</label>
<textarea id="comment" name="comment" maxlength="{MAX_COMMENT}">{html.escape(comment)}</textarea>
<button type="submit" id="submit">提交</button>
</form>
</div>"""


def _done(mark: str, title: str, text: str) -> str:
    return f'<div class="card done"><div class="mark">{mark}</div><h1>{title}</h1><p>{text}</p></div>'


THANKS = _done("✓", "感谢您的评价！", "您的反馈已收到，我们会认真对待每一条意见。")
ALREADY_ANSWERED = _done("✓", "您已经完成了这份评价", "每份调查只能提交一次，感谢您的支持！")
EXPIRED = _done("⏰", "这份调查已过期", "如有任何意见，欢迎直接联系您的客户经理。")
NOT_FOUND = _done("?", "链接无效", "这个调查链接不存在或已失效，请确认链接是否完整。")


def _page(body: str, status: int = 200) -> web.Response:
    document = f"""<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>满意度调查</title><style>{STYLE}</style></head>
<body><main>{body}</main></body></html>"""
    return web.Response(text=document, status=status, content_type="text/html", headers=SECURITY_HEADERS)


def expires_at(settings: Settings, sent_at: datetime) -> datetime:
    return sent_at + timedelta(days=settings.nps.link_expiry_days)
