"""DingTalk (钉钉): robot callback signature check, normalization, the API client and the channel.

``setup`` mounts ``POST /dingtalk/callback`` and registers the ``dingtalk`` channel on the outbox when
``[dingtalk] app_secret`` is set; the API client is kept in ``app[SERVICES]["dingtalk"]``. With
``[dingtalk] stream = true`` a running server also receives robot messages over the stream websocket
(``stream.py``; its client is ``app[SERVICES]["dingtalk_stream"]``).
"""

from __future__ import annotations

from aiohttp import web

from bot.app import CLOCK, HTTP, OUTBOX, SERVICES, SETTINGS
from bot.config import ConfigError
from integrations.dingtalk.callback import receive
from integrations.dingtalk.channel import DingTalkChannel
from integrations.dingtalk.client import DingTalkClient

SERVICE = "dingtalk"
STREAM_SERVICE = "dingtalk_stream"


def setup(app: web.Application) -> None:
    """Mount ``POST /dingtalk/callback`` and register the channel when DingTalk is configured."""
    settings = app[SETTINGS].dingtalk
    if not settings.enabled:
        return
    # The HTTP session exists only once the app has started: look it up at call time.
    client = DingTalkClient(settings, lambda: app[HTTP], app[CLOCK])
    app[SERVICES][SERVICE] = client
    app[OUTBOX].register(DingTalkChannel(client, settings, app[CLOCK]))
    app.router.add_post("/dingtalk/callback", receive)
    if settings.stream:
        try:
            from integrations.dingtalk import stream
        except ImportError as exc:
            raise ConfigError("dingtalk.stream = true needs the stream extra: pip install 'crmbot[stream]'") from exc
        stream_client = stream.build(app)
        app[SERVICES][STREAM_SERVICE] = stream_client
        stream.install(app, stream_client)
