"""DingTalk (钉钉): robot callback signature check, normalization, the API client, the channel and who is who
(staff accounts are DingTalk staffIds; DingTalk has no customer contacts here).

``setup`` registers the DingTalk identity and, when ``[dingtalk] app_secret`` is set, mounts
``POST /dingtalk/callback``, keeps the API client under ``DINGTALK_CLIENT`` and registers the ``dingtalk`` channel
on the outbox. With ``[dingtalk] stream = true`` a running server also receives robot messages over the stream
websocket (``stream.py``; its client is ``stream.STREAM``).
"""

from __future__ import annotations

import functools

from aiohttp import web

from bot.config import ConfigError
from bot.files import download_url
from bot.identity import Identity
from bot.integration import Integration
from bot.keys import BOT, CLOCK, HTTP, OUTBOX, SETTINGS
from integrations.dingtalk.callback import REPLAY, ReplayGuard, receive
from integrations.dingtalk.channel import DingTalkChannel
from integrations.dingtalk.client import DingTalkClient
from integrations.dingtalk.settings import PLATFORM, DingTalkSettings, settings_of

DINGTALK_CLIENT = web.AppKey("dingtalk_client", DingTalkClient)
ACCOUNT_HEADERS = ("钉钉账号", "dingtalk_userid", "钉钉", "钉钉userid", "dingtalk")


def setup(app: web.Application) -> None:
    """Register the identity; mount ``POST /dingtalk/callback`` and register the channel when configured."""
    app[BOT].directory.register(Identity(PLATFORM, account_headers=ACCOUNT_HEADERS, demo_prefix="ding_"))
    settings = settings_of(app)
    if not settings.enabled:
        return
    # The HTTP session exists only once the app has started: look it up at call time.
    client = DingTalkClient(settings, lambda: app[HTTP], app[CLOCK])
    app[DINGTALK_CLIENT] = client
    links = functools.partial(download_url, app[SETTINGS])
    app[OUTBOX].register(DingTalkChannel(client, settings, app[CLOCK], links))
    app[REPLAY] = ReplayGuard(app[CLOCK], settings.callback_window_seconds)
    app.router.add_post("/dingtalk/callback", receive)
    if settings.stream:
        try:
            # Imported only when configured: the stream extra (dingtalk-stream, websockets) is optional.
            from integrations.dingtalk import stream
        except ImportError as exc:
            raise ConfigError("dingtalk.stream = true needs the stream extra: pip install 'crmbot[stream]'") from exc
        stream_client = stream.build(app)
        app[stream.STREAM] = stream_client
        stream.install(app, stream_client)


INTEGRATION = Integration(PLATFORM, setup, DingTalkSettings)
