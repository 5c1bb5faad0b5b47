"""Stream mode: robot messages over DingTalk's websocket (``dingtalk-stream`` SDK) instead of, or as well as, the
HTTP callback, for servers without a public URL.

The SDK opens the connection (``POST /v1.0/gateway/connections/open`` with the app key and secret, then a
websocket to the returned endpoint) and hands every frame on the robot topic to ``RobotMessages.process``. The
frame's data is the same JSON body as the HTTP callback, so it goes through the same ``normalize`` and
``Bot.receive``: stored once per ``msgId`` (a message that also arrives over HTTP is not handled twice), then acked.
The ack says 200 only once the message is stored; a storage failure acks 500, never a false OK.
Replies are not carried by the websocket: they leave through the outbox like every other (sessionWebhook or
batchSend). The stream is authenticated by the connection ticket; frames carry no per-message signature.

The connection is only opened by a running server (the app's outbox dispatcher is on), never by one-shot CLI
commands; it starts after the database and the bot are up and stops before they go down. ``StreamClient.start``
replaces the SDK's loop, which opens the connection with a blocking call inside the event loop and swallows
cancellation; the SDK still parses frames, routes them and builds the acks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import platform
from collections.abc import Coroutine
from typing import Any
from urllib.parse import quote_plus

import dingtalk_stream
import requests
import websockets
from aiohttp import web
from dingtalk_stream import AckMessage, CallbackMessage, ChatbotMessage, Credential, DingTalkStreamClient

from bot.jsontext import parse_json
from bot.keys import BOT, SERVING
from integrations.dingtalk.normalize import NotAMessage, normalize
from integrations.dingtalk.settings import DingTalkSettings, settings_of

log = logging.getLogger(__name__)

TOPIC = ChatbotMessage.TOPIC  # "/v1.0/im/bot/messages/get"
OPEN_PATH = "/v1.0/gateway/connections/open"
RECONNECT_SECONDS = 5.0
FINISH_SECONDS = 5.0


class RobotMessages(dingtalk_stream.CallbackHandler):  # type: ignore[misc]
    """Robot-topic frames → ``Bot.receive``."""

    def __init__(self, app: web.Application) -> None:
        super().__init__()
        self.app = app

    async def process(self, callback: CallbackMessage) -> tuple[int, str]:
        settings = settings_of(self.app)
        try:
            msg = normalize(callback.data, settings.robot_name, settings.session_webhook_prefix)
        except NotAMessage as exc:
            log.warning("dingtalk stream frame rejected: %s", exc)
            return AckMessage.STATUS_BAD_REQUEST, f"malformed message: {exc}"
        try:
            await self.app[BOT].receive(msg)
        except Exception:
            log.exception("dingtalk stream message %s not stored; DingTalk will deliver it again", msg.msgid)
            return AckMessage.STATUS_SYSTEM_EXCEPTION, "not stored"
        return AckMessage.STATUS_OK, "OK"


class StreamClient(DingTalkStreamClient):  # type: ignore[misc]
    """The SDK client, opening its connection at ``[dingtalk] api_base`` (the SDK reads an env variable at import)."""

    def __init__(self, settings: DingTalkSettings) -> None:
        super().__init__(Credential(settings.app_key, settings.app_secret), logger=logging.getLogger("dingtalk_stream"))
        self.settings = settings
        self.reconnect_seconds = RECONNECT_SECONDS
        self._frames: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        """Connect, route frames, reconnect after any failure; unlike the SDK's loop, cancellable at once and
        without blocking the event loop while opening the connection."""
        self.pre_start()
        while True:
            connection = await asyncio.to_thread(self.open_connection)
            if connection and connection.get("endpoint") and connection.get("ticket"):
                uri = f"{connection['endpoint']}?ticket={quote_plus(str(connection['ticket']))}"
                try:
                    async with websockets.connect(uri) as websocket:
                        self.websocket = websocket
                        log.info("dingtalk stream connected")
                        async for raw in websocket:
                            self._spawn(self.background_task(parse_json(raw)))
                except (OSError, ValueError, websockets.exceptions.WebSocketException) as exc:
                    log.warning("dingtalk stream connection lost: %s", type(exc).__name__)
                finally:
                    self.websocket = None  # type: ignore[assignment]
            await asyncio.sleep(self.reconnect_seconds)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._frames.add(task)
        task.add_done_callback(self._frames.discard)

    async def finish_frames(self) -> None:
        """Let frames already received be stored (and acked if the socket is still there)."""
        if self._frames:
            await asyncio.wait(set(self._frames), timeout=FINISH_SECONDS)

    def get_host_ip(self) -> str:
        return ""  # informational only; the SDK would open a UDP socket towards 8.8.8.8 to find it

    def open_connection(self) -> dict[str, Any] | None:
        topics = [{"type": "CALLBACK", "topic": topic} for topic in self.callback_handler_map]
        body = {
            "clientId": self.credential.client_id,
            "clientSecret": self.credential.client_secret,
            "subscriptions": topics,
            "ua": f"crmbot dingtalk-stream/{platform.python_version()}",
            "localIp": self.get_host_ip(),
        }
        try:
            # Called synchronously by the SDK's loop: keep it short.
            resp = requests.post(
                self.settings.api_base.rstrip("/") + OPEN_PATH,
                data=json.dumps(body),
                headers={"Content-Type": "application/json", "Accept": "application/json"},
                timeout=self.settings.request_timeout_seconds,
            )
            resp.raise_for_status()
            connection: dict[str, Any] = resp.json()
        except (requests.RequestException, ValueError) as exc:
            log.error("dingtalk stream: opening a connection failed: %s", type(exc).__name__)
            return None
        return connection


STREAM = web.AppKey("dingtalk_stream", StreamClient)


def build(app: web.Application) -> StreamClient:
    client = StreamClient(settings_of(app))
    client.register_callback_handler(TOPIC, RobotMessages(app))
    return client


RUNNING = web.AppKey("dingtalk_stream_task", asyncio.Task)


def install(app: web.Application, client: StreamClient) -> None:
    """Run ``client`` while a server runs: started after every resource is up, stopped before they go down."""

    async def start(app: web.Application) -> None:
        if app[SERVING]:
            app[RUNNING] = asyncio.get_running_loop().create_task(client.start())

    async def stop(app: web.Application) -> None:
        task = app.get(RUNNING)
        if task is not None:
            task.cancel()
            await asyncio.wait({task}, timeout=5)
            await client.finish_frames()

    app.on_startup.append(start)
    app.on_shutdown.append(stop)
